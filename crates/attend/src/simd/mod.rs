//! The only place in the crate with `unsafe` and `std::arch`.
//!
//! Every kernel here has a safe scalar twin in [`scalar`] with the same contract; the AVX2+FMA
//! versions in `avx2` are chosen at run time (never by `target-cpu`), and the tests run the
//! whole suite once per available instruction set. The dispatcher [`Kern`] checks every bound
//! of every slice before an `unsafe` kernel runs, so a wrong call is a panic here (a bug in this
//! crate), never an out-of-bounds access.
//!
//! The kernels work on *panels*: `NR = 16` lanes, padded with zeros where a tile is narrower.
//! - [`Kern::gemm_a`]: `c[r][l] = Σ_k a[r][k] · bp[k][l]` with `bp` packed panel by panel;
//! - [`Kern::gemm_b`]: `c[r][l] += Σ_t a[t][r] · b[t][l]`;
//! - [`Kern::softmax_cols`]: one online-softmax step with the rows of a tile as keys and the
//!   lanes as queries;
//! - [`Kern::exp_rows`], [`Kern::scale_cols`], [`Kern::pack_panels`]: the glue.

pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::{Error, Result};

/// Lanes of a panel.
pub(crate) const NR: usize = 16;

/// An instruction set for the fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Isa {
    /// The best this processor has (detected once, at run time).
    #[default]
    Auto,
    /// Portable scalar Rust: the safe twin of every SIMD kernel.
    Scalar,
    /// AVX2 with FMA (x86-64).
    Avx2,
}

impl Isa {
    /// The concrete instruction sets this processor can run, scalar first.
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        if Isa::Avx2.kern().is_ok() {
            v.push(Isa::Avx2);
        }
        v
    }

    /// The kernels for this instruction set; an error if the processor lacks it.
    pub(crate) fn kern(self) -> Result<Kern> {
        match self {
            Isa::Scalar => Ok(Kern::Scalar),
            Isa::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                if let Some(t) = avx2::Avx2::new() {
                    return Ok(Kern::Avx2(t));
                }
                Err(Error::IsaUnavailable(Isa::Avx2))
            }
            Isa::Auto => Ok(auto()),
        }
    }

    /// The instruction set `Auto` resolves to on this processor.
    pub fn detected() -> Isa {
        match auto() {
            Kern::Scalar => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(_) => Isa::Avx2,
        }
    }
}

fn auto() -> Kern {
    static DETECTED: std::sync::OnceLock<Kern> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(t) = avx2::Avx2::new() {
            return Kern::Avx2(t);
        }
        Kern::Scalar
    })
}

/// A resolved instruction set: holding `Avx2` proves the processor has AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kern {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(avx2::Avx2),
}

/// Last index touched by `rows` rows of `len` elements at `off` with `stride`, plus one.
fn span(off: usize, stride: usize, rows: usize, len: usize) -> usize {
    if rows == 0 || len == 0 {
        0
    } else {
        off + (rows - 1) * stride + len
    }
}

impl Kern {
    /// `c[r*c_stride + p*16 + l] (+)= Σ_k a[a_off + r*a_stride + k] · bp[p*k_len*16 + k*16 + l]`
    /// for `r < rows`, `p < panels`, `l < 16`; `acc` adds to `c` instead of overwriting it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn gemm_a(
        self,
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
        assert!(span(a_off, a_stride, rows, k_len) <= a.len());
        assert!(panels * k_len * NR <= bp.len());
        assert!(span(0, c_stride, rows, panels * NR) <= c.len());
        match self {
            Kern::Scalar => scalar::gemm_a(
                a, a_off, a_stride, rows, k_len, bp, panels, c, c_stride, acc,
            ),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.gemm_a(
                a, a_off, a_stride, rows, k_len, bp, panels, c, c_stride, acc,
            ),
        }
    }

    /// `c[r*c_stride + l] += Σ_t a[a_off + t*a_stride + r] · b[b_off + t*b_stride + l]` for
    /// `r < rows`, `t < t_len`, `l < panels*16`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn gemm_b(
        self,
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
        assert!(span(a_off, a_stride, t_len, rows) <= a.len());
        assert!(span(b_off, b_stride, t_len, panels * NR) <= b.len());
        assert!(span(0, c_stride, rows, panels * NR) <= c.len());
        match self {
            Kern::Scalar => scalar::gemm_b(
                a, a_off, a_stride, rows, t_len, b, b_off, b_stride, panels, c, c_stride,
            ),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.gemm_b(
                a, a_off, a_stride, rows, t_len, b, b_off, b_stride, panels, c, c_stride,
            ),
        }
    }

    /// One online-softmax step over a tile `st[rows][width]` (rows: keys, lanes: queries),
    /// scores in raw units and `c = scale·log2(e)`:
    /// `m' = max(m, c·max_r st)`, `alpha = 2^(m - m')`, `st = 2^(c·st - m')`,
    /// `l' = alpha·l + Σ_r st`. A lane whose `m'` is `-inf` gets `st = 0` and `alpha = 0`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn softmax_cols(
        self,
        st: &mut [f32],
        rows: usize,
        width: usize,
        c: f32,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        assert!(width % NR == 0 && rows * width <= st.len());
        assert!(m.len() >= width && l.len() >= width && alpha.len() >= width);
        match self {
            Kern::Scalar => scalar::softmax_cols(st, rows, width, c, m, l, alpha),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.softmax_cols(st, rows, width, c, m, l, alpha),
        }
    }

    /// `x[r*stride + l] *= alpha[l]` for `r < rows`, `l < width`.
    #[inline]
    pub(crate) fn scale_cols(
        self,
        x: &mut [f32],
        rows: usize,
        width: usize,
        stride: usize,
        alpha: &[f32],
    ) {
        assert!(width % NR == 0 && span(0, stride, rows, width) <= x.len());
        assert!(alpha.len() >= width);
        match self {
            Kern::Scalar => scalar::scale_cols(x, rows, width, stride, alpha),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.scale_cols(x, rows, width, stride, alpha),
        }
    }

    /// `s[r*stride + l] = 2^(c·s[r*stride + l] - sub[r])` for `r < rows`, `l < width`
    /// (`-inf` scores give exactly 0; `sub = +inf` zeroes a row).
    #[inline]
    pub(crate) fn exp_rows(
        self,
        s: &mut [f32],
        rows: usize,
        width: usize,
        stride: usize,
        c: f32,
        sub: &[f32],
    ) {
        assert!(width % NR == 0 && span(0, stride, rows, width) <= s.len());
        assert!(sub.len() >= rows);
        match self {
            Kern::Scalar => scalar::exp_rows(s, rows, width, stride, c, sub),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.exp_rows(s, rows, width, stride, c, sub),
        }
    }

    /// Packs `n` rows of `dim` elements (`src[off + t*stride + e]`) transposed into panels of
    /// 16 rows: `dst[(t/16)*dim*16 + e*16 + t%16]`, zero-padding the last panel.
    #[inline]
    pub(crate) fn pack_panels(
        self,
        src: &[f32],
        off: usize,
        stride: usize,
        n: usize,
        dim: usize,
        dst: &mut [f32],
    ) {
        let panels = n.div_ceil(NR);
        assert!(span(off, stride, n, dim) <= src.len());
        assert!(panels * dim * NR <= dst.len());
        match self {
            Kern::Scalar => scalar::pack_panels(src, off, stride, n, dim, dst),
            #[cfg(target_arch = "x86_64")]
            Kern::Avx2(t) => t.pack_panels(src, off, stride, n, dim, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
        }
    }

    #[test]
    fn every_kernel_matches_its_scalar_twin() {
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            for (rows, klen, panels) in [(1, 1, 1), (5, 7, 2), (6, 64, 4), (13, 33, 3), (7, 3, 1)] {
                let a = rnd(rows * klen + 5, 1);
                let bp = rnd(panels * klen * NR, 2);
                let mut c1 = vec![0.0; rows * (panels * NR + 3)];
                let mut c2 = c1.clone();
                for acc in [false, true] {
                    let st = panels * NR + 3;
                    k.gemm_a(&a, 2, klen, rows, klen, &bp, panels, &mut c1, st, acc);
                    scalar::gemm_a(&a, 2, klen, rows, klen, &bp, panels, &mut c2, st, acc);
                    close(&c1, &c2, 1e-5);
                }

                let a = rnd(klen * (rows + 2), 3);
                let b = rnd(klen * panels * NR + 1, 4);
                let mut c1 = rnd(rows * panels * NR, 5);
                let mut c2 = c1.clone();
                k.gemm_b(
                    &a,
                    1,
                    rows + 1,
                    rows,
                    klen,
                    &b,
                    1,
                    panels * NR,
                    panels,
                    &mut c1,
                    panels * NR,
                );
                scalar::gemm_b(
                    &a,
                    1,
                    rows + 1,
                    rows,
                    klen,
                    &b,
                    1,
                    panels * NR,
                    panels,
                    &mut c2,
                    panels * NR,
                );
                close(&c1, &c2, 1e-5);

                let src = rnd(rows * 40 + 9, 6);
                let mut d1 = vec![1.0; rows.div_ceil(NR) * klen * NR];
                let mut d2 = vec![2.0; d1.len()];
                k.pack_panels(&src, 3, 40, rows, klen.min(37), &mut d1);
                scalar::pack_panels(&src, 3, 40, rows, klen.min(37), &mut d2);
                let used = rows.div_ceil(NR) * klen.min(37) * NR;
                assert_eq!(&d1[..used], &d2[..used]);
            }
            for rows in [1, 3, 64] {
                let width = 32;
                let mut s1: Vec<f32> = rnd(rows * width, 7).iter().map(|x| x * 30.0).collect();
                s1[0] = f32::NEG_INFINITY;
                for r in 0..rows {
                    s1[r * width + 5] = f32::NEG_INFINITY; // lane 5 fully masked
                }
                let mut s2 = s1.clone();
                let mut m1 = vec![f32::NEG_INFINITY; width];
                m1[3] = 4.0;
                let (mut l1, mut a1) = (vec![1.0; width], vec![0.0; width]);
                let (mut m2, mut l2, mut a2) = (m1.clone(), l1.clone(), a1.clone());
                k.softmax_cols(&mut s1, rows, width, 1.3, &mut m1, &mut l1, &mut a1);
                scalar::softmax_cols(&mut s2, rows, width, 1.3, &mut m2, &mut l2, &mut a2);
                close(&s1, &s2, 1e-6);
                close(&l1, &l2, 1e-6);
                close(&a1, &a2, 1e-6);
                assert_eq!(m1, m2);
                assert!(s1.iter().all(|x| x.is_finite()));
                for r in 0..rows {
                    assert_eq!(s1[r * width + 5], 0.0);
                }
                let mut x1 = rnd(rows * width, 8);
                let mut x2 = x1.clone();
                let sub: Vec<f32> = (0..rows).map(|r| r as f32 - 1.0).collect();
                k.exp_rows(&mut x1, rows, width, width, 2.0, &sub);
                scalar::exp_rows(&mut x2, rows, width, width, 2.0, &sub);
                close(&x1, &x2, 1e-6);
                k.scale_cols(&mut x1, rows, width, width, &a1);
                scalar::scale_cols(&mut x2, rows, width, width, &a2);
                close(&x1, &x2, 1e-6);
            }
        }
    }

    #[test]
    fn exp2_is_accurate_and_exact_at_the_edges() {
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            let xs: Vec<f32> = (0..NR * 200).map(|i| -140.0 + i as f32 * 0.0537).collect();
            let mut s = xs.clone();
            k.exp_rows(&mut s, 200, NR, NR, 1.0, &[0.0; 200]);
            for (x, y) in xs.iter().zip(&s) {
                let want = (*x as f64).exp2();
                if *x < -126.0 {
                    assert!(*y == 0.0 || (*y as f64 - want).abs() < 1e-37, "{x}: {y}");
                } else {
                    assert!(
                        ((*y as f64) - want).abs() <= 4e-7 * want,
                        "{x}: {y} vs {want}"
                    );
                }
            }
            let mut z = vec![f32::NEG_INFINITY; NR];
            k.exp_rows(&mut z, 1, NR, NR, 1.0, &[0.0]);
            assert!(z.iter().all(|&v| v == 0.0));
            let mut z = vec![3.0; NR];
            k.exp_rows(&mut z, 1, NR, NR, 1.0, &[f32::INFINITY]);
            assert!(z.iter().all(|&v| v == 0.0));
        }
    }
}
