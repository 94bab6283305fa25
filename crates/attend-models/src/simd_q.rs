//! AVX2 kernels — the crate's other `unsafe` module (beside `sys.rs`): dot products of
//! quantised weight rows with quantised activations, and GELU and the linear layers' epilogue
//! compiled for AVX2. Each has its safe twin (`quant::dot_row_scalar`, `ops::gelu_scalar`,
//! `ops::epilogue_scalar`), and the tests hold them to each other.
//!
//! One 32-element block: the weights' 4-bit (or 8-bit) integers and the activation's `i8`s are
//! multiplied and summed pairwise by `vpmaddubsw` (unsigned × signed → `i16`), widened by
//! `vpmaddwd` against ones (→ 8 × `i32`), converted to `f32` and accumulated with the product
//! of the two scales by one FMA. `Q4_1`'s offset `m` adds `m·s` per block, `s = d·Σq` being
//! stored with the activation.
#![allow(unsafe_code)]

use crate::quant::{BlockQ8, GgmlType};

/// Whether this processor runs the AVX2 kernels (detected once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `Σ row · activation` for a `Q4_1`, `Q4_0` or `Q8_0` row and each of `N` activation rows
/// (the weight block is unpacked once for all of them), on AVX2; `None` when the type or the
/// processor has no kernel (the caller then uses the scalar twin). Lengths are checked here:
/// the row must hold exactly one block per activation block, for every activation.
pub fn dot_n<const N: usize>(ty: GgmlType, w: &[u8], a: [&[BlockQ8]; N]) -> Option<[f32; N]> {
    if !available() || a.iter().any(|a| w.len() != ty.block_bytes() * a.len()) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` proved AVX2, FMA and F16C; the row holds exactly one weight
        // block per activation block of every activation (checked above), which is all the
        // kernels read.
        unsafe {
            match ty {
                GgmlType::Q4_1 => Some(avx2::q4_1(w, a)),
                GgmlType::Q4_0 => Some(avx2::q4_0(w, a)),
                GgmlType::Q8_0 => Some(avx2::q8_0(w, a)),
                _ => None,
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (ty, w, a);
        None
    }
}

/// GELU over `x` with the code of `ops::gelu_scalar` compiled for AVX2+FMA; `false` (and
/// nothing done) when the processor lacks them.
pub fn gelu(x: &mut [f32]) -> bool {
    if !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` proved AVX2, FMA and F16C; the kernel is safe code otherwise.
        unsafe { avx2::gelu(x) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = x;
        false
    }
}

/// `ops::epilogue_scalar` compiled for AVX2+FMA; `false` (nothing done) without them.
pub fn epilogue(v: &mut [f32], bias: Option<&[f32]>, gelu: bool, residual: Option<&[f32]>) -> bool {
    if !available() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available()` proved AVX2, FMA and F16C; the kernel is safe code otherwise.
        unsafe { avx2::epilogue(v, bias, gelu, residual) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (v, bias, gelu, residual);
        false
    }
}

/// [`dot_n`] for one activation row.
pub fn dot(ty: GgmlType, w: &[u8], a: &[BlockQ8]) -> Option<f32> {
    dot_n(ty, w, [a]).map(|[v]| v)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::BlockQ8;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gelu(x: &mut [f32]) {
        crate::ops::gelu_scalar(x);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn epilogue(
        v: &mut [f32],
        bias: Option<&[f32]>,
        gelu: bool,
        residual: Option<&[f32]>,
    ) {
        crate::ops::epilogue_scalar(v, bias, gelu, residual);
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16(p: *const u8) -> f32 {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// The 16 bytes at `p` as 32 nibbles: low nibbles in lanes 0..16, high in 16..32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
        _mm256_set_m128i(hi, lo)
    }

    /// 8 × `i32` partial sums of `u8 w · i8 a` as `f32`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn mul_sum(w: __m256i, a: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(w, a);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    // Two accumulators per activation row (even and odd blocks), so that one FMA need not
    // wait for the previous one.

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1<const N: usize>(w: &[u8], a: [&[BlockQ8]; N]) -> [f32; N] {
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let mut off = [[0.0f32; N]; 2];
        let wp = w.as_ptr();
        for i in 0..a[0].len() {
            let blk = wp.add(i * 20);
            let (dw, m) = (f16(blk), f16(blk.add(2)));
            let qw = nibbles(blk.add(4));
            for t in 0..N {
                let b = a[t].get_unchecked(i);
                let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
                let s = _mm256_set1_ps(dw * b.d);
                acc[i & 1][t] = _mm256_fmadd_ps(s, mul_sum(qw, qa), acc[i & 1][t]);
                off[i & 1][t] += m * b.s;
            }
        }
        std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])) + off[0][t] + off[1][t])
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_0<const N: usize>(w: &[u8], a: [&[BlockQ8]; N]) -> [f32; N] {
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let wp = w.as_ptr();
        for i in 0..a[0].len() {
            let blk = wp.add(i * 18);
            let dw = f16(blk);
            let qw = nibbles(blk.add(2));
            for t in 0..N {
                let b = a[t].get_unchecked(i);
                let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
                // (q - 8)·a = q·a - 8·a: the nibbles stay unsigned for vpmaddubsw
                let v = _mm256_sub_ps(mul_sum(qw, qa), mul_sum(_mm256_set1_epi8(8), qa));
                acc[i & 1][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * b.d), v, acc[i & 1][t]);
            }
        }
        std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0<const N: usize>(w: &[u8], a: [&[BlockQ8]; N]) -> [f32; N] {
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let wp = w.as_ptr();
        for i in 0..a[0].len() {
            let blk = wp.add(i * 34);
            let dw = f16(blk);
            let qw = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            // signed × signed: |w| (unsigned) times a with w's sign
            let aw = _mm256_sign_epi8(qw, qw);
            for t in 0..N {
                let b = a[t].get_unchecked(i);
                let qa = _mm256_loadu_si256(b.q.as_ptr() as *const __m256i);
                let v = mul_sum(aw, _mm256_sign_epi8(qa, qw));
                acc[i & 1][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * b.d), v, acc[i & 1][t]);
            }
        }
        std::array::from_fn(|t| hsum(_mm256_add_ps(acc[0][t], acc[1][t])))
    }
}
