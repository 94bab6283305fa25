//! Tensor operations around the attention kernel: linear layers, layer norm, GELU. Rows are
//! tokens, row-major `f32`.

/// `c[m × n] = a[m × k] · bᵀ` with `b` as `[n × k]`, row-major, on the current rayon pool (the
/// `gemm` crate's sgemm). Panics if a buffer is shorter than its shape.
pub fn matmul_bt(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    crate::sys::matmul_bt(a, b, c, m, k, n)
}

/// `y[rows × out] = x[rows × in] · wᵀ + b`, with `w` as `[out × in]` (PyTorch's layout).
pub fn linear(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * d_out];
    crate::sys::matmul_bt(x, w, &mut y, rows, d_in, d_out);
    if let Some(b) = b {
        for row in y.chunks_exact_mut(d_out) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
    y
}

/// Layer norm over each row of `dim` elements, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], dim: usize, eps: f32) {
    for row in x.chunks_exact_mut(dim) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = ((*v as f64 - mean) * inv) as f32 * g + b;
        }
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (BERT's `"gelu"`), in place, in
/// parallel over chunks.
pub fn gelu(x: &mut [f32]) {
    use rayon::prelude::*;
    x.par_chunks_mut(4096).for_each(|c| {
        for v in c {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// The error function to an absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26; a few
/// 1e-7 once evaluated in f32) — far
/// below what f32 activations resolve.
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let e = 1.0 - poly * (-z * z).exp();
    e.copysign(x)
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
    fn linear_adds_bias() {
        // x = [1, 2], w = [[1, 0], [0, 1], [1, 1]], b = [0, 1, 2]
        let y = linear(
            &[1.0, 2.0],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            Some(&[0.0, 1.0, 2.0]),
            1,
            2,
            3,
        );
        assert_eq!(y, vec![1.0, 3.0, 5.0]);
    }
}
