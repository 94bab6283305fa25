//! Panel micro-kernels and packing, portable scalar Rust: the safe twins of every SIMD build
//! (same contracts, see `crate::Kern`). Written to be read; the dispatcher has checked the
//! bounds.

use crate::mat::{MatMut, MatRef};
use crate::NR;

/// See [`crate::Kern::gemm_a`].
pub fn gemm_a(a: MatRef<'_>, bp: MatRef<'_>, mut c: MatMut<'_>, acc: bool) {
    for r in 0..a.rows() {
        let arow = a.row(r);
        for p in 0..bp.rows() {
            let panel = bp.row(p);
            let mut sum = [0.0f32; NR];
            for (&av, bk) in arow.iter().zip(panel.chunks_exact(NR)) {
                for (s, &bv) in sum.iter_mut().zip(bk) {
                    *s += av * bv;
                }
            }
            let out = &mut c.row_mut(r)[p * NR..][..NR];
            for (o, s) in out.iter_mut().zip(sum) {
                *o = if acc { *o + s } else { s };
            }
        }
    }
}

/// See [`crate::Kern::gemm_b`].
pub fn gemm_b(a: MatRef<'_>, b: MatRef<'_>, mut c: MatMut<'_>) {
    for t in 0..a.rows() {
        let brow = b.row(t);
        for (r, &av) in a.row(t).iter().enumerate() {
            for (cv, &bv) in c.row_mut(r).iter_mut().zip(brow) {
                *cv += av * bv;
            }
        }
    }
}

/// See [`crate::Kern::pack_panels`].
pub fn pack_panels(src: MatRef<'_>, dst: &mut [f32]) {
    let (n, dim) = (src.rows(), src.cols());
    for p in 0..n.div_ceil(NR) {
        let panel = &mut dst[p * dim * NR..][..dim * NR];
        for lane in 0..NR {
            let t = p * NR + lane;
            if t < n {
                for (e, &x) in src.row(t).iter().enumerate() {
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
