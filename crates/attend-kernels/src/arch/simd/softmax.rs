//! The online-softmax step, `exp2` rows and column rescaling, written once over [`F32s`];
//! their scalar twins are in `arch/generic/softmax.rs`.
//!
//! # Safety (every `unsafe fn` here)
//! The instruction set of `S` is enabled, and the views and slices are as `crate::Kern`'s
//! method of the same name asserts (widths a multiple of 16, so of `S::LANES`).

use super::F32s;
use crate::mat::MatMut;

/// `2^x` lane-wise: exact 0 at and below -127 (so `-inf` gives 0), relative error ~1e-7.
#[inline(always)]
unsafe fn exp2<S: F32s>(x: S) -> S {
    unsafe {
        let x = x.max(S::splat(-127.0)).min(S::splat(127.0));
        let xi = x.round();
        let f = x.sub(xi); // in [-0.5, 0.5]
                           // Taylor series of 2^f = e^(f ln 2), degree 7: error below 1e-9 on [-0.5, 0.5].
        let mut p = S::splat(1.525_273_4e-5);
        for coef in [
            1.540_353_1e-4,
            1.333_355_8e-3,
            9.618_129e-3,
            5.550_411e-2,
            0.240_226_5,
            std::f32::consts::LN_2,
            1.0,
        ] {
            p = p.mul_add(f, S::splat(coef));
        }
        p.mul(xi.pow2i())
    }
}

/// See [`crate::Kern::softmax_cols`].
#[inline(always)]
pub(crate) unsafe fn softmax_cols<S: F32s>(
    mut st: MatMut<'_>,
    c: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let (rows, width, stride, sp) = (st.rows(), st.cols(), st.stride(), st.ptr_mut());
    let (mp, lp, ap) = (m.as_mut_ptr(), l.as_mut_ptr(), alpha.as_mut_ptr());
    // SAFETY: lanes g.. of rows < rows of `st`, and of m, l, alpha (width elements each)
    unsafe {
        let cv = S::splat(c);
        for g in (0..width).step_by(S::LANES) {
            // pass 1: each lane's maximum over the tile
            let mut mx = S::splat(f32::NEG_INFINITY);
            for r in 0..rows {
                mx = mx.max(S::load(sp.add(r * stride + g)));
            }
            let m_old = S::load(mp.add(g));
            let m_new = m_old.max(mx.mul(cv));
            // a lane with nothing unmasked yet subtracts 0, so that -inf scores give exactly 0
            let m_use = m_new.zero_neg_inf();
            let a = exp2(m_old.sub(m_use));
            m_new.store(mp.add(g));
            a.store(ap.add(g));
            // pass 2: exponentiate and sum
            let mut sum = S::zero();
            for r in 0..rows {
                let p = sp.add(r * stride + g);
                let e = exp2(S::load(p).mul_sub(cv, m_use));
                e.store(p);
                sum = sum.add(e);
            }
            S::load(lp.add(g)).mul_add(a, sum).store(lp.add(g));
        }
    }
}

/// See [`crate::Kern::scale_cols`].
#[inline(always)]
pub(crate) unsafe fn scale_cols<S: F32s>(mut x: MatMut<'_>, alpha: &[f32]) {
    let (rows, width, stride, xp) = (x.rows(), x.cols(), x.stride(), x.ptr_mut());
    // SAFETY: lanes g.. of rows < rows of `x`, and of `alpha` (width elements)
    unsafe {
        for r in 0..rows {
            for g in (0..width).step_by(S::LANES) {
                let p = xp.add(r * stride + g);
                S::load(p).mul(S::load(alpha.as_ptr().add(g))).store(p);
            }
        }
    }
}

/// See [`crate::Kern::exp_rows`].
#[inline(always)]
pub(crate) unsafe fn exp_rows<S: F32s>(mut s: MatMut<'_>, c: f32, sub: &[f32]) {
    let (rows, width, stride, sp) = (s.rows(), s.cols(), s.stride(), s.ptr_mut());
    // SAFETY: lanes g.. of rows < rows of `s`; `sub` has a value per row
    unsafe {
        let cv = S::splat(c);
        for (r, &sr) in sub.iter().enumerate().take(rows) {
            let sv = S::splat(sr);
            for g in (0..width).step_by(S::LANES) {
                let p = sp.add(r * stride + g);
                exp2(S::load(p).mul_sub(cv, sv)).store(p);
            }
        }
    }
}
