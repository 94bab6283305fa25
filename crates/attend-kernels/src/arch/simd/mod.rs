//! The SIMD kernels, each written once over a small set of per-ISA vector primitives.
//!
//! An instruction set implements [`F32s`] (a register of `f32` lanes) and [`Q32`] (the
//! 32 bytes of a quantised block and their dot product with an activation block). The panel
//! micro-kernels ([`panel`]), the online-softmax step ([`softmax`]) and the 32-element quantised
//! dots ([`quant`]) are generic over those traits; [`entries!`] writes an instruction set's
//! `#[target_feature]` entry points, which is where the generic bodies are inlined and
//! compiled for that instruction set. A new ISA (aarch64 NEON, say) implements the two traits
//! and invokes the macro; it copies no kernel.
//!
//! # Safety
//! The traits are `unsafe` to implement: every method must do exactly what its documentation
//! says on the instruction set its implementation names, and may only be called where that
//! instruction set is enabled (inside its `#[target_feature]` entries). Every method is
//! `#[inline(always)]`, so that it is compiled as part of the entry that calls it.

pub(crate) mod panel;
pub(crate) mod quant;
pub(crate) mod softmax;

/// A register of `LANES` `f32` lanes.
///
/// # Safety
/// Implementations do what each method says; callers enable the instruction set.
pub(crate) unsafe trait F32s: Copy {
    /// Lanes a register.
    const LANES: usize;
    /// Register rows of a panel micro-kernel block that spans one panel (index 0) or two
    /// (index 1; 0 where two panels at once do not pay): enough independent FMAs to hide
    /// their latency, few enough accumulators to stay in registers.
    const BLOCK_ROWS: [usize; 2];
    /// All lanes 0.
    unsafe fn zero() -> Self;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `LANES` elements from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// To `LANES` elements at `p` (unaligned).
    unsafe fn store(self, p: *mut f32);
    /// Lane-wise `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// Lane-wise `self − b`.
    unsafe fn sub(self, b: Self) -> Self;
    /// Lane-wise `self · b`.
    unsafe fn mul(self, b: Self) -> Self;
    /// Lane-wise maximum (`vmaxps` semantics: `b` where either is NaN).
    unsafe fn max(self, b: Self) -> Self;
    /// Lane-wise minimum (`vminps` semantics).
    unsafe fn min(self, b: Self) -> Self;
    /// Lane-wise `self · b + c`, one rounding.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane-wise `self · b − c`, one rounding.
    unsafe fn mul_sub(self, b: Self, c: Self) -> Self;
    /// Each lane rounded to the nearest integer (ties to even).
    unsafe fn round(self) -> Self;
    /// `2^self` for lanes holding integers in `[-127, 127]`, through the exponent field:
    /// `-127` gives `+0.0`.
    unsafe fn pow2i(self) -> Self;
    /// `self` with its `-inf` lanes set to 0.
    unsafe fn zero_neg_inf(self) -> Self;
    /// A hint that the cache line at `p` will be read soon, into L1 (any address: a prefetch
    /// never faults and changes no result).
    unsafe fn prefetch(p: *const u8);
}

/// The 32 bytes of a quantised block and their dot products with an 8-bit activation block.
///
/// # Safety
/// Implementations do what each method says; callers enable the instruction set.
pub(crate) unsafe trait Q32 {
    /// 32 bytes.
    type B: Copy;
    /// Partial sums, as `f32` lanes.
    type F: Copy;
    /// Activation rows a pass over a weight row serves (the accumulators it keeps, two per
    /// row): at most 8.
    const ROWS: usize;
    /// 32 bytes from `p`.
    unsafe fn load(p: *const u8) -> Self::B;
    /// The 16 bytes at `p` as 32 nibbles: low nibbles in bytes 0..16, high in 16..32.
    unsafe fn nibbles(p: *const u8) -> Self::B;
    /// Byte `j` is `0x10` where bit `j` of `bits` is set, else 0.
    unsafe fn fifth_bits(bits: u32) -> Self::B;
    /// Byte-wise `a | b`.
    unsafe fn or(a: Self::B, b: Self::B) -> Self::B;
    /// Byte-wise `a − x` (wrapping).
    unsafe fn sub_i8(a: Self::B, x: i8) -> Self::B;
    /// Byte-wise `|a|` of signed bytes.
    unsafe fn abs_i8(a: Self::B) -> Self::B;
    /// Byte-wise `a` negated where `s` is negative, 0 where `s` is 0.
    unsafe fn sign_i8(a: Self::B, s: Self::B) -> Self::B;
    /// `Σ u·s` of unsigned bytes `u` and signed bytes `s` (|u| ≤ 128 with every pair sum in
    /// `i16` where the instruction set sums pairs first), as partial sums: exact integers.
    unsafe fn dot_u8_i8(u: Self::B, s: Self::B) -> Self::F;
    /// All lanes 0.
    unsafe fn fzero() -> Self::F;
    /// `acc + s · v`.
    unsafe fn fmadd(s: f32, v: Self::F, acc: Self::F) -> Self::F;
    /// Lane-wise `a + b`.
    unsafe fn fadd(a: Self::F, b: Self::F) -> Self::F;
    /// The sum of the lanes.
    unsafe fn hsum(v: Self::F) -> f32;
    /// An IEEE half's bits as `f32`.
    unsafe fn f16(bits: [u8; 2]) -> f32;
    /// A hint that the cache line at `p` will be read soon, into L2 (any address: a prefetch
    /// never faults and changes no result).
    unsafe fn prefetch(p: *const u8);
}

/// The `#[target_feature]` entry points of the generic kernels for one instruction set:
/// `entries!(F32 type, Q32 type, "features")` in the ISA's module defines `gemm_a`, `gemm_b`,
/// `softmax_cols`, `scale_cols`, `exp_rows` and `dot_q4_0` … `dot_q8_0` there, with the
/// signatures of `crate::arch::Table`.
macro_rules! entries {
    ($f:ty, $q:ty, $features:literal) => {
        use crate::arch::simd;
        use crate::mat::{MatMut, MatRef};
        use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ8, BlockQ8_0};

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn gemm_a(a: MatRef<'_>, bp: MatRef<'_>, c: MatMut<'_>, acc: bool) {
            // SAFETY: the caller proves the features and the bounds (`crate::Kern::gemm_a`).
            unsafe { simd::panel::gemm_a::<$f, false>(a, bp, c, acc) }
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn gemm_a_stream(a: MatRef<'_>, bp: MatRef<'_>, c: MatMut<'_>, acc: bool) {
            // SAFETY: as for `gemm_a` (`crate::Kern::gemm_a_stream`).
            unsafe { simd::panel::gemm_a::<$f, true>(a, bp, c, acc) }
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn gemm_b(a: MatRef<'_>, b: MatRef<'_>, c: MatMut<'_>) {
            // SAFETY: as for `gemm_a` (`crate::Kern::gemm_b`).
            unsafe { simd::panel::gemm_b::<$f>(a, b, c) }
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn softmax_cols(
            st: MatMut<'_>,
            c: f32,
            m: &mut [f32],
            l: &mut [f32],
            alpha: &mut [f32],
        ) {
            // SAFETY: as for `gemm_a` (`crate::Kern::softmax_cols`).
            unsafe { simd::softmax::softmax_cols::<$f>(st, c, m, l, alpha) }
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn scale_cols(x: MatMut<'_>, alpha: &[f32]) {
            // SAFETY: as for `gemm_a` (`crate::Kern::scale_cols`).
            unsafe { simd::softmax::scale_cols::<$f>(x, alpha) }
        }

        #[target_feature(enable = $features)]
        pub(crate) unsafe fn exp_rows(s: MatMut<'_>, c: f32, sub: &[f32]) {
            // SAFETY: as for `gemm_a` (`crate::Kern::exp_rows`).
            unsafe { simd::softmax::exp_rows::<$f>(s, c, sub) }
        }

        crate::arch::simd::entries!(@dot $q, $features, dot_q4_0, BlockQ4_0);
        crate::arch::simd::entries!(@dot $q, $features, dot_q4_1, BlockQ4_1);
        crate::arch::simd::entries!(@dot $q, $features, dot_q5_0, BlockQ5_0);
        crate::arch::simd::entries!(@dot $q, $features, dot_q8_0, BlockQ8_0);
    };
    (@dot $q:ty, $features:literal, $name:ident, $block:ty) => {
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(w: &[$block], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
            // SAFETY: the caller proves the features and the bounds (`crate::Kern::dot_rows`).
            unsafe { simd::quant::dot_rows::<$q, _>(w, per_row, a, out) }
        }
    };
}
pub(crate) use entries;
