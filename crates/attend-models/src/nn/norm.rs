//! Layer norm (BERT, the toy models) and RMS norm (Llama), over each row of `dim` features.

use rayon::prelude::*;

/// Rows per parallel task. Fixed, so that the results do not depend on the thread count.
const ROWS_PER_TASK: usize = 64;

/// Layer norm in place, `x = (x − μ)/σ · g + b` with `σ² = var + eps`, in parallel over rows;
/// with `stats`, also `xhat = (x − μ)/σ` and `1/σ` per row (what the backward needs).
///
/// Mean and variance in two passes (no cancellation), each a plain left-to-right sum per row
/// — the order the training's bit-for-bit reproducibility rests on — computed for four rows
/// at once so that the four dependency chains overlap.
pub fn layer_norm(
    x: &mut [f32],
    g: &[f32],
    b: &[f32],
    dim: usize,
    eps: f32,
    stats: Option<(&mut [f32], &mut [f32])>,
) {
    let rows = x.len() / dim;
    let task = ROWS_PER_TASK * dim;
    match stats {
        None => x[..rows * dim].par_chunks_mut(task).for_each(|xc| {
            norm_rows(xc, g, b, dim, eps, None);
        }),
        Some((xhat, rstd)) => x[..rows * dim]
            .par_chunks_mut(task)
            .zip(xhat[..rows * dim].par_chunks_mut(task))
            .zip(rstd[..rows].par_chunks_mut(ROWS_PER_TASK))
            .for_each(|((xc, hc), rc)| norm_rows(xc, g, b, dim, eps, Some((hc, rc)))),
    }
}

/// [`layer_norm`] of `x` into `y`, keeping `xhat` and `1/σ` (the toy models' forward, eps 1e-5).
pub fn layer_norm_fwd(
    x: &[f32],
    g: &[f32],
    b: &[f32],
    y: &mut [f32],
    xhat: &mut [f32],
    rstd: &mut [f32],
    dim: usize,
) {
    const EPS: f32 = 1e-5;
    let n = y.len() / dim * dim;
    y[..n].copy_from_slice(&x[..n]);
    layer_norm(&mut y[..n], g, b, dim, EPS, Some((xhat, rstd)));
}

/// One task's rows: groups of four, then the rest one by one (same sums either way).
fn norm_rows(
    x: &mut [f32],
    g: &[f32],
    b: &[f32],
    dim: usize,
    eps: f32,
    mut stats: Option<(&mut [f32], &mut [f32])>,
) {
    let rows = x.len() / dim;
    let mut r = 0;
    while r < rows {
        let n = if rows - r >= 4 { 4 } else { 1 };
        let (mean, rs) = if n == 4 {
            moments::<4>(&x[r * dim..(r + 4) * dim], dim, eps)
        } else {
            let (m, s) = moments::<1>(&x[r * dim..(r + 1) * dim], dim, eps);
            ([m[0], 0.0, 0.0, 0.0], [s[0], 0.0, 0.0, 0.0])
        };
        for k in 0..n {
            let row = &mut x[(r + k) * dim..][..dim];
            let (mu, inv) = (mean[k], rs[k]);
            match &mut stats {
                Some((xhat, rstd)) => {
                    rstd[r + k] = inv;
                    let hr = &mut xhat[(r + k) * dim..][..dim];
                    for i in 0..dim {
                        hr[i] = (row[i] - mu) * inv;
                        row[i] = hr[i] * g[i] + b[i];
                    }
                }
                None => {
                    for ((v, gg), bb) in row.iter_mut().zip(g).zip(b) {
                        *v = (*v - mu) * inv * gg + bb;
                    }
                }
            }
        }
        r += n;
    }
}

/// Mean and `1/σ` of `N` consecutive rows, each sum left to right.
#[inline(always)]
fn moments<const N: usize>(x: &[f32], dim: usize, eps: f32) -> ([f32; N], [f32; N]) {
    let mut sum = [0.0f32; N];
    for i in 0..dim {
        for k in 0..N {
            sum[k] += x[k * dim + i];
        }
    }
    let mean = sum.map(|s| s / dim as f32);
    let mut sq = [0.0f32; N];
    for i in 0..dim {
        for k in 0..N {
            let d = x[k * dim + i] - mean[k];
            sq[k] += d * d;
        }
    }
    let rstd = sq.map(|s| 1.0 / (s / dim as f32 + eps).sqrt());
    (mean, rstd)
}

/// RMS norm of each row, `x / √(mean(x²) + eps) · w`, the mean accumulated in f64.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (o, row) in out.chunks_exact_mut(w.len()).zip(x.chunks_exact(w.len())) {
        let ms = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / w.len() as f64;
        let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * inv * g;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 4, 0.0, None);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    /// Grouped rows give the bits of the plain per-row formula, on every row count.
    #[test]
    fn grouped_rows_equal_the_plain_formula_bit_for_bit() {
        let dim = 37;
        for rows in [1, 3, 4, 5, 9, 70, 131] {
            let x: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 7919) % 1000) as f32 / 77.0 - 6.0)
                .collect();
            let g: Vec<f32> = (0..dim).map(|i| 1.0 + i as f32 / 50.0).collect();
            let b: Vec<f32> = (0..dim).map(|i| i as f32 / 100.0 - 0.2).collect();
            let (mut y, mut h, mut r) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; rows]);
            layer_norm_fwd(&x, &g, &b, &mut y, &mut h, &mut r, dim);
            let mut y2 = x.clone();
            layer_norm(&mut y2, &g, &b, dim, 1e-5, None);
            for (row, xr) in x.chunks_exact(dim).enumerate() {
                let mean = xr.iter().sum::<f32>() / dim as f32;
                let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
                let inv = 1.0 / (var + 1e-5).sqrt();
                assert_eq!(r[row].to_bits(), inv.to_bits());
                for i in 0..dim {
                    let hv = (xr[i] - mean) * inv;
                    assert_eq!(h[row * dim + i].to_bits(), hv.to_bits());
                    assert_eq!(y[row * dim + i].to_bits(), (hv * g[i] + b[i]).to_bits());
                    assert_eq!(y2[row * dim + i].to_bits(), (hv * g[i] + b[i]).to_bits());
                }
            }
        }
    }

    #[test]
    fn rms_norm_by_hand() {
        let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0);
        let inv = 1.0 / (12.5f64).sqrt();
        assert!((y[0] as f64 - 3.0 * inv).abs() < 1e-6 && (y[1] as f64 - 8.0 * inv).abs() < 1e-6);
    }
}
