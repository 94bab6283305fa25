//! Panel micro-kernels and packing, portable scalar Rust: the safe twins of every SIMD build
//! (same contracts, see `crate::Kern`). Written to be read; the dispatcher has checked the
//! bounds.

use crate::NR;

/// See [`crate::Kern::gemm_a`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_a(
    a: &[f32],
    a_off: usize,
    a_stride: usize,
    rows: usize,
    k_len: usize,
    bp: &[f32],
    panels: usize,
    c: &mut [f32],
    c_stride: usize,
    acc: bool,
) {
    for r in 0..rows {
        let arow = &a[a_off + r * a_stride..][..k_len];
        for p in 0..panels {
            let panel = &bp[p * k_len * NR..][..k_len * NR];
            let mut sum = [0.0f32; NR];
            for (k, &av) in arow.iter().enumerate() {
                for (l, s) in sum.iter_mut().enumerate() {
                    *s += av * panel[k * NR + l];
                }
            }
            let out = &mut c[r * c_stride + p * NR..][..NR];
            for (o, s) in out.iter_mut().zip(sum) {
                *o = if acc { *o + s } else { s };
            }
        }
    }
}

/// See [`crate::Kern::gemm_b`].
#[allow(clippy::too_many_arguments)]
pub fn gemm_b(
    a: &[f32],
    a_off: usize,
    a_stride: usize,
    rows: usize,
    t_len: usize,
    b: &[f32],
    b_off: usize,
    b_stride: usize,
    panels: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    let width = panels * NR;
    for t in 0..t_len {
        let brow = &b[b_off + t * b_stride..][..width];
        let arow = &a[a_off + t * a_stride..][..rows];
        for (r, &av) in arow.iter().enumerate() {
            let crow = &mut c[r * c_stride..][..width];
            for (cv, &bv) in crow.iter_mut().zip(brow) {
                *cv += av * bv;
            }
        }
    }
}

/// See [`crate::Kern::pack_panels`].
pub fn pack_panels(src: &[f32], off: usize, stride: usize, n: usize, dim: usize, dst: &mut [f32]) {
    let panels = n.div_ceil(NR);
    for p in 0..panels {
        let panel = &mut dst[p * dim * NR..][..dim * NR];
        for lane in 0..NR {
            let t = p * NR + lane;
            if t < n {
                let row = &src[off + t * stride..][..dim];
                for (e, &x) in row.iter().enumerate() {
                    panel[e * NR + lane] = x;
                }
            } else {
                for e in 0..dim {
                    panel[e * NR + lane] = 0.0;
                }
            }
        }
    }
}
