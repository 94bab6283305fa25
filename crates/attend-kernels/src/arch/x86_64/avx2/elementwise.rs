//! GELU, the linear layers' epilogue, the NaN/inf check and the log-sum-exp: the generic code
//! (`arch/generic/elementwise.rs`, the twin) compiled with AVX2 + FMA enabled, so that its
//! branch-free loops use 8 lanes. The activations' quantisation is written in intrinsics (the
//! compiler's saturating `as i8` does not vectorise well), the same operations as its twin.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX2, FMA and F16C; the code is safe Rust but for `quantize_q8`'s
//! loads and stores, whose bounds its loop proves.

use crate::arch::generic::elementwise as generic;

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gelu(x: &mut [f32]) {
    generic::gelu(x);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn epilogue(
    v: &mut [f32],
    bias: Option<&[f32]>,
    gelu: bool,
    residual: Option<&[f32]>,
) {
    generic::epilogue(v, bias, gelu, residual);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn all_finite(x: &[f32]) -> bool {
    generic::all_finite(x)
}

/// The twin's operations block by block: `|x|` by clearing the sign, the maximum of 32 in
/// lanes then across them, `x·(1/d)` then `+ copysign(0.49999997, ·)` (no fused
/// multiply-add, as the twin), truncated, packed with saturation (values within ±127.5 by
/// construction), `Σq` as integers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8(x: &[f32], out: &mut [crate::quant::BlockQ8]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.499_999_97);
    for (c, b) in x.chunks_exact(crate::quant::QK).zip(out) {
        let p = c.as_ptr();
        // SAFETY: `c` holds 32 values: four loads of eight
        let v = unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o))) };
        let a = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let amax = _mm_cvtss_f32(m);
        let d = if amax / 127.0 >= f32::MIN_POSITIVE {
            amax / 127.0
        } else {
            0.0
        };
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|v| {
            let s = _mm256_mul_ps(v, inv);
            let r = _mm256_add_ps(s, _mm256_or_ps(half, _mm256_and_ps(s, sign)));
            _mm256_cvttps_epi32(r)
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum));
        // i32 → i16 → i8, each pack interleaving 128-bit lanes: one permute restores order
        let w01 = _mm256_packs_epi32(q[0], q[1]);
        let w23 = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_packs_epi16(w01, w23);
        let bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `b.q` is 32 bytes
        unsafe { _mm256_storeu_si256(b.q.as_mut_ptr() as *mut __m256i, bytes) };
        b.d = d;
        b.s = d * _mm_cvtsi128_si32(sum) as f32;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn lse(m: &[f32], l: &[f32], out: &mut [f32]) {
    generic::lse(m, l, out);
}
