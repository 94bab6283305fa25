//! The x86-64 vector primitives the generic kernels (`arch/simd/`) are written over:
//! [`F32s`] for `__m256` (AVX2 + FMA, 8 lanes) and `__m512` (AVX-512F, 16 lanes), and [`Q32`]
//! for 32-byte blocks in a `__m256i`, whose dot product is `vpmaddubsw` + `vpmaddwd` on AVX2
//! and one `vpdpbusd` with VNNI.
//!
//! # Safety
//! Every method is one or a few intrinsics of the instruction set its impl names; it is only
//! called from that instruction set's `#[target_feature]` entries (`arch/simd/mod.rs`).

use std::arch::x86_64::*;

use super::avx2::quant::{bits_to_bytes, f16, hsum, nibbles};
use crate::arch::simd::{F32s, Q32};

/// `impl F32s for $v` from the intrinsics of the lane-wise methods, and the methods that take
/// more than one intrinsic (`round`, `pow2i`, `zero_neg_inf`) written out.
macro_rules! f32s {
    ($v:ty, $lanes:expr, $block_rows:expr,
     [$zero:ident, $splat:ident, $load:ident, $store:ident, $add:ident, $sub:ident, $mul:ident,
      $max:ident, $min:ident, $fmadd:ident, $fmsub:ident],
     { $($rest:tt)* }) => {
        // SAFETY: each method is the instruction (or the few) its documentation names, of the
        // instruction set the entries that call it enable.
        unsafe impl F32s for $v {
            const LANES: usize = $lanes;
            const BLOCK_ROWS: [usize; 2] = $block_rows;
            #[inline(always)]
            unsafe fn zero() -> Self {
                unsafe { $zero() }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> Self {
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                unsafe { $store(p, self) }
            }
            #[inline(always)]
            unsafe fn add(self, b: Self) -> Self {
                unsafe { $add(self, b) }
            }
            #[inline(always)]
            unsafe fn sub(self, b: Self) -> Self {
                unsafe { $sub(self, b) }
            }
            #[inline(always)]
            unsafe fn mul(self, b: Self) -> Self {
                unsafe { $mul(self, b) }
            }
            #[inline(always)]
            unsafe fn max(self, b: Self) -> Self {
                unsafe { $max(self, b) }
            }
            #[inline(always)]
            unsafe fn min(self, b: Self) -> Self {
                unsafe { $min(self, b) }
            }
            #[inline(always)]
            unsafe fn mul_add(self, b: Self, c: Self) -> Self {
                unsafe { $fmadd(self, b, c) }
            }
            #[inline(always)]
            unsafe fn mul_sub(self, b: Self, c: Self) -> Self {
                unsafe { $fmsub(self, b, c) }
            }
            #[inline(always)]
            unsafe fn prefetch(p: *const u8) {
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
            }
            $($rest)*
        }
    };
}

// AVX2 + FMA: one panel (two registers) a row, 6 rows: 12 of the 16 `ymm` registers.
f32s!(
    __m256,
    8,
    [6, 0],
    [
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_max_ps,
        _mm256_min_ps,
        _mm256_fmadd_ps,
        _mm256_fmsub_ps
    ],
    {
        #[inline(always)]
        unsafe fn round(self) -> Self {
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self) }
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            unsafe {
                let e = _mm256_add_epi32(_mm256_cvtps_epi32(self), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        unsafe fn zero_neg_inf(self) -> Self {
            unsafe {
                let dead = _mm256_cmp_ps::<_CMP_EQ_OQ>(self, _mm256_set1_ps(f32::NEG_INFINITY));
                _mm256_andnot_ps(dead, self)
            }
        }
    }
);

// AVX-512F: a panel is one register; two panels of 8 rows (16 accumulators) or one of 12.
f32s!(
    __m512,
    16,
    [12, 8],
    [
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_max_ps,
        _mm512_min_ps,
        _mm512_fmadd_ps,
        _mm512_fmsub_ps
    ],
    {
        #[inline(always)]
        unsafe fn round(self) -> Self {
            unsafe {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self)
            }
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            unsafe {
                let e = _mm512_add_epi32(_mm512_cvtps_epi32(self), _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        unsafe fn zero_neg_inf(self) -> Self {
            unsafe {
                let live =
                    _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(self, _mm512_set1_ps(f32::NEG_INFINITY));
                _mm512_maskz_mov_ps(live, self)
            }
        }
    }
);

/// 32-byte blocks in a `__m256i`: AVX2's `vpmaddubsw` + `vpmaddwd` dot (4 activation rows a
/// pass), or with `VNNI` AVX-512 VNNI's `vpdpbusd` (8 rows a pass: 32 registers hold the
/// sixteen accumulators).
pub(crate) struct X86Q<const VNNI: bool>;

// SAFETY: AVX2 (+ AVX-512 BW/VL/VNNI when `VNNI`) instructions, as documented.
unsafe impl<const VNNI: bool> Q32 for X86Q<VNNI> {
    type B = __m256i;
    type F = __m256;
    const ROWS: usize = if VNNI { 8 } else { 4 };
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        unsafe { _mm256_loadu_si256(p as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        unsafe { nibbles(p) }
    }
    #[inline(always)]
    unsafe fn fifth_bits(bits: u32) -> __m256i {
        unsafe { _mm256_and_si256(bits_to_bytes(bits), _mm256_set1_epi8(0x10)) }
    }
    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_or_si256(a, b) }
    }
    #[inline(always)]
    unsafe fn sub_i8(a: __m256i, x: i8) -> __m256i {
        unsafe { _mm256_sub_epi8(a, _mm256_set1_epi8(x)) }
    }
    #[inline(always)]
    unsafe fn abs_i8(a: __m256i) -> __m256i {
        unsafe { _mm256_abs_epi8(a) }
    }
    #[inline(always)]
    unsafe fn sign_i8(a: __m256i, s: __m256i) -> __m256i {
        unsafe { _mm256_sign_epi8(a, s) }
    }
    #[inline(always)]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        unsafe {
            let sums = if VNNI {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
            } else {
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
            };
            _mm256_cvtepi32_ps(sums)
        }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn fmadd(s: f32, v: __m256, acc: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(_mm256_set1_ps(s), v, acc) }
    }
    #[inline(always)]
    unsafe fn fadd(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe { hsum(v) }
    }
    #[inline(always)]
    unsafe fn f16(bits: [u8; 2]) -> f32 {
        unsafe { f16(bits) }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p as *const i8) }
    }
}
