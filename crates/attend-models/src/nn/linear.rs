//! Linear layers, `y = x · Wᵀ + b`, `W` in PyTorch's `[out × in]` layout.
//!
//! - [`Linear`]: inference with a weight packed once, at load, for `attend-kernels`' GEMM
//!   (`PackedMatrix`); bias, GELU and residual are applied by the GEMM's epilogue to each
//!   finished piece of `y` while it is in cache — no further passes;
//! - [`linear_fwd`]: the trainable layer's forward, on the strided sgemm (its weights change
//!   every step, so packing once buys nothing); its backward is `crate::train::layers`'.

use attend_kernels::gemm::sgemm_strided;
use attend_kernels::{Kern, PackedMatrix};

use crate::{Error, Result};

/// A linear layer with its weight packed for the GEMM.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `W`, packed.
    pub weight: PackedMatrix,
    /// `b`, `out` long.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Packs `w` (`out × in`, row-major) with an optional bias.
    pub fn new(w: &[f32], out: usize, inp: usize, bias: Option<Vec<f32>>) -> Result<Linear> {
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(Error::Invalid(format!("a bias of {} for {out}", b.len())));
            }
        }
        Ok(Linear {
            weight: PackedMatrix::pack(w, out, inp)?,
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.n()
    }

    /// `x · Wᵀ + b (+ residual)` for `rows` rows.
    pub fn forward(&self, x: &[f32], rows: usize, residual: Option<&[f32]>) -> Result<Vec<f32>> {
        linear(x, &self.weight, self.bias.as_deref(), residual, rows)
    }

    /// `gelu(x · Wᵀ + b)` for `rows` rows.
    pub fn forward_gelu(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        linear_gelu(x, &self.weight, self.bias.as_deref(), rows)
    }
}

/// `y[rows × out] = x[rows × in] · wᵀ + b (+ residual)`, `w` packed.
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
            return Err(Error::Invalid(format!(
                "a residual of {} for {rows} × {d_out}",
                res.len()
            )));
        }
    }
    if let Some(b) = b {
        if b.len() != d_out {
            return Err(Error::Invalid(format!("a bias of {} for {d_out}", b.len())));
        }
    }
    let mut y = vec![0.0f32; rows * d_out];
    let kern = Kern::default();
    let epi = |r: usize, c0: usize, v: &mut [f32]| {
        let n = v.len();
        let bias = b.map(|b| &b[c0..c0 + n]);
        let res = residual.map(|res| &res[r * d_out + c0..][..n]);
        kern.epilogue(v, bias, gelu, res);
    };
    attend_kernels::matmul_packed_map(x, rows, w, &mut y, &epi)?;
    Ok(y)
}

/// `y[n × out] = x[n × in] · wᵀ (+ b)`, `w` being `[out × in]` and unpacked (the strided
/// sgemm: work split over rows and columns only, so the same bits on any thread count).
pub fn linear_fwd(x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32], n: usize, din: usize) {
    let dout = w.len() / din;
    sgemm_strided((n, dout, din), x, (din, 1), w, (1, din), y, false);
    if let Some(b) = b {
        for row in y[..n * dout].chunks_exact_mut(dout) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::activations::gelu_erf;
    use attend_kernels::Isa;

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
    fn epilogue_on_every_isa_matches_its_twin() {
        let v: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) / 4.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 5) as f32 * 0.1).collect();
        let r: Vec<f32> = (0..37).map(|i| (i % 3) as f32 - 1.0).collect();
        let scalar = Isa::Scalar.kern().unwrap();
        for isa in Isa::available() {
            for gelu in [false, true] {
                let (mut a, mut s) = (v.clone(), v.clone());
                isa.kern()
                    .unwrap()
                    .epilogue(&mut a, Some(&b), gelu, Some(&r));
                scalar.epilogue(&mut s, Some(&b), gelu, Some(&r));
                for (x, y) in a.iter().zip(&s) {
                    assert!(
                        (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                        "{isa:?}: {x} vs {y}"
                    );
                }
                // and the formula itself
                for i in 0..37 {
                    let pre = v[i] + b[i];
                    let want = if gelu { gelu_erf(pre) } else { pre } + r[i];
                    assert!((s[i] - want).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn linear_gelu_applies_bias_then_gelu() {
        let w = PackedMatrix::pack(&[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
        let y = linear_gelu(&[0.5, -1.0], &w, Some(&[0.5, 0.0]), 1).unwrap();
        assert_eq!(y, vec![gelu_erf(1.0), gelu_erf(-1.0)]);
        assert!(linear(&[1.0, 2.0], &w, Some(&[1.0]), None, 1).is_err());
    }

    #[test]
    fn linear_adds_bias() {
        // x = [1, 2], w = [[1, 0], [0, 1], [1, 1]], b = [0, 1, 2]
        let l = Linear::new(
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            3,
            2,
            Some(vec![0.0, 1.0, 2.0]),
        )
        .unwrap();
        assert_eq!(
            l.forward(&[1.0, 2.0], 1, None).unwrap(),
            vec![1.0, 3.0, 5.0]
        );
        assert!(Linear::new(&[1.0; 6], 3, 2, Some(vec![0.0])).is_err());
    }

    #[test]
    fn the_unpacked_forward_matches_a_triple_loop() {
        let (n, din, dout) = (5, 7, 3);
        let x: Vec<f32> = (0..n * din).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..dout * din)
            .map(|i| ((i * 5) % 11) as f32 - 5.0)
            .collect();
        let mut y = vec![0.0; n * dout];
        linear_fwd(&x, &w, Some(&[1.0, 2.0, 3.0]), &mut y, n, din);
        for r in 0..n {
            for j in 0..dout {
                let want: f32 = (0..din).map(|t| x[r * din + t] * w[j * din + t]).sum();
                assert_eq!(y[r * dout + j], want + (j + 1) as f32);
            }
        }
    }
}
