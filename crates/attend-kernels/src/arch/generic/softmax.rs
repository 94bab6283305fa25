//! The online-softmax step, `exp2` rows and column rescaling, portable scalar Rust: the safe
//! twins of every SIMD build (see `crate::Kern`).

use crate::mat::MatMut;

/// See [`crate::Kern::softmax_cols`].
pub fn softmax_cols(mut st: MatMut<'_>, c: f32, m: &mut [f32], l: &mut [f32], alpha: &mut [f32]) {
    for lane in 0..st.cols() {
        // pass 1: the lane's maximum over this tile, in log2 units
        let mut mx = f32::NEG_INFINITY;
        for r in 0..st.rows() {
            mx = mx.max(st.row(r)[lane]);
        }
        let m_new = m[lane].max(mx * c);
        // a lane with nothing unmasked yet subtracts 0, so that -inf scores give exactly 0
        let m_use = if m_new == f32::NEG_INFINITY {
            0.0
        } else {
            m_new
        };
        alpha[lane] = (m[lane] - m_use).exp2();
        m[lane] = m_new;
        // pass 2: exponentiate and sum
        let mut sum = 0.0;
        for r in 0..st.rows() {
            let x = &mut st.row_mut(r)[lane];
            *x = (*x * c - m_use).exp2();
            sum += *x;
        }
        l[lane] = l[lane] * alpha[lane] + sum;
    }
}

/// See [`crate::Kern::scale_cols`].
pub fn scale_cols(mut x: MatMut<'_>, alpha: &[f32]) {
    for r in 0..x.rows() {
        for (v, a) in x.row_mut(r).iter_mut().zip(alpha) {
            *v *= a;
        }
    }
}

/// See [`crate::Kern::exp_rows`].
pub fn exp_rows(mut s: MatMut<'_>, c: f32, sub: &[f32]) {
    for (r, &sr) in sub.iter().enumerate().take(s.rows()) {
        for v in s.row_mut(r) {
            *v = (*v * c - sr).exp2();
        }
    }
}
