//! The online-softmax step, `exp2` rows and column rescaling, portable scalar Rust: the safe
//! twins of every SIMD build (see `crate::Kern`).

/// See [`crate::Kern::softmax_cols`].
pub fn softmax_cols(
    st: &mut [f32],
    rows: usize,
    width: usize,
    c: f32,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    for lane in 0..width {
        // pass 1: the lane's maximum over this tile, in log2 units
        let mut mx = f32::NEG_INFINITY;
        for r in 0..rows {
            mx = mx.max(st[r * width + lane]);
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
        for r in 0..rows {
            let p = (st[r * width + lane] * c - m_use).exp2();
            st[r * width + lane] = p;
            sum += p;
        }
        l[lane] = l[lane] * alpha[lane] + sum;
    }
}

/// See [`crate::Kern::scale_cols`].
pub fn scale_cols(x: &mut [f32], rows: usize, width: usize, stride: usize, alpha: &[f32]) {
    for r in 0..rows {
        for (v, a) in x[r * stride..][..width].iter_mut().zip(alpha) {
            *v *= a;
        }
    }
}

/// See [`crate::Kern::exp_rows`].
pub fn exp_rows(s: &mut [f32], rows: usize, width: usize, stride: usize, c: f32, sub: &[f32]) {
    for r in 0..rows {
        for v in &mut s[r * stride..][..width] {
            *v = (*v * c - sub[r]).exp2();
        }
    }
}
