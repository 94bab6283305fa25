//! AVX-512F online-softmax step, `exp2` rows and column rescaling (x86-64), 16 lanes per
//! register. Each has its scalar twin in `arch/generic/softmax.rs`.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves that the processor has AVX-512F and FMA (it holds this instruction set's
//! table) and that the bounds `crate::Kern`'s method of the same name asserts hold.

use std::arch::x86_64::*;

use crate::NR;

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn softmax_cols(
    st: &mut [f32],
    rows: usize,
    width: usize,
    c: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    // SAFETY: AVX-512F+FMA proven by the caller; rows × width of `st` and width of m, l,
    // alpha checked by the dispatcher; width is a multiple of 16.
    unsafe { softmax_cols_raw(st.as_mut_ptr(), rows, width, c, m, l, alpha) }
}

pub(crate) unsafe fn scale_cols(
    x: &mut [f32],
    rows: usize,
    width: usize,
    stride: usize,
    alpha: &[f32],
) {
    // SAFETY: AVX-512F proven by the caller; bounds checked by the dispatcher, width % 16 == 0.
    unsafe { scale_cols_raw(x.as_mut_ptr(), rows, width, stride, alpha.as_ptr()) }
}

pub(crate) unsafe fn exp_rows(
    s: &mut [f32],
    rows: usize,
    width: usize,
    stride: usize,
    c: f32,
    sub: &[f32],
) {
    // SAFETY: AVX-512F+FMA proven by the caller; bounds checked by the dispatcher, width % 16
    // == 0.
    unsafe { exp_rows_raw(s.as_mut_ptr(), rows, width, stride, c, sub) }
}

/// `2^x` for 16 lanes, the AVX2 build's polynomial: exact 0 at and below -127 (so `-inf`
/// gives 0), relative error ~1e-7.
#[inline]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp2(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-127.0)),
        _mm512_set1_ps(127.0),
    );
    let xi = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let f = _mm512_sub_ps(x, xi); // in [-0.5, 0.5]
    let mut p = _mm512_set1_ps(1.525_273_4e-5);
    for coef in [
        1.540_353_1e-4,
        1.333_355_8e-3,
        9.618_129e-3,
        5.550_411e-2,
        0.240_226_5,
        std::f32::consts::LN_2,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(coef));
    }
    // 2^xi through the exponent field; xi = -127 gives the bit pattern of +0.0.
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(xi),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(e))
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn softmax_cols_raw(
    st: *mut f32,
    rows: usize,
    width: usize,
    c: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let cv = _mm512_set1_ps(c);
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    for g in (0..width).step_by(NR) {
        // pass 1: each lane's maximum over the tile
        let mut mx = ninf;
        for r in 0..rows {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(st.add(r * width + g)));
        }
        let m_old = _mm512_loadu_ps(m.as_ptr().add(g));
        let m_new = _mm512_max_ps(m_old, _mm512_mul_ps(mx, cv));
        // 0 where nothing is unmasked yet
        let live = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(m_new, ninf);
        let m_use = _mm512_maskz_mov_ps(live, m_new);
        let a = exp2(_mm512_sub_ps(m_old, m_use));
        _mm512_storeu_ps(m.as_mut_ptr().add(g), m_new);
        _mm512_storeu_ps(alpha.as_mut_ptr().add(g), a);
        // pass 2: exponentiate and sum
        let mut sum = _mm512_setzero_ps();
        for r in 0..rows {
            let sp = st.add(r * width + g);
            let p = exp2(_mm512_fmsub_ps(_mm512_loadu_ps(sp), cv, m_use));
            _mm512_storeu_ps(sp, p);
            sum = _mm512_add_ps(sum, p);
        }
        let lv = _mm512_loadu_ps(l.as_ptr().add(g));
        _mm512_storeu_ps(l.as_mut_ptr().add(g), _mm512_fmadd_ps(lv, a, sum));
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn scale_cols_raw(x: *mut f32, rows: usize, width: usize, stride: usize, alpha: *const f32) {
    for r in 0..rows {
        for g in (0..width).step_by(NR) {
            let p = x.add(r * stride + g);
            _mm512_storeu_ps(
                p,
                _mm512_mul_ps(_mm512_loadu_ps(p), _mm512_loadu_ps(alpha.add(g))),
            );
        }
    }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_rows_raw(s: *mut f32, rows: usize, width: usize, stride: usize, c: f32, sub: &[f32]) {
    let cv = _mm512_set1_ps(c);
    for (r, &sr) in sub.iter().enumerate().take(rows) {
        let sv = _mm512_set1_ps(sr);
        for g in (0..width).step_by(NR) {
            let p = s.add(r * stride + g);
            _mm512_storeu_ps(p, exp2(_mm512_fmsub_ps(_mm512_loadu_ps(p), cv, sv)));
        }
    }
}
