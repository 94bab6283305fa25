//! ggml tensor types: block layouts, dequantisation, and products of quantised weight rows with
//! quantised activations — the way the formats were designed to be used.
//!
//! Block layouts (little-endian, `f16` scales), 32 elements a block:
//! - `Q8_0`: `d`, 32 × `i8` `q`; `x = d·q`.
//! - `Q4_0`: `d`, 16 bytes; byte `j` holds element `j` (low nibble) and `j + 16` (high);
//!   `x = d·(q − 8)`.
//! - `Q4_1`: `d`, `m`, 16 bytes as in `Q4_0`; `x = d·q + m`.
//!
//! Activations are quantised per 32-element block to [`BlockQ8`] (`f32` scale `d`, and `s =
//! d·Σq` for the `Q4_1` offset term). A weight block times an activation block is then an
//! integer dot product and one or two multiplies:
//! `Q4_1·Q8 = d_w·d_x·Σ q_w q_x + m_w·s_x`, `Q4_0·Q8 = d_w·d_x·(Σ q_w q_x − 8 Σ q_x)`,
//! `Q8_0·Q8 = d_w·d_x·Σ q_w q_x`. `F32`, `F16`, `BF16`, `Q4_K` and `Q6_K` rows are
//! dequantised (once per row per call) and dotted in `f32` with the unquantised activations —
//! correct, not yet fast for the k-quants.
//!
//! `Q4_K` (256 elements, 144 bytes): `d`, `dmin`, 12 bytes of 6-bit scales and mins for eight
//! sub-blocks of 32, 128 bytes of nibbles. `Q6_K` (256 elements, 210 bytes): 128 bytes of low
//! nibbles, 64 of 2-bit high parts, 16 `i8` scales for sub-blocks of 16, `d` last.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::{Error, Result};

/// Elements per block of the 32-element formats.
pub const QK: usize = 32;

/// A ggml element type, with the numbers GGUF stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

impl GgmlType {
    /// The type GGUF numbers `v`, if known.
    pub fn from_u32(v: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match v {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            30 => BF16,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => 144,
            Q5_K => 176,
            Q6_K => 210,
            Q8_K => 292,
        }
    }

    /// Whether attend can read this type (dequantise it, multiply by it).
    pub fn supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q8_0 | Q4_K | Q6_K)
    }

    /// Bytes of a row of `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises one row of `out.len()` elements of type `ty` from `src` (exactly
/// `ty.row_bytes(out.len())` bytes).
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    if !ty.supported() {
        return Err(Error::Invalid(format!(
            "ggml type {ty:?} is not supported yet (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K are)"
        )));
    }
    let n = out.len();
    if n % ty.block_elems() != 0 || src.len() != ty.row_bytes(n) {
        return Err(Error::Invalid(format!(
            "a {ty:?} row of {n} elements needs {} bytes, got {}",
            ty.row_bytes(n.next_multiple_of(ty.block_elems())),
            src.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = d * (q as i8) as f32;
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let (bytes, off) = if ty == GgmlType::Q4_0 {
                (18, 2)
            } else {
                (20, 4)
            };
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(bytes)) {
                let d = f16_at(b, 0);
                let (m, bias) = if ty == GgmlType::Q4_0 {
                    (0.0, 8)
                } else {
                    (f16_at(b, 2), 0)
                };
                let qs = &b[off..off + 16];
                for j in 0..16 {
                    o[j] = d * ((qs[j] & 0x0f) as i32 - bias) as f32 + m;
                    o[j + 16] = d * ((qs[j] >> 4) as i32 - bias) as f32 + m;
                }
            }
        }
        GgmlType::Q4_K => {
            // d, dmin (f16), 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, 128
            // bytes of nibbles: each 64 elements take 32 bytes, low nibbles then high
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let sc = &b[4..16];
                let scale_min = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((sc[j] & 63) as f32, (sc[j + 4] & 63) as f32)
                    } else {
                        (
                            ((sc[j + 4] & 0x0f) | ((sc[j - 4] >> 6) << 4)) as f32,
                            ((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for (c, chunk) in o.chunks_exact_mut(64).enumerate() {
                    let q = &b[16 + c * 32..16 + (c + 1) * 32];
                    let (s1, m1) = scale_min(2 * c);
                    let (s2, m2) = scale_min(2 * c + 1);
                    for l in 0..32 {
                        chunk[l] = d * s1 * (q[l] & 0x0f) as f32 - dmin * m1;
                        chunk[l + 32] = d * s2 * (q[l] >> 4) as f32 - dmin * m2;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            // 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 signed scales, d (f16) last
            for (o, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(210)) {
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    let sc = &b[192 + half * 8..192 + half * 8 + 8];
                    let y = &mut o[half * 128..half * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * (sc[is + k] as i8) as f32;
                        y[l] = s(0) * q1 as f32;
                        y[l + 32] = s(2) * q2 as f32;
                        y[l + 64] = s(4) * q3 as f32;
                        y[l + 96] = s(6) * q4 as f32;
                    }
                }
            }
        }
        _ => unreachable!("checked by supported()"),
    }
    Ok(())
}

/// 32 activations quantised to `i8`: `x ≈ d·q`, with `s = d·Σq`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale.
    pub d: f32,
    /// `d · Σ q`.
    pub s: f32,
    /// The quantised values.
    pub q: [i8; QK],
}

/// Quantises `x` (a multiple of 32 long) block by block: `d = max|x| / 127`, `q = round(x/d)`.
pub fn quantize_q8(x: &[f32], out: &mut Vec<BlockQ8>) {
    out.clear();
    for c in x.chunks_exact(QK) {
        let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8 {
            d,
            ..Default::default()
        };
        let mut sum = 0i32;
        for (q, &v) in b.q.iter_mut().zip(c) {
            *q = (v * inv).round() as i8;
            sum += *q as i32;
        }
        b.s = d * sum as f32;
        out.push(b);
    }
}

/// One row of activations, as `f32` and as `Q8` blocks.
#[derive(Clone, Debug, Default)]
pub struct Activation {
    /// The values.
    pub f: Vec<f32>,
    /// The same, quantised (when the length is a multiple of 32).
    pub q: Vec<BlockQ8>,
}

impl Activation {
    /// Takes `x` as it is, unquantised: products with it dequantise each weight row and dot
    /// in `f32` (slow; what the reference implementations compute).
    pub fn exact(x: &[f32]) -> Activation {
        Activation {
            f: x.to_vec(),
            q: Vec::new(),
        }
    }

    /// Takes `x` and quantises it.
    pub fn new(x: &[f32]) -> Activation {
        let mut a = Activation {
            f: x.to_vec(),
            q: Vec::new(),
        };
        if x.len() % QK == 0 {
            quantize_q8(x, &mut a.q);
        }
        a
    }
}

/// `Σ` over the row of `weight_row · activation` for a row of type `ty`. Scalar: the safe twin
/// of the SIMD kernels, and what runs where they do not. An [`Activation::exact`] is dotted
/// in `f32` with the dequantised row.
pub fn dot_row(ty: GgmlType, w: &[u8], x: &Activation) -> f32 {
    if !x.q.is_empty() {
        if let Some(v) = crate::simd_q::dot(ty, w, &x.q) {
            return v;
        }
    }
    dot_row_scalar(ty, w, x)
}

/// [`dot_row`] without the SIMD kernels: the safe twin they are tested against.
pub fn dot_row_scalar(ty: GgmlType, w: &[u8], x: &Activation) -> f32 {
    let ty_q = if x.q.is_empty() { GgmlType::F32 } else { ty };
    match ty_q {
        GgmlType::Q4_1 => {
            let mut acc = 0.0f32;
            for (b, a) in w.chunks_exact(20).zip(&x.q) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                let mut isum = 0i32;
                for (j, &b) in qs.iter().enumerate() {
                    isum += (b & 0x0f) as i32 * a.q[j] as i32;
                    isum += (b >> 4) as i32 * a.q[j + 16] as i32;
                }
                acc += d * a.d * isum as f32 + m * a.s;
            }
            acc
        }
        GgmlType::Q4_0 => {
            let mut acc = 0.0f32;
            for (b, a) in w.chunks_exact(18).zip(&x.q) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                let (mut isum, mut qsum) = (0i32, 0i32);
                for (j, &b) in qs.iter().enumerate() {
                    isum += (b & 0x0f) as i32 * a.q[j] as i32;
                    isum += (b >> 4) as i32 * a.q[j + 16] as i32;
                    qsum += a.q[j] as i32 + a.q[j + 16] as i32;
                }
                acc += d * a.d * (isum - 8 * qsum) as f32;
            }
            acc
        }
        GgmlType::Q8_0 => {
            let mut acc = 0.0f32;
            for (b, a) in w.chunks_exact(34).zip(&x.q) {
                let d = f16_at(b, 0);
                let isum: i32 = b[2..34]
                    .iter()
                    .zip(&a.q)
                    .map(|(&w, &q)| (w as i8) as i32 * q as i32)
                    .sum();
                acc += d * a.d * isum as f32;
            }
            acc
        }
        _ => {
            if ty == GgmlType::F32 {
                return w
                    .chunks_exact(4)
                    .zip(&x.f)
                    .map(|(c, &v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
                    .sum();
            }
            let mut row = vec![0.0f32; x.f.len()];
            // the row length was checked when the matrix was made
            if dequantize_row(ty, w, &mut row).is_err() {
                return f32::NAN;
            }
            row.iter().zip(&x.f).map(|(a, b)| a * b).sum()
        }
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
                "ggml type {ty:?} is not supported yet (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K are)"
            )));
        }
        let quantised = ty.block_elems() > 1;
        if cols % ty.block_elems() != 0 || (quantised && cols % QK != 0) {
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

    /// `out[t × rows + j] = row_j · xs[t]` for every activation row `t`: the weights are read
    /// once, in row blocks, in parallel; each block meets every activation row.
    pub fn matmul(&self, xs: &[Activation], out: &mut [f32]) -> Result<()> {
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
        const BLOCK: usize = 16;
        // float and k-quant rows, or exact activations: dequantise each row once, dot in f32
        let int_dots = matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0);
        let float = xs.iter().any(|x| x.q.is_empty()) || !int_dots;
        let rows_dot = |j: usize, out: &mut dyn FnMut(usize, f32), row: &mut Vec<f32>| {
            if float {
                row.resize(self.cols, 0.0);
                // sizes were checked in `new`
                if dequantize_row(self.ty, self.row(j), row).is_err() {
                    row.fill(f32::NAN);
                }
                for (t, x) in xs.iter().enumerate() {
                    out(t, row.iter().zip(&x.f).map(|(a, b)| a * b).sum());
                }
            } else {
                // four activation rows per pass over the weight row where the kernels allow
                let w = self.row(j);
                let mut t = 0;
                while t + 4 <= xs.len() {
                    let a = [
                        &xs[t].q[..],
                        &xs[t + 1].q[..],
                        &xs[t + 2].q[..],
                        &xs[t + 3].q[..],
                    ];
                    match crate::simd_q::dot_n(self.ty, w, a) {
                        Some(v) => {
                            for (i, v) in v.into_iter().enumerate() {
                                out(t + i, v);
                            }
                        }
                        None => {
                            for (i, x) in xs.iter().enumerate().skip(t).take(4) {
                                out(i, dot_row(self.ty, w, x));
                            }
                        }
                    }
                    t += 4;
                }
                for (i, x) in xs.iter().enumerate().skip(t) {
                    out(i, dot_row(self.ty, w, x));
                }
            }
        };
        if n == 1 {
            out.par_chunks_mut(BLOCK).enumerate().for_each(|(b, o)| {
                let mut row = Vec::new();
                for (i, v) in o.iter_mut().enumerate() {
                    rows_dot(b * BLOCK + i, &mut |_, d| *v = d, &mut row);
                }
            });
        } else {
            // [rows × n] in parallel over row blocks, then transposed into [n × rows]
            let mut tr = vec![0.0f32; self.rows * n];
            tr.par_chunks_mut(BLOCK * n).enumerate().for_each(|(b, o)| {
                let mut row = Vec::new();
                for (i, orow) in o.chunks_exact_mut(n).enumerate() {
                    rows_dot(b * BLOCK + i, &mut |t, d| orow[t] = d, &mut row);
                }
            });
            for (j, trow) in tr.chunks_exact(n).enumerate() {
                for (t, &v) in trow.iter().enumerate() {
                    out[t * self.rows + j] = v;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1; byte j = (j mod 16) | (15 - j mod 16) << 4
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_0_block_by_hand() {
        let mut b = Vec::new();
        b.extend(h(2.0));
        for j in 0..16u8 {
            b.push(j | (j << 4));
        }
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 2.0 * (j as f32 - 8.0));
            assert_eq!(out[j + 16], out[j]);
        }
    }

    /// Random Q4_K / Q6_K blocks and the values the `gguf` Python package (llama.cpp's
    /// reference code) gives them (scripts/golden_kquants.py).
    #[test]
    fn k_quants_match_the_gguf_reference() {
        let g: serde_json::Value =
            serde_json::from_str(include_str!("../tests/golden/kquants.json")).unwrap();
        for (name, ty) in [("Q4_K", GgmlType::Q4_K), ("Q6_K", GgmlType::Q6_K)] {
            let bytes: Vec<u8> = g[name]["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let want: Vec<f32> = g[name]["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let mut got = vec![0.0; want.len()];
            dequantize_row(ty, &bytes, &mut got).unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{name}[{i}]: {a} vs {b}"
                );
            }
            // and a matrix of them multiplies (through the dequantising path)
            let m = QMatrix::new(ty, 3, 256, &bytes).unwrap();
            let x = Activation::new(&rnd(256, 9));
            let mut out = vec![0.0; 3];
            m.matmul(std::slice::from_ref(&x), &mut out).unwrap();
            let want0: f32 = want[..256].iter().zip(&x.f).map(|(a, b)| a * b).sum();
            assert!((out[0] - want0).abs() < 1e-3 * (1.0 + want0.abs()));
        }
    }

    #[test]
    fn q8_0_f16_bf16_f32_by_hand() {
        let mut b = Vec::new();
        b.extend(h(0.25));
        b.extend((0..32).map(|i: i32| (i - 16) as i8 as u8));
        let mut out = [0.0; 32];
        dequantize_row(GgmlType::Q8_0, &b, &mut out).unwrap();
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, 0.25 * (i as f32 - 16.0));
        }
        let mut o2 = [0.0; 2];
        dequantize_row(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0], &mut o2).unwrap();
        assert_eq!(o2, [1.0, -2.0]);
        dequantize_row(GgmlType::BF16, &[0x80, 0x3f, 0x40, 0xc0], &mut o2).unwrap();
        assert_eq!(o2, [1.0, -3.0]);
        let mut f = Vec::new();
        f.extend(1.5f32.to_le_bytes());
        f.extend((-0.125f32).to_le_bytes());
        dequantize_row(GgmlType::F32, &f, &mut o2).unwrap();
        assert_eq!(o2, [1.5, -0.125]);
        // wrong sizes and unsupported types are errors
        assert!(dequantize_row(GgmlType::Q8_0, &b[..33], &mut out).is_err());
        assert!(dequantize_row(GgmlType::Q5_K, &[0; 176], &mut [0.0; 256]).is_err());
    }

    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

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
    fn quantised_dots_match_dequantised_f64() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let blocks = 18; // 576 elements, SmolLM2's width
            let w = random_row(ty, blocks, 7);
            let xf = rnd(blocks * 32, 11);
            let x = Activation::new(&xf);
            let mut wf = vec![0.0; blocks * 32];
            dequantize_row(ty, &w, &mut wf).unwrap();
            // exact: the dequantised weights times the dequantised activations
            let xq: Vec<f64> =
                x.q.iter()
                    .flat_map(|b| b.q.iter().map(move |&q| b.d as f64 * q as f64))
                    .collect();
            let want: f64 = wf.iter().zip(&xq).map(|(&a, &b)| a as f64 * b).sum();
            let got = dot_row(ty, &w, &x) as f64;
            let scale: f64 = wf.iter().zip(&xq).map(|(&a, b)| (a as f64 * b).abs()).sum();
            assert!(
                (got - want).abs() <= 1e-5 * scale,
                "{ty:?}: {got} vs {want}"
            );
            // and close to the f32 product (activation quantisation error only)
            let full: f64 = wf.iter().zip(&xf).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (got - full).abs() <= 0.02 * scale,
                "{ty:?}: {got} vs {full}"
            );
        }
    }

    #[test]
    fn simd_kernels_match_their_scalar_twin() {
        if !crate::simd_q::available() {
            eprintln!("no AVX2 here: only the scalar path is tested");
            return;
        }
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            for blocks in [1, 2, 18, 48] {
                let w = random_row(ty, blocks, blocks as u32 + 3);
                let mut xf = rnd(blocks * 32, 5);
                xf[3] = 40.0; // one outlier, as real activations have
                let x = Activation::new(&xf);
                let s = dot_row_scalar(ty, &w, &x);
                let v = crate::simd_q::dot(ty, &w, &x.q).unwrap();
                assert!(
                    (s - v).abs() <= 1e-5 * (1.0 + s.abs()),
                    "{ty:?} × {blocks}: {v} vs {s}"
                );
                // four rows at once give each row's own answer
                let xs: Vec<Activation> = (0..4)
                    .map(|t| Activation::new(&rnd(blocks * 32, 20 + t)))
                    .collect();
                let v4 = crate::simd_q::dot_n(
                    ty,
                    &w,
                    [&xs[0].q[..], &xs[1].q[..], &xs[2].q[..], &xs[3].q[..]],
                )
                .unwrap();
                for (x, v) in xs.iter().zip(v4) {
                    let s = dot_row_scalar(ty, &w, x);
                    assert!(
                        (s - v).abs() <= 1e-5 * (1.0 + s.abs()),
                        "{ty:?} ×4: {v} vs {s}"
                    );
                }
            }
            // a row of the wrong length has no SIMD answer
            let w = random_row(ty, 2, 1);
            assert!(crate::simd_q::dot(ty, &w[1..], &Activation::new(&rnd(64, 1)).q).is_none());
        }
    }

    #[test]
    fn matmul_matches_row_dots() {
        let (rows, cols) = (37, 64);
        let data: Vec<u8> = (0..rows)
            .flat_map(|r| random_row(GgmlType::Q4_1, cols / 32, r as u32 + 1))
            .collect();
        let m = QMatrix::new(GgmlType::Q4_1, rows, cols, &data).unwrap();
        let xs: Vec<Activation> = (0..3)
            .map(|t| Activation::new(&rnd(cols, 100 + t)))
            .collect();
        for n in [1, 3] {
            let mut out = vec![0.0; n * rows];
            m.matmul(&xs[..n], &mut out).unwrap();
            for t in 0..n {
                for j in 0..rows {
                    assert_eq!(out[t * rows + j], dot_row(m.ty, m.row(j), &xs[t]));
                }
            }
        }
        assert!(QMatrix::new(GgmlType::Q4_1, rows, cols, &data[1..]).is_err());
        assert!(m.matmul(&xs[..1], &mut [0.0; 3]).is_err());
    }
}
