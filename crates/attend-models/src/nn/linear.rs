//! Linear layers, `y = x · Wᵀ + b`, `W` in PyTorch's `[out × in]` layout.
//!
//! - [`Linear`]: inference with a weight prepared once, at load: packed for `attend-kernels`'
//!   GEMM (`PackedMatrix`, [`Precision::Float32`]), or quantised to `Q8_0` blocks for the
//!   integer dot products ([`Precision::Int8`], repacked in tiles of 16 rows where the
//!   processor has VNNI). Bias, GELU and residual are applied by the epilogue to each finished
//!   piece of `y` while it is in cache — no further passes;
//! - [`linear_fwd`]: the trainable layer's forward, on the strided sgemm (its weights change
//!   every step, so packing once buys nothing); its backward is `crate::train::layers`'.

use attend_kernels::gemm::sgemm_strided;
use attend_kernels::quant::{
    qmatmul, quantize_q8_0, quantize_q8_into, BlockQ8, BlockQ8_0, QBlocks, QK,
};
use attend_kernels::tiled::{tiled_matmul, TiledMatrix};
use attend_kernels::{Kern, PackedMatrix};
use rayon::prelude::*;

use crate::{Error, Result};

/// How a [`Linear`] layer keeps its weight and multiplies by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// `f32` weights and activations (the reference's arithmetic, up to summation order).
    #[default]
    Float32,
    /// Weights quantised to 8 bits per 32 (`Q8_0`: an `f16` scale and 32 signed bytes, as
    /// llama.cpp's), activations quantised the same way per row at each product, the dots in
    /// integers: a quarter of the weight bytes, and several times the arithmetic per
    /// instruction where the processor has VNNI. Layers whose input width is not a multiple
    /// of 32 stay `f32`.
    Int8,
}

/// A layer's weight, as prepared at load.
#[derive(Clone, Debug)]
enum Weight {
    /// Packed for the `f32` GEMM.
    F32(PackedMatrix),
    /// `Q8_0` blocks, row after row, or in tiles of 16 rows where the processor multiplies
    /// those natively (about one byte a weight either way).
    Int8 {
        q: Int8Weight,
        out: usize,
        inp: usize,
        /// `1/s_j` per input column: the activations are divided by `s_j` before they are
        /// quantised, the weights' columns were multiplied by it (empty: no smoothing).
        inv_smooth: Vec<f32>,
    },
}

/// An int8 weight in the layout the product reads.
#[derive(Clone, Debug)]
enum Int8Weight {
    /// `Q8_0` blocks, row after row (`qmatmul`).
    Rows(Vec<BlockQ8_0>),
    /// The same repacked in tiles of 16 rows (`tiled_matmul`, VNNI).
    Tiled(TiledMatrix),
}

/// A linear layer with its weight prepared for the product ([`Precision`]).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Weight,
    /// `b`, `out` long.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// Packs `w` (`out × in`, row-major) with an optional bias.
    pub fn new(w: &[f32], out: usize, inp: usize, bias: Option<Vec<f32>>) -> Result<Linear> {
        Linear::new_with(w, out, inp, bias, Precision::Float32)
    }

    /// [`Linear::new`] at a chosen [`Precision`]. Int8 weights that are not finite, or whose
    /// block scale overflows `f16`, are refused.
    pub fn new_with(
        w: &[f32],
        out: usize,
        inp: usize,
        bias: Option<Vec<f32>>,
        precision: Precision,
    ) -> Result<Linear> {
        if let Some(b) = &bias {
            if b.len() != out {
                return Err(Error::Invalid(format!("a bias of {} for {out}", b.len())));
            }
        }
        if w.len() != out * inp {
            return Err(Error::Invalid(format!(
                "a weight of {} values for {out} × {inp}",
                w.len()
            )));
        }
        if precision == Precision::Int8 {
            return Linear::int8(w, out, inp, bias, None);
        }
        Ok(Linear {
            weight: Weight::F32(PackedMatrix::pack(w, out, inp)?),
            bias,
        })
    }

    /// `w` (`out × in`) at [`Precision::Int8`]. With `act_max`, each input column's largest
    /// magnitude seen on calibration text, the difficulty of quantising is shared between
    /// activations and weights (SmoothQuant, Xiao et al. 2023, α = ½): column `j` of the
    /// weight is multiplied by `s_j = √(act_max_j / w_max_j)` and activations are divided by
    /// it, which leaves the product unchanged and tames the few columns whose activations are
    /// far larger than the rest of their block. A layer whose input width is not a multiple
    /// of 32 stays `f32`.
    pub fn int8(
        w: &[f32],
        out: usize,
        inp: usize,
        bias: Option<Vec<f32>>,
        act_max: Option<&[f32]>,
    ) -> Result<Linear> {
        check_epilogue(bias.as_deref(), None, 0, out)?;
        if w.len() != out * inp {
            return Err(Error::Invalid(format!(
                "a weight of {} values for {out} × {inp}",
                w.len()
            )));
        }
        if inp == 0 || !inp.is_multiple_of(QK) {
            return Linear::new(w, out, inp, bias);
        }
        let mut smooth = Vec::new();
        if let Some(a) = act_max {
            if a.len() != inp {
                return Err(Error::Invalid(format!(
                    "{} activation maxima for {inp} input columns",
                    a.len()
                )));
            }
            let mut w_max = Vec::new();
            column_max(&mut w_max, w, inp);
            smooth = a
                .iter()
                .zip(&w_max)
                .map(|(&a, &m)| {
                    let s = (a / m).sqrt();
                    // a dead or non-finite column keeps its scale; the others move by at most
                    // 100× (a column quiet on the calibration text but loud later would
                    // otherwise swamp its block)
                    if s.is_finite() && s > 0.0 {
                        s.clamp(1e-2, 1e2)
                    } else {
                        1.0
                    }
                })
                .collect();
        }
        let scaled: Vec<f32>;
        let w = if smooth.is_empty() {
            w
        } else {
            scaled = w
                .chunks_exact(inp)
                .flat_map(|row| row.iter().zip(&smooth).map(|(v, s)| v * s))
                .collect();
            &scaled
        };
        let mut blocks = Vec::new();
        quantize_q8_0(w, &mut blocks)?;
        let q = if Kern::best().tiles_natively() && out > 0 {
            Int8Weight::Tiled(TiledMatrix::from_q(QBlocks::Q8_0(&blocks), out)?)
        } else {
            Int8Weight::Rows(blocks)
        };
        Ok(Linear {
            weight: Weight::Int8 {
                q,
                out,
                inp,
                inv_smooth: smooth.iter().map(|s| 1.0 / s).collect(),
            },
            bias,
        })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match &self.weight {
            Weight::F32(p) => p.n(),
            Weight::Int8 { out, .. } => *out,
        }
    }

    /// The precision the weight is kept in.
    pub fn precision(&self) -> Precision {
        match self.weight {
            Weight::F32(_) => Precision::Float32,
            Weight::Int8 { .. } => Precision::Int8,
        }
    }

    /// `x · Wᵀ + b (+ residual)` for `rows` rows.
    pub fn forward(&self, x: &[f32], rows: usize, residual: Option<&[f32]>) -> Result<Vec<f32>> {
        self.forward_act(x, rows, residual, false)
    }

    /// `gelu(x · Wᵀ + b)` for `rows` rows.
    pub fn forward_gelu(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.forward_act(x, rows, None, true)
    }

    fn forward_act(
        &self,
        x: &[f32],
        rows: usize,
        residual: Option<&[f32]>,
        gelu: bool,
    ) -> Result<Vec<f32>> {
        let b = self.bias.as_deref();
        let (q, out, inp, inv_smooth) = match &self.weight {
            Weight::F32(w) => return linear_act(x, w, b, residual, gelu, rows),
            Weight::Int8 {
                q,
                out,
                inp,
                inv_smooth,
            } => (q, *out, *inp, inv_smooth),
        };
        check_epilogue(b, residual, rows, out)?;
        if x.len() != rows * inp {
            return Err(Error::Invalid(format!(
                "an input of {} values for {rows} × {inp}",
                x.len()
            )));
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        // each row smoothed and quantised per 32 (a NaN or an infinity is refused, never
        // zeroed), into one buffer; a smoothed row goes through one scratch row per task
        let per = inp / QK;
        let mut qs = vec![BlockQ8::default(); rows * per];
        let quantise = |scratch: &mut Vec<f32>, (r, q): (&[f32], &mut [BlockQ8])| {
            if inv_smooth.is_empty() {
                quantize_q8_into(r, q)
            } else {
                scratch.clear();
                scratch.extend(r.iter().zip(inv_smooth).map(|(v, s)| v * s));
                quantize_q8_into(scratch, q)
            }
        };
        // a few rows (one short sentence) on this thread: waking the pool costs more than the
        // work; the same bits either way
        let few = rows * inp.max(out) < SERIAL_BELOW;
        if few {
            let mut scratch = Vec::new();
            x.chunks(inp)
                .zip(qs.chunks_mut(per))
                .try_for_each(|rq| quantise(&mut scratch, rq))?;
        } else {
            x.par_chunks(inp)
                .zip(qs.par_chunks_mut(per))
                .try_for_each_init(Vec::new, quantise)?;
        }
        let refs: Vec<&[BlockQ8]> = qs.chunks(per).collect();
        let mut y = vec![0.0f32; rows * out];
        let kern = Kern::best();
        match q {
            Int8Weight::Tiled(t) => tiled_matmul(kern, t, &refs, &mut y)?,
            Int8Weight::Rows(w) => qmatmul(kern, QBlocks::Q8_0(w), out, &refs, &mut y)?,
        }
        if out > 0 {
            let epilogue = |(r, v): (usize, &mut [f32])| {
                let res = residual.map(|res| &res[r * out..][..out]);
                kern.epilogue(v, b, gelu, res);
            };
            if few {
                y.chunks_mut(out).enumerate().for_each(epilogue);
            } else {
                y.par_chunks_mut(out).enumerate().for_each(epilogue);
            }
        }
        Ok(y)
    }
}

/// `m[j] = max(m[j], |x[r·n + j]|)` over the rows of `x`, `n` wide (`m` grown to `n` with
/// zeros): a weight's column maxima, or activations' over calibration text.
pub fn column_max(m: &mut Vec<f32>, x: &[f32], n: usize) {
    m.resize(n, 0.0);
    for row in x.chunks_exact(n) {
        m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
    }
}

/// Values below which an int8 layer quantises its rows and applies its epilogue on the
/// calling thread.
const SERIAL_BELOW: usize = 1 << 15;

/// Checks a bias and a residual against the output's shape.
fn check_epilogue(
    b: Option<&[f32]>,
    residual: Option<&[f32]>,
    rows: usize,
    d_out: usize,
) -> Result<()> {
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
    Ok(())
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
    check_epilogue(b, residual, rows, d_out)?;
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

    /// The int8 layer against the float32 one on the same weights: bias, GELU and residual
    /// applied alike, the products within a few 8-bit steps, with and without smoothing (a
    /// column whose activations are 50× the rest); a row with a NaN refused; an input width
    /// that is not whole blocks kept in f32; one row and many rows giving the same bits.
    #[test]
    fn int8_layers_follow_the_float32_product() {
        use attend_kernels::testing::uniform as rnd;
        let (out, inp, rows) = (40, 96, 37);
        let w = rnd(out * inp, 5);
        let b = rnd(out, 6);
        let mut x = rnd(rows * inp, 7);
        x.iter_mut().step_by(inp).for_each(|v| *v *= 50.0);
        let res = rnd(rows * out, 8);
        let f = Linear::new(&w, out, inp, Some(b.clone())).unwrap();
        let mut act_max = Vec::new();
        column_max(&mut act_max, &x, inp);
        let plain = Linear::new_with(&w, out, inp, Some(b.clone()), Precision::Int8).unwrap();
        let smooth = Linear::int8(&w, out, inp, Some(b.clone()), Some(&act_max)).unwrap();
        assert_eq!(plain.precision(), Precision::Int8);
        assert_eq!(smooth.out_features(), out);
        let want = f.forward(&x, rows, Some(&res)).unwrap();
        let want_g = f.forward_gelu(&x, rows).unwrap();
        let mut errs = [0.0f32; 2];
        for (k, l) in [&plain, &smooth].into_iter().enumerate() {
            let got = l.forward(&x, rows, Some(&res)).unwrap();
            let got_g = l.forward_gelu(&x, rows).unwrap();
            for r in 0..rows {
                // |Σ w·x| ≤ Σ|w·x|: the error is a few steps of 1/127 of that
                let scale: f32 = (0..out)
                    .map(|j| {
                        (0..inp)
                            .map(|k| (w[j * inp + k] * x[r * inp + k]).abs())
                            .sum::<f32>()
                    })
                    .fold(0.0, f32::max);
                for j in 0..out {
                    let (a, e) = (got[r * out + j], want[r * out + j]);
                    errs[k] = errs[k].max((a - e).abs() / scale);
                    assert!((a - e).abs() <= 0.02 * scale, "{k}: {a} vs {e}");
                    let (a, e) = (got_g[r * out + j], want_g[r * out + j]);
                    assert!((a - e).abs() <= 0.02 * scale, "{k} gelu: {a} vs {e}");
                }
            }
            // one row alone: the same bits as in the batch
            let one = l
                .forward(&x[5 * inp..6 * inp], 1, Some(&res[5 * out..6 * out]))
                .unwrap();
            assert_eq!(one, got[5 * out..6 * out]);
        }
        assert!(errs[1] < errs[0], "smoothing did not help: {errs:?}");
        x[3] = f32::NAN;
        assert!(smooth.forward(&x, rows, None).is_err());
        assert!(smooth.forward(&x[..inp - 1], 1, None).is_err());
        let odd = Linear::new_with(&w[..out * 90], out, 90, None, Precision::Int8).unwrap();
        assert_eq!(odd.precision(), Precision::Float32);
        assert!(Linear::int8(&w, out, inp, None, Some(&act_max[1..])).is_err());
        assert!(Linear::int8(&w[1..], out, inp, None, None).is_err());
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
