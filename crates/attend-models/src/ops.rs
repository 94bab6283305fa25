//! Tensor operations around the attention kernel: linear layers, layer norm, GELU. Rows are
//! tokens, row-major `f32`.

use attend::PackedMatrix;

use crate::Result;

/// `c[m × n] = a[m × k] · bᵀ` with `b` as `[n × k]`, row-major, on the current rayon pool (the
/// `gemm` crate's sgemm). Panics if a buffer is shorter than its shape.
pub fn matmul_bt(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    crate::sys::matmul_bt(a, b, c, m, k, n)
}

/// `y[rows × out] = act(x[rows × in] · wᵀ + b) (+ residual)`, with `w` packed from
/// `[out × in]` (PyTorch's layout) once, at load. Bias, GELU and residual are applied by the
/// GEMM's epilogue to each finished piece of `y` while it is in cache: no further passes.
pub fn linear(
    x: &[f32],
    w: &PackedMatrix,
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
) -> Result<Vec<f32>> {
    linear_act(x, w, b, residual, false, rows)
}

/// [`linear`] with GELU (applied before any residual).
pub fn linear_gelu(
    x: &[f32],
    w: &PackedMatrix,
    b: Option<&[f32]>,
    rows: usize,
) -> Result<Vec<f32>> {
    linear_act(x, w, b, None, true, rows)
}

fn linear_act(
    x: &[f32],
    w: &PackedMatrix,
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
    gelu: bool,
    rows: usize,
) -> Result<Vec<f32>> {
    let d_out = w.n();
    if let Some(res) = residual {
        if res.len() != rows * d_out {
            return Err(crate::Error::Invalid(format!(
                "a residual of {} for {rows} × {d_out}",
                res.len()
            )));
        }
    }
    if let Some(b) = b {
        if b.len() != d_out {
            return Err(crate::Error::Invalid(format!(
                "a bias of {} for {d_out}",
                b.len()
            )));
        }
    }
    let mut y = vec![0.0f32; rows * d_out];
    let epi = |r: usize, c0: usize, v: &mut [f32]| {
        let n = v.len();
        let bias = b.map(|b| &b[c0..c0 + n]);
        let res = residual.map(|res| &res[r * d_out + c0..][..n]);
        if !crate::simd_q::epilogue(v, bias, gelu, res) {
            epilogue_scalar(v, bias, gelu, res);
        }
    };
    attend::matmul_packed_map(x, rows, w, &mut y, &epi)?;
    Ok(y)
}

/// `v = act(v + bias) + residual` on one piece of a linear layer's output (slices as long as
/// `v`): the twin of the AVX2 build in `simd_q`.
#[inline(always)]
pub fn epilogue_scalar(v: &mut [f32], bias: Option<&[f32]>, gelu: bool, residual: Option<&[f32]>) {
    if let Some(b) = bias {
        for (e, bb) in v.iter_mut().zip(b) {
            *e += bb;
        }
    }
    if gelu {
        gelu_scalar(v);
    }
    if let Some(res) = residual {
        for (e, rr) in v.iter_mut().zip(res) {
            *e += rr;
        }
    }
}

/// Rows per parallel task in the row-wise operations.
const ROWS_PER_TASK: usize = 64;

/// Layer norm over each row of `dim` elements, in place, in parallel over rows. Mean and
/// variance in two passes (no cancellation), each summed in 8 partial sums.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], dim: usize, eps: f32) {
    use rayon::prelude::*;
    x.par_chunks_mut(dim * ROWS_PER_TASK).for_each(|rows| {
        for row in rows.chunks_exact_mut(dim) {
            let mean = sum8(row.iter().copied()) / dim as f32;
            let var = sum8(row.iter().map(|&v| (v - mean) * (v - mean))) / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    });
}

/// A sum in 8 interleaved partial sums (vectorisable, and more accurate than one running sum).
#[inline]
fn sum8(values: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0.0f32; 8];
    for (i, v) in values.enumerate() {
        acc[i % 8] += v;
    }
    acc.iter().sum()
}

/// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (BERT's `"gelu"`), in place, in
/// parallel over chunks. Branch-free, so the compiler vectorises it.
pub fn gelu(x: &mut [f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(4096).for_each(gelu_slice);
}

/// [`gelu`] on one slice, on this thread: the same code compiled for AVX2+FMA where the
/// processor has them (8 lanes instead of SSE2's 4), else as it is.
#[inline]
pub fn gelu_slice(x: &mut [f32]) {
    if !crate::simd_q::gelu(x) {
        gelu_scalar(x);
    }
}

/// [`gelu_slice`] for the baseline instruction set: the twin of the AVX2 build.
#[inline(always)]
pub fn gelu_scalar(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// The error function to an absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26; a few
/// 1e-7 once evaluated in f32) — far below what f32 activations resolve.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * exp_neg(-z * z);
    e.copysign(x)
}

/// `eˣ` for `x ≤ 0`, relative error below 3e-7 (2 ulp), flushing to 0 below -87. Branch-free
/// (round-to-nearest by the 1.5·2²³ trick, a degree-6 polynomial on [-ln2/2, ln2/2], the
/// power of two built in the exponent bits), so that loops over it vectorise.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    // r = x - n·ln2, with ln2 split in two so the product is exact
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // n sits in the low mantissa bits of `shifted`; integer ops only, no float→int conversion
    let ni = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (-1.5, -0.966_105_146_475_310_7),
            (2.5, 0.999_593_047_982_555),
            (4.0, 0.999_999_984_582_742_1),
        ] {
            let got = erf(x as f32) as f64;
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got} vs {want}");
        }
    }

    #[test]
    fn layer_norm_normalises() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 4, 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn exp_neg_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f64 / 200_000.0;
            let got = exp_neg(x as f32) as f64;
            let want = (x as f32 as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(-200.0), exp_neg(-87.0));
    }

    #[test]
    fn linear_adds_residual() {
        let w = PackedMatrix::pack(&[1.0, 1.0], 1, 2).unwrap();
        let y = linear(&[1.0, 2.0], &w, Some(&[0.5]), Some(&[10.0]), 1).unwrap();
        assert_eq!(y, vec![13.5]);
        // many rows: every task's rows get their own residual
        let rows = 300;
        let res: Vec<f32> = (0..rows).map(|r| r as f32).collect();
        let x = vec![1.0; rows];
        let w = PackedMatrix::pack(&[2.0], 1, 1).unwrap();
        let y = linear(&x, &w, None, Some(&res), rows).unwrap();
        assert!(y.iter().enumerate().all(|(r, &v)| v == r as f32 + 2.0));
    }

    #[test]
    fn gelu_on_avx2_matches_its_twin() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 50.0).collect();
        let mut a = x.clone();
        let mut b = x.clone();
        gelu_slice(&mut a);
        gelu_scalar(&mut b);
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
                "at {}: {p} vs {q}",
                x[i]
            );
        }
        // and against erf's definition at a few points: GELU(1) = Φ(1) = 0.8413447
        let mut one = [1.0f32, -1.0, 0.0];
        gelu_slice(&mut one);
        assert!((one[0] - 0.841_344_7).abs() < 1e-6 && (one[1] + 0.158_655_25).abs() < 1e-6);
        assert_eq!(one[2], 0.0);
    }

    #[test]
    fn epilogue_on_avx2_matches_its_twin() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) / 4.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 * 0.1).collect();
        let r: Vec<f32> = (0..37).map(|i| (i % 3) as f32 - 1.0).collect();
        for gelu in [false, true] {
            let (mut a, mut s) = (v.clone(), v.clone());
            if !crate::simd_q::epilogue(&mut a, Some(&b), gelu, Some(&r)) {
                return; // no AVX2 here: only the twin runs
            }
            epilogue_scalar(&mut s, Some(&b), gelu, Some(&r));
            for (x, y) in a.iter().zip(&s) {
                assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn linear_gelu_applies_bias_then_gelu() {
        let w = PackedMatrix::pack(&[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
        let y = linear_gelu(&[0.5, -1.0], &w, Some(&[0.5, 0.0]), 1).unwrap();
        let g = |v: f32| 0.5 * v * (1.0 + erf(v / std::f32::consts::SQRT_2));
        assert_eq!(y, vec![g(1.0), g(-1.0)]);
        assert!(linear(&[1.0, 2.0], &w, Some(&[1.0]), None, 1).is_err());
    }

    #[test]
    fn linear_adds_bias() {
        // x = [1, 2], w = [[1, 0], [0, 1], [1, 1]], b = [0, 1, 2]
        let w = PackedMatrix::pack(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2).unwrap();
        let y = linear(&[1.0, 2.0], &w, Some(&[0.0, 1.0, 2.0]), None, 1).unwrap();
        assert_eq!(y, vec![1.0, 3.0, 5.0]);
    }
}
