//! Activation rows and weight matrices in their stored types.

use attend_kernels::quant::{
    blocks, for_each_row, qmatmul, qmatmul_k, quantize_q8, quantize_q8k, BlockQ8, BlockQ8K,
    KBlocks, QBlocks, QK, QK_K,
};
use attend_kernels::tiled::{tiled_matmul, TiledMatrix};
use attend_kernels::Isa;

use super::{dequantize_row, GgmlType};
use crate::{Error, Result};

/// One row of activations, as `f32`, as `Q8` blocks of 32 and as `Q8_K` blocks of 256.
#[derive(Clone, Debug, Default)]
pub struct Activation {
    /// The values.
    pub f: Vec<f32>,
    /// The same, quantised per 32 (when the length is a multiple of 32).
    pub q: Vec<BlockQ8>,
    /// The same, quantised per 256, made on first use by a k-quant product
    /// ([`Activation::k`]).
    k: std::sync::OnceLock<Vec<BlockQ8K>>,
    /// Whether `q` was made (not an exact activation).
    quantised: bool,
}

impl Activation {
    /// Takes `x` as it is, unquantised: products with it dequantise each weight row and dot
    /// in `f32` (slow; what the reference implementations compute).
    pub fn exact(x: &[f32]) -> Activation {
        Activation {
            f: x.to_vec(),
            ..Activation::default()
        }
    }

    /// Whether this is an exact (unquantised) activation.
    pub fn is_exact(&self) -> bool {
        !self.quantised
    }

    /// Takes `x` and quantises it. A NaN or an infinity in `x` is refused
    /// (`attend_kernels::Error::NonFinite`), never quantised to zeros.
    pub fn new(x: &[f32]) -> std::result::Result<Activation, attend_kernels::Error> {
        let mut a = Activation {
            f: x.to_vec(),
            ..Activation::default()
        };
        a.quantised = true;
        if x.len().is_multiple_of(QK) {
            quantize_q8(x, &mut a.q)?;
        } else if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(attend_kernels::Error::NonFinite {
                what: "activations",
                index,
                value: x[index],
            });
        }
        Ok(a)
    }
}

impl Activation {
    /// The values quantised per 256 (`Q8_K`), made on the first call; empty for an exact
    /// activation or a length that is not a multiple of 256. The values were checked finite
    /// when the activation was made.
    pub fn k(&self) -> &[BlockQ8K] {
        self.k.get_or_init(|| {
            let mut k = Vec::new();
            if self.quantised && self.f.len().is_multiple_of(QK_K) {
                // finite (checked in `new`), so this cannot fail; an empty result would
                // only send the product down the exact path
                let _ = quantize_q8k(&self.f, &mut k);
            }
            k
        })
    }
}

/// A weight matrix as stored in the file: `rows` rows of `cols` elements of type `ty`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    /// Element type.
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `rows × ty.row_bytes(cols)` bytes.
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `data` holds `rows × cols` elements of `ty`, and that attend can multiply by it.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<QMatrix<'a>> {
        if !ty.supported() {
            return Err(Error::Invalid(format!(
                "ggml type {ty:?} is not supported yet ({} are)",
                GgmlType::SUPPORTED
            )));
        }
        let quantised = ty.block_elems() > 1;
        if !cols.is_multiple_of(ty.block_elems()) || (quantised && !cols.is_multiple_of(QK)) {
            return Err(Error::Invalid(format!(
                "{ty:?} rows of {cols} elements are not whole blocks"
            )));
        }
        if data.len() != rows * ty.row_bytes(cols) {
            return Err(Error::Invalid(format!(
                "a {rows} × {cols} {ty:?} matrix needs {} bytes, got {}",
                rows * ty.row_bytes(cols),
                data.len()
            )));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Row `r`'s bytes.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.ty.row_bytes(self.cols);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantises row `r` into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        dequantize_row(self.ty, self.row(r), out)
    }

    /// The blocks of a 32-element integer-dot type (`Q4_0`, `Q4_1`, `Q5_0`, `Q8_0`), `None`
    /// for the others.
    fn int_blocks(&self) -> Option<QBlocks<'a>> {
        Some(match self.ty {
            GgmlType::Q4_0 => QBlocks::Q4_0(blocks(self.data)?),
            GgmlType::Q4_1 => QBlocks::Q4_1(blocks(self.data)?),
            GgmlType::Q5_0 => QBlocks::Q5_0(blocks(self.data)?),
            GgmlType::Q8_0 => QBlocks::Q8_0(blocks(self.data)?),
            _ => return None,
        })
    }

    /// The blocks of a k-quant (`Q4_K`, `Q5_K`, `Q6_K`), `None` for the others.
    fn k_blocks(&self) -> Option<KBlocks<'a>> {
        Some(match self.ty {
            GgmlType::Q4_K => KBlocks::Q4K(blocks(self.data)?),
            GgmlType::Q5_K => KBlocks::Q5K(blocks(self.data)?),
            GgmlType::Q6_K => KBlocks::Q6K(blocks(self.data)?),
            _ => return None,
        })
    }

    /// The matrix repacked in tiles of 16 rows ([`TiledMatrix`]); `None` for float types.
    pub fn tiled(&self) -> Result<Option<TiledMatrix>> {
        let t = if let Some(w) = self.int_blocks() {
            TiledMatrix::from_q(w, self.rows)?
        } else if let Some(w) = self.k_blocks() {
            TiledMatrix::from_k(w, self.rows)?
        } else {
            return Ok(None);
        };
        Ok(Some(t))
    }

    /// [`QMatrix::matmul`] through `tiled`, this matrix repacked ([`QMatrix::tiled`]), with
    /// the activations quantised per 32 whatever the weights' type (k-quants included); exact
    /// activations, or ones of another length, take [`QMatrix::matmul`].
    pub fn matmul_tiled(
        &self,
        tiled: &TiledMatrix,
        xs: &[Activation],
        out: &mut [f32],
    ) -> Result<()> {
        let fits = tiled.rows() == self.rows && tiled.cols() == self.cols;
        if !fits || xs.iter().any(|x| x.q.len() * QK != self.cols) {
            return self.matmul(xs, out);
        }
        let qs: Vec<&[BlockQ8]> = xs.iter().map(|x| &x.q[..]).collect();
        Ok(tiled_matmul(attend_kernels::Kern::best(), tiled, &qs, out)?)
    }

    /// `out[t × rows + j] = row_j · xs[t]` for every activation row `t`: the weights are read
    /// once, in row blocks, in parallel; each block meets every activation row.
    pub fn matmul(&self, xs: &[Activation], out: &mut [f32]) -> Result<()> {
        self.matmul_with(xs, out, Isa::Auto)
    }

    /// [`QMatrix::matmul`] on a chosen instruction set.
    pub fn matmul_with(&self, xs: &[Activation], out: &mut [f32], isa: Isa) -> Result<()> {
        let n = xs.len();
        if out.len() != n * self.rows {
            return Err(Error::Invalid(format!(
                "output of {} for {n} × {}",
                out.len(),
                self.rows
            )));
        }
        if let Some(x) = xs.iter().find(|x| x.f.len() != self.cols) {
            return Err(Error::Invalid(format!(
                "an activation of {} for a matrix of {} columns",
                x.f.len(),
                self.cols
            )));
        }
        if let Some(w) = self
            .int_blocks()
            .filter(|_| xs.iter().all(|x| !x.q.is_empty()))
        {
            let qs: Vec<&[BlockQ8]> = xs.iter().map(|x| &x.q[..]).collect();
            return Ok(qmatmul(isa.kern()?, w, self.rows, &qs, out)?);
        }
        if self.k_blocks().is_some() {
            // the Q8_K rows, made once per activation, in parallel
            use rayon::prelude::*;
            xs.par_iter().for_each(|x| {
                x.k();
            });
        }
        if let Some(w) = self
            .k_blocks()
            .filter(|_| xs.iter().all(|x| !x.k().is_empty()))
        {
            let ks: Vec<&[BlockQ8K]> = xs.iter().map(|x| x.k()).collect();
            return Ok(qmatmul_k(isa.kern()?, w, self.rows, &ks, out)?);
        }
        // float rows, or exact activations: dequantise each row once, dot in f32
        Ok(for_each_row(self.rows, n, out, |j, dots, row| {
            row.resize(self.cols, 0.0);
            // sizes were checked in `new`
            if dequantize_row(self.ty, self.row(j), row).is_err() {
                row.fill(f32::NAN);
            }
            for (d, x) in dots.iter_mut().zip(xs) {
                *d = dot_f32(row, &x.f);
            }
        })?)
    }
}

/// `Σ a·b` in sixteen interleaved partial sums (a loop the compiler vectorises; one running
/// sum cannot be reordered, and is several times slower).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    use attend_kernels::testing::uniform as rnd;

    /// A random row of `blocks` blocks of `ty`.
    fn random_row(ty: GgmlType, blocks: usize, seed: u32) -> Vec<u8> {
        let r = rnd(blocks * 40, seed);
        let mut b = Vec::new();
        for k in 0..blocks {
            match ty {
                GgmlType::Q4_1 => {
                    b.extend(h(0.1 + r[k * 40].abs()));
                    b.extend(h(r[k * 40 + 1]));
                    b.extend((0..16).map(|j| ((r[k * 40 + 2 + j] + 0.5) * 255.0) as u8));
                }
                GgmlType::Q4_0 => {
                    b.extend(h(0.1 + r[k * 40].abs()));
                    b.extend((0..16).map(|j| ((r[k * 40 + 2 + j] + 0.5) * 255.0) as u8));
                }
                GgmlType::Q8_0 => {
                    b.extend(h(0.01 + r[k * 40].abs() * 0.1));
                    b.extend((0..32).map(|j| (r[k * 40 + 2 + j] * 250.0) as i8 as u8));
                }
                _ => unreachable!(),
            }
        }
        b
    }

    #[test]
    fn matmul_matches_row_dots() {
        let (rows, cols) = (37, 64);
        let data: Vec<u8> = (0..rows)
            .flat_map(|r| random_row(GgmlType::Q4_1, cols / 32, r as u32 + 1))
            .collect();
        let m = QMatrix::new(GgmlType::Q4_1, rows, cols, &data).unwrap();
        let xs: Vec<Activation> = (0..3)
            .map(|t| Activation::new(&rnd(cols, 100 + t)).unwrap())
            .collect();
        for n in [1, 3] {
            let mut out = vec![0.0; n * rows];
            m.matmul(&xs[..n], &mut out).unwrap();
            for t in 0..n {
                for j in 0..rows {
                    let mut one = [0.0];
                    let w = QBlocks::Q4_1(blocks(m.row(j)).unwrap());
                    Isa::Auto.kern().unwrap().dot(w, &[&xs[t].q[..]], &mut one);
                    assert_eq!(out[t * rows + j], one[0]);
                }
            }
        }
        assert!(QMatrix::new(GgmlType::Q4_1, rows, cols, &data[1..]).is_err());
        assert!(m.matmul(&xs[..1], &mut [0.0; 3]).is_err());
    }

    #[test]
    fn every_isa_and_the_exact_path_agree() {
        let (rows, cols) = (21, 96);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let data: Vec<u8> = (0..rows)
                .flat_map(|r| random_row(ty, cols / 32, r as u32 + 7))
                .collect();
            let m = QMatrix::new(ty, rows, cols, &data).unwrap();
            let xs: Vec<Activation> = (0..5)
                .map(|t| Activation::new(&rnd(cols, 40 + t)).unwrap())
                .collect();
            let mut want = vec![0.0; 5 * rows];
            m.matmul_with(&xs, &mut want, Isa::Scalar).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0.0; 5 * rows];
                m.matmul_with(&xs, &mut got, isa).unwrap();
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{ty:?} {isa:?}: {a} vs {b}"
                    );
                }
            }
            // exact activations: the dequantised rows in f32, close to the 8-bit products
            let ex: Vec<Activation> = xs.iter().map(|x| Activation::exact(&x.f)).collect();
            let mut exact = vec![0.0; 5 * rows];
            m.matmul(&ex, &mut exact).unwrap();
            let mut row = vec![0.0; cols];
            for j in 0..rows {
                m.dequantize_row(j, &mut row).unwrap();
                for (t, x) in ex.iter().enumerate() {
                    let d: f32 = row.iter().zip(&x.f).map(|(a, b)| a * b).sum();
                    let scale: f32 = row.iter().zip(&x.f).map(|(a, b)| (a * b).abs()).sum();
                    // (summed in sixteen partial sums: the order differs, the rounding with it)
                    let e = exact[t * rows + j];
                    assert!((e - d).abs() <= 1e-6 * scale, "{ty:?}: exact {e} vs {d}");
                    assert!((want[t * rows + j] - d).abs() <= 0.02 * scale);
                }
            }
        }
    }

    /// The integer products of every quantised type the models use, on every ISA, against
    /// the dequantised weights (checked against the `gguf` package: tests/golden/kquants.json)
    /// dotted in f64 with the dequantised activations — `Q8_K` ones for the k-quants, `Q8`
    /// ones for `Q5_0`: equal up to f32 rounding.
    #[test]
    fn k_quant_and_q5_0_products_equal_the_dequantised_dot() {
        let g: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/kquants.json")).unwrap();
        for (name, ty) in [
            ("Q4_K", GgmlType::Q4_K),
            ("Q5_K", GgmlType::Q5_K),
            ("Q6_K", GgmlType::Q6_K),
            ("Q5_0", GgmlType::Q5_0),
        ] {
            let bytes: Vec<u8> = g[name]["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let (rows, cols) = (3, 256);
            let m = QMatrix::new(ty, rows, cols, &bytes).unwrap();
            let xs: Vec<Activation> = (0..2)
                .map(|t| {
                    let mut x = rnd(cols, 60 + t);
                    x[11] = -9.0;
                    Activation::new(&x).unwrap()
                })
                .collect();
            assert!(xs.iter().all(|x| x.k().len() == 1 && x.q.len() == 8));
            let deq = |x: &Activation| -> Vec<f64> {
                if name == "Q5_0" {
                    x.q.iter()
                        .flat_map(|b| b.q.map(|q| b.d as f64 * q as f64))
                        .collect()
                } else {
                    x.k()
                        .iter()
                        .flat_map(|b| b.q.map(|q| b.d as f64 * q as f64))
                        .collect()
                }
            };
            let mut row = vec![0.0; cols];
            // the repacked form (prompt processing): its rows are the gguf-checked rows, bit
            // for bit, and its product (Q8 activations per 32 for every type) their dot
            let tiled = m.tiled().unwrap().unwrap();
            let mut trow = vec![0.0; cols];
            let mut got = vec![0.0; 2 * rows];
            m.matmul_tiled(&tiled, &xs, &mut got).unwrap();
            for j in 0..rows {
                m.dequantize_row(j, &mut row).unwrap();
                tiled.dequantize_row(j, &mut trow);
                assert_eq!(trow, row, "{name} row {j}");
                for (t, x) in xs.iter().enumerate() {
                    let xd = x.q.iter().flat_map(|b| b.q.map(|q| b.d as f64 * q as f64));
                    let (mut want, mut scale) = (0.0f64, 0.0f64);
                    for (&w, x) in row.iter().zip(xd) {
                        want += w as f64 * x;
                        scale += (w as f64 * x).abs();
                    }
                    let g = got[t * rows + j] as f64;
                    assert!(
                        (g - want).abs() <= 2e-6 * scale,
                        "{name} tiled row {j} act {t}: {g} vs {want}"
                    );
                }
            }
            for isa in Isa::available() {
                let mut got = vec![0.0; 2 * rows];
                m.matmul_with(&xs, &mut got, isa).unwrap();
                for j in 0..rows {
                    m.dequantize_row(j, &mut row).unwrap();
                    for (t, x) in xs.iter().enumerate() {
                        let xd = deq(x);
                        let want: f64 = row.iter().zip(&xd).map(|(&a, b)| a as f64 * b).sum();
                        let scale: f64 = row
                            .iter()
                            .zip(&xd)
                            .map(|(&a, b)| (a as f64 * b).abs())
                            .sum();
                        let g = got[t * rows + j] as f64;
                        assert!(
                            (g - want).abs() <= 2e-6 * scale,
                            "{name} {isa:?} row {j} act {t}: {g} vs {want} (scale {scale})"
                        );
                    }
                }
            }
        }
    }
}
