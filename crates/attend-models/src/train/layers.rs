//! The backward passes of a trainable transformer's layers, each paired with its forward in
//! `crate::nn` (`linear_fwd`, `layer_norm_fwd`, `gelu_tanh_fwd`), on row-major
//! `[rows × features]` activations, and the softmax cross-entropy loss. Backward functions add
//! weight gradients into their buffers (so one step's gradients start from zero) and return or
//! add the input gradient as each says. Attention is not here: it is `attend::backward`.
//!
//! Every pair is checked against central finite differences in the tests below.

use rayon::prelude::*;

use attend_kernels::gemm::sgemm_strided;

use crate::nn::activations::{gelu_tanh_grad, ELEMS_PER_TASK as ELEMS};
use crate::nn::logits::{log_sum_exp, softmax_into};

/// Backward of [`crate::nn::linear::linear_fwd`]: `dw += dyᵀ·x`, `db += Σ_rows dy`, and `dx = dy·w` when asked
/// (`dx_add`: added to `dx` instead of written).
#[allow(clippy::too_many_arguments)]
pub fn linear_bwd(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dx: Option<(&mut [f32], bool)>,
    n: usize,
    din: usize,
) {
    let dout = w.len() / din;
    sgemm_strided((dout, din, n), dy, (1, dout), x, (din, 1), dw, true);
    if let Some(db) = db {
        for row in dy[..n * dout].chunks_exact(dout) {
            db.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
    }
    if let Some((dx, add)) = dx {
        sgemm_strided((n, din, dout), dy, (dout, 1), w, (din, 1), dx, add);
    }
}

/// Rows per parallel task in the row-wise layers. Fixed, so that partial sums (and so the
/// results) do not depend on the thread count.
const ROWS: usize = 64;

/// Backward of [`crate::nn::norm::layer_norm_fwd`]: `dg += Σ dy·xhat`, `db += Σ dy`, and
/// `dx += (dxhat - mean(dxhat) - xhat·mean(dxhat·xhat)) / σ` with `dxhat = dy·g`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_bwd(
    dy: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    g: &[f32],
    dg: &mut [f32],
    db: &mut [f32],
    dx: &mut [f32],
    dim: usize,
) {
    let rows = dx.len() / dim;
    let tasks = dx[..rows * dim]
        .par_chunks_mut(ROWS * dim)
        .zip(dy[..rows * dim].par_chunks(ROWS * dim))
        .zip(xhat[..rows * dim].par_chunks(ROWS * dim))
        .zip(rstd[..rows].par_chunks(ROWS));
    // per task: its rows' dx, and its partial sums of dg and db
    let partials: Vec<Vec<f32>> = tasks
        .map(|(((dxc, dyc), hc), rc)| {
            let mut part = vec![0.0f32; 2 * dim];
            let mut dxhat = vec![0.0f32; dim];
            let rows = dyc.chunks_exact(dim).zip(hc.chunks_exact(dim));
            for (((dyr, hr), &r), dxr) in rows.zip(rc).zip(dxc.chunks_exact_mut(dim)) {
                let (mut m1, mut m2) = (0.0f32, 0.0f32);
                for i in 0..dim {
                    part[i] += dyr[i] * hr[i];
                    part[dim + i] += dyr[i];
                    dxhat[i] = dyr[i] * g[i];
                    m1 += dxhat[i];
                    m2 += dxhat[i] * hr[i];
                }
                m1 /= dim as f32;
                m2 /= dim as f32;
                for i in 0..dim {
                    dxr[i] += (dxhat[i] - m1 - hr[i] * m2) * r;
                }
            }
            part
        })
        .collect();
    for part in &partials {
        dg.iter_mut().zip(&part[..dim]).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&part[dim..]).for_each(|(a, b)| *a += b);
    }
}

/// Backward of [`crate::nn::activations::gelu_tanh_fwd`]: `du = dg · gelu'(u)`.
pub fn gelu_bwd(u: &[f32], dg: &[f32], du: &mut [f32]) {
    let n = du.len().min(u.len()).min(dg.len());
    du[..n]
        .par_chunks_mut(ELEMS)
        .zip(u[..n].par_chunks(ELEMS))
        .zip(dg[..n].par_chunks(ELEMS))
        .for_each(|((dc, uc), gc)| {
            for ((d, &x), &dgv) in dc.iter_mut().zip(uc).zip(gc) {
                *d = dgv * gelu_tanh_grad(x);
            }
        });
}

/// Target of a position that is not scored (padding).
pub const IGNORE: u32 = u32::MAX;

/// Mean cross-entropy of `softmax(logits)` against `targets` over the scored rows, and its
/// gradient `dlogits = (softmax - onehot) / scored` (0 on ignored rows). Returns
/// `(loss, scored rows)`.
pub fn cross_entropy(
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
    dlogits: Option<&mut [f32]>,
) -> (f32, usize) {
    let scored = targets.iter().filter(|&&t| t != IGNORE).count();
    let inv = 1.0 / scored.max(1) as f32;
    let rows = targets.len();
    // one row's loss, writing its gradient when asked
    let row_loss = |row: &[f32], t: u32, dr: Option<&mut [f32]>| -> f64 {
        if t == IGNORE {
            if let Some(dr) = dr {
                dr.fill(0.0);
            }
            return 0.0;
        }
        let lse = match dr {
            Some(dr) => {
                // (softmax - onehot) / scored
                let lse = softmax_into(row, dr);
                dr.iter_mut().for_each(|d| *d *= inv);
                dr[t as usize] -= inv;
                lse
            }
            None => log_sum_exp(row),
        };
        (lse - row[t as usize]) as f64
    };
    let lg = logits[..rows * vocab].par_chunks(ROWS * vocab);
    let tg = targets.par_chunks(ROWS);
    let partials: Vec<f64> = match dlogits {
        Some(dl) => lg
            .zip(tg)
            .zip(dl[..rows * vocab].par_chunks_mut(ROWS * vocab))
            .map(|((lc, tc), dc)| {
                lc.chunks_exact(vocab)
                    .zip(tc)
                    .zip(dc.chunks_exact_mut(vocab))
                    .map(|((row, &t), dr)| row_loss(row, t, Some(dr)))
                    .sum()
            })
            .collect(),
        None => lg
            .zip(tg)
            .map(|(lc, tc)| {
                lc.chunks_exact(vocab)
                    .zip(tc)
                    .map(|(row, &t)| row_loss(row, t, None))
                    .sum()
            })
            .collect(),
    };
    let total: f64 = partials.iter().sum();
    ((total / scored.max(1) as f64) as f32, scored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::activations::gelu_tanh_fwd;
    use crate::nn::linear::linear_fwd;
    use crate::nn::norm::layer_norm_fwd;

    /// Deterministic values in [-1, 1).
    fn vals(n: usize, seed: u64) -> Vec<f32> {
        attend_kernels::testing::uniform(n, seed as u32)
            .iter()
            .map(|v| 2.0 * v)
            .collect()
    }

    /// `L = Σ f(x)·r` for fixed random `r`; compares `analytic` (∂L/∂x) with central
    /// differences of `f` at every coordinate of `x`.
    fn check(x: &[f32], analytic: &[f32], f: &dyn Fn(&[f32]) -> Vec<f32>, r: &[f32], what: &str) {
        let loss =
            |x: &[f32]| -> f64 { f(x).iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum() };
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        for i in 0..x.len() {
            let mut xp = x.to_vec();
            xp[i] += eps;
            let mut xm = x.to_vec();
            xm[i] -= eps;
            let num = (loss(&xp) - loss(&xm)) / (2.0 * eps as f64);
            let err = (num - analytic[i] as f64).abs() / (1.0 + num.abs());
            worst = worst.max(err);
            assert!(
                err < 3e-3,
                "{what}[{i}]: analytic {} vs finite differences {num}",
                analytic[i]
            );
        }
        assert!(worst.is_finite());
    }

    #[test]
    fn linear_backward_matches_finite_differences() {
        let (n, din, dout) = (5, 7, 3);
        let x = vals(n * din, 1);
        let w = vals(dout * din, 2);
        let b = vals(dout, 3);
        let r = vals(n * dout, 4);
        let (mut dw, mut db, mut dx) = (vec![0.0; w.len()], vec![0.0; dout], vec![9.0; x.len()]);
        linear_bwd(
            &x,
            &w,
            &r,
            &mut dw,
            Some(&mut db),
            Some((&mut dx, false)),
            n,
            din,
        );
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; n * dout];
            linear_fwd(x, w, Some(b), &mut y, n, din);
            y
        };
        check(&x, &dx, &|x| fwd(x, &w, &b), &r, "dx");
        check(&w, &dw, &|w| fwd(&x, w, &b), &r, "dw");
        check(&b, &db, &|b| fwd(&x, &w, b), &r, "db");
        // gradients add up over calls; dx can be added to
        let mut dx2 = dx.clone();
        linear_bwd(&x, &w, &r, &mut dw, None, Some((&mut dx2, true)), n, din);
        let mut dw1 = vec![0.0; w.len()];
        linear_bwd(&x, &w, &r, &mut dw1, None, None, n, din);
        for ((a, b), c) in dw.iter().zip(&dw1).zip(dx2.iter().zip(&dx)) {
            assert!((a - 2.0 * b).abs() < 1e-5 && (c.0 - 2.0 * c.1).abs() < 1e-5);
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences() {
        let (n, dim) = (4, 6);
        let x: Vec<f32> = vals(n * dim, 5).iter().map(|v| 3.0 * v + 0.5).collect();
        let g: Vec<f32> = vals(dim, 6).iter().map(|v| 1.0 + v).collect();
        let b = vals(dim, 7);
        let r = vals(n * dim, 8);
        let fwd = |x: &[f32], g: &[f32], b: &[f32]| {
            let (mut y, mut h, mut rs) = (vec![0.0; n * dim], vec![0.0; n * dim], vec![0.0; n]);
            layer_norm_fwd(x, g, b, &mut y, &mut h, &mut rs, dim);
            (y, h, rs)
        };
        let (_, h, rs) = fwd(&x, &g, &b);
        let (mut dg, mut db, mut dx) = (vec![0.0; dim], vec![0.0; dim], vec![0.0; n * dim]);
        layer_norm_bwd(&r, &h, &rs, &g, &mut dg, &mut db, &mut dx, dim);
        check(&x, &dx, &|x| fwd(x, &g, &b).0, &r, "dx");
        check(&g, &dg, &|g| fwd(&x, g, &b).0, &r, "dg");
        check(&b, &db, &|b| fwd(&x, &g, b).0, &r, "db");
    }

    #[test]
    fn gelu_backward_matches_finite_differences() {
        let u: Vec<f32> = vals(40, 9).iter().map(|v| 4.0 * v).collect();
        let r = vals(40, 10);
        let mut du = vec![0.0; 40];
        gelu_bwd(&u, &r, &mut du);
        let f = |u: &[f32]| {
            let mut g = vec![0.0; u.len()];
            gelu_tanh_fwd(u, &mut g);
            g
        };
        check(&u, &du, &f, &r, "du");
        // the tanh form, at a few known points (PyTorch's gelu(approximate="tanh"))
        let g = f(&[-3.0, -1.0, 0.0, 0.5, 2.0]);
        let want = [-0.003_637_4, -0.158_808, 0.0, 0.345_714, 1.954_598];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn cross_entropy_and_its_gradient() {
        let (n, v) = (4, 5);
        let logits: Vec<f32> = vals(n * v, 11).iter().map(|x| 3.0 * x).collect();
        let targets = [2, IGNORE, 0, 4];
        let mut dl = vec![7.0; n * v];
        let (loss, scored) = cross_entropy(&logits, &targets, v, Some(&mut dl));
        assert_eq!(scored, 3);
        // by hand, in f64
        let mut want = 0.0f64;
        for (r, &t) in targets.iter().enumerate() {
            if t == IGNORE {
                continue;
            }
            let row = &logits[r * v..][..v];
            let s: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            want += s.ln() - row[t as usize] as f64;
        }
        assert!((loss as f64 - want / 3.0).abs() < 1e-5);
        assert!(
            dl[v..2 * v].iter().all(|&d| d == 0.0),
            "ignored row has no gradient"
        );
        let f = |l: &[f32]| vec![cross_entropy(l, &targets, v, None).0];
        check(&logits, &dl, &f, &[1.0], "dlogits");
    }
}
