//! Weight matrices repacked for the integer products (prompt processing, decoding and the int8
//! encoder): sixteen rows interleaved, so one 512-bit
//! register holds four consecutive columns of sixteen rows and one `vpdpbusd` multiplies them
//! by four activation bytes broadcast — sixteen dot products advance at once, with no
//! horizontal sums, no transpose of the results, and each 32-column block's scales applied
//! once for sixteen rows.
//!
//! Every ggml type attend multiplies by becomes the same form: per row and per 32 columns,
//! unsigned values `v` (4, 5, 6 or 8 bits) with a scale and a minimum per half of 16 columns,
//! `w = scale·v − min`. The types map onto it exactly (every scale and minimum below is exact
//! in `f32`):
//!
//! | type | `v` | scale | min |
//! |---|---|---|---|
//! | `Q4_0` | `q` | `d` | `8d` |
//! | `Q4_1` | `q` | `d` | `−m` |
//! | `Q5_0` | `q` (5 bits) | `d` | `16d` |
//! | `Q8_0` | `q + 128` | `d` | `128d` |
//! | `Q4_K`, `Q5_K` | `q` of sub-block `j` | `d·sc_j` | `dmin·m_j` |
//! | `Q6_K` | `q` (6 bits) | `d·sc_s` per 16 | `32·d·sc_s` |
//!
//! A weight block times a [`BlockQ8`] activation block (`d_a`, `q_a`, `s = d_a·Σq_a`) is
//! `Σ_half scale·d_a·Σ v q_a − min·s_half`: one integer dot per half and two multiply-adds
//! for sixteen rows.
//!
//! Layout, per group of 16 rows and per 32-column block (`value_bytes` bytes, then the
//! group's scales): value-group `k` (columns `4k..4k + 4`) of row `i` is the 4 bytes at lane
//! `i` of register `k`. For 4–6 bits the low nibbles take 256 bytes (register `k < 4` in the
//! low nibbles of 64 bytes, register `k + 4` in their high nibbles); each further bit is a
//! plane of eight 64-bit masks (bit `4i + e` of mask `k` is that bit of row `i`, column
//! `4k + e`). 8-bit values are stored whole (512 bytes). Scales: `[scale × 16][min × 16]` per
//! half.

use rayon::prelude::*;

use crate::quant::{
    scale_min_k4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8,
    BlockQ8_0, KBlocks, QBlocks, QK,
};
use crate::{Error, Kern, MatMut, Result};

/// Rows interleaved in one tile.
pub const TILE_ROWS: usize = 16;

/// The width of a repacked matrix's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bits {
    /// 4-bit values (`Q4_0`, `Q4_1`, `Q4_K`).
    Four,
    /// 5-bit values (`Q5_0`, `Q5_K`).
    Five,
    /// 6-bit values (`Q6_K`).
    Six,
    /// Bytes (`Q8_0`).
    Eight,
}

impl Bits {
    /// Bytes of one group's values for one 32-column block.
    pub const fn value_bytes(self) -> usize {
        match self {
            Bits::Four => 256,
            Bits::Five => 256 + 64,
            Bits::Six => 256 + 128,
            Bits::Eight => 512,
        }
    }
}

/// One group of 16 repacked rows, as the kernels read it ([`crate::Kern::dot_tiled`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group<'a> {
    /// The values, `blocks` blocks of `bits.value_bytes()` bytes.
    pub vals: &'a [u8],
    /// The scales (and minimums), `blocks` blocks of 32 (or 64 when `halves`).
    pub scales: &'a [f32],
    /// Bits a value.
    pub bits: Bits,
    /// A scale per 16 values, not per 32.
    pub halves: bool,
    /// Blocks of 32 columns.
    pub blocks: usize,
}

/// A weight matrix repacked in tiles of 16 rows (module docs).
#[derive(Clone, Debug)]
pub struct TiledMatrix {
    rows: usize,
    cols: usize,
    bits: Bits,
    halves: bool,
    vals: Vec<u8>,
    scales: Vec<f32>,
}

/// One row's 32-column block, decoded: values, and scale and minimum per half.
type Decoded = ([u8; QK], [f32; 2], [f32; 2]);

impl TiledMatrix {
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values' width.
    pub fn bits(&self) -> Bits {
        self.bits
    }

    /// Whether each 16 columns have their own scale (`Q6_K`), not each 32.
    pub fn halves(&self) -> bool {
        self.halves
    }

    /// 32-column blocks per row.
    pub fn blocks(&self) -> usize {
        self.cols / QK
    }

    /// Groups of 16 rows (the last one padded with zero rows).
    pub fn groups(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    /// Scales and minimums of one group's 32-column block.
    pub(crate) fn scales_per_block(&self) -> usize {
        if self.halves {
            4 * TILE_ROWS
        } else {
            2 * TILE_ROWS
        }
    }

    /// Bytes the repacked matrix holds.
    pub fn bytes(&self) -> usize {
        self.vals.len() + 4 * self.scales.len()
    }

    /// Group `g` (rows `16g ..`).
    pub(crate) fn group(&self, g: usize) -> Group<'_> {
        let vb = self.bits.value_bytes() * self.blocks();
        let sb = self.scales_per_block() * self.blocks();
        Group {
            vals: &self.vals[g * vb..(g + 1) * vb],
            scales: &self.scales[g * sb..(g + 1) * sb],
            bits: self.bits,
            halves: self.halves,
            blocks: self.blocks(),
        }
    }

    /// Repacks a matrix of a 32-element type: `rows` rows of `w.len() / rows` blocks.
    pub fn from_q(w: QBlocks<'_>, rows: usize) -> Result<TiledMatrix> {
        let per_row = per_row(w.len(), rows)?;
        let cols = per_row * QK;
        Ok(match w {
            QBlocks::Q4_0(w) => repack(rows, cols, Bits::Four, false, |r, b| {
                q4_0(&w[r * per_row + b])
            }),
            QBlocks::Q4_1(w) => repack(rows, cols, Bits::Four, false, |r, b| {
                q4_1(&w[r * per_row + b])
            }),
            QBlocks::Q5_0(w) => repack(rows, cols, Bits::Five, false, |r, b| {
                q5_0(&w[r * per_row + b])
            }),
            QBlocks::Q8_0(w) => repack(rows, cols, Bits::Eight, false, |r, b| {
                q8_0(&w[r * per_row + b])
            }),
        })
    }

    /// Repacks a k-quant matrix: `rows` rows of `w.len() / rows` blocks of 256.
    pub fn from_k(w: KBlocks<'_>, rows: usize) -> Result<TiledMatrix> {
        let per_row = per_row(w.len(), rows)?;
        let cols = per_row * 256;
        Ok(match w {
            KBlocks::Q4K(w) => repack(rows, cols, Bits::Four, false, |r, b| {
                q4_k(&w[r * per_row + b / 8], b % 8)
            }),
            KBlocks::Q5K(w) => repack(rows, cols, Bits::Five, false, |r, b| {
                q5_k(&w[r * per_row + b / 8], b % 8)
            }),
            KBlocks::Q6K(w) => repack(rows, cols, Bits::Six, true, |r, b| {
                q6_k(&w[r * per_row + b / 8], b % 8)
            }),
        })
    }

    /// Row `r`'s values as `f32` (`scale·v − min`): what the repacked form multiplies by.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (g, i) = (r / TILE_ROWS, r % TILE_ROWS);
        let Group { vals, scales, .. } = self.group(g);
        let (vb, sb) = (self.bits.value_bytes(), self.scales_per_block());
        for (b, o) in out.chunks_exact_mut(QK).enumerate().take(self.blocks()) {
            let v = &vals[b * vb..(b + 1) * vb];
            let s = &scales[b * sb..(b + 1) * sb];
            for (c, o) in o.iter_mut().enumerate() {
                let h = if self.halves { c / 16 } else { 0 };
                let (scale, min) = if self.halves {
                    (s[h * 16 + i], s[32 + h * 16 + i])
                } else {
                    (s[i], s[16 + i])
                };
                *o = scale * value(self.bits, v, i, c) as f32 - min;
            }
        }
    }
}

fn per_row(blocks: usize, rows: usize) -> Result<usize> {
    if rows == 0 || blocks == 0 || !blocks.is_multiple_of(rows) {
        return Err(Error::ShapeMismatch {
            what: "weights",
            expected: rows.max(1),
            got: blocks,
        });
    }
    Ok(blocks / rows)
}

/// Value of row `i`, column `c` of one group's block (`v` is the block's value bytes).
pub(crate) fn value(bits: Bits, v: &[u8], i: usize, c: usize) -> u8 {
    let (k, e) = (c / 4, c % 4);
    if bits == Bits::Eight {
        return v[64 * k + 4 * i + e];
    }
    let byte = v[64 * (k % 4) + 4 * i + e];
    let mut x = if k < 4 { byte & 0x0f } else { byte >> 4 };
    let planes = match bits {
        Bits::Five => 1,
        Bits::Six => 2,
        _ => 0,
    };
    for p in 0..planes {
        let at = 256 + 64 * p + 8 * k;
        let mask = u64::from_le_bytes([
            v[at],
            v[at + 1],
            v[at + 2],
            v[at + 3],
            v[at + 4],
            v[at + 5],
            v[at + 6],
            v[at + 7],
        ]);
        x |= (((mask >> (4 * i + e)) & 1) as u8) << (4 + p);
    }
    x
}

/// Packs `rows × cols` values given block by block by `decode(row, block)`, in parallel
/// over groups of 16 rows.
fn repack(
    rows: usize,
    cols: usize,
    bits: Bits,
    halves: bool,
    decode: impl Fn(usize, usize) -> Decoded + Sync,
) -> TiledMatrix {
    let blocks = cols / QK;
    let groups = rows.div_ceil(TILE_ROWS);
    let vb = bits.value_bytes();
    let sb = if halves { 4 } else { 2 } * TILE_ROWS;
    let mut vals = vec![0u8; groups * blocks * vb];
    let mut scales = vec![0.0f32; groups * blocks * sb];
    vals.par_chunks_mut(blocks * vb)
        .zip(scales.par_chunks_mut(blocks * sb))
        .enumerate()
        .for_each(|(g, (vals, scales))| {
            for b in 0..blocks {
                let v = &mut vals[b * vb..(b + 1) * vb];
                let s = &mut scales[b * sb..(b + 1) * sb];
                for i in 0..TILE_ROWS.min(rows - g * TILE_ROWS) {
                    let (q, scale, min) = decode(g * TILE_ROWS + i, b);
                    if halves {
                        s[i] = scale[0];
                        s[16 + i] = scale[1];
                        s[32 + i] = min[0];
                        s[48 + i] = min[1];
                    } else {
                        s[i] = scale[0];
                        s[16 + i] = min[0];
                    }
                    for (c, &x) in q.iter().enumerate() {
                        put(bits, v, i, c, x);
                    }
                }
            }
        });
    TiledMatrix {
        rows,
        cols,
        bits,
        halves,
        vals,
        scales,
    }
}

/// Stores value `x` of row `i`, column `c` (the inverse of [`value`]).
fn put(bits: Bits, v: &mut [u8], i: usize, c: usize, x: u8) {
    let (k, e) = (c / 4, c % 4);
    if bits == Bits::Eight {
        v[64 * k + 4 * i + e] = x;
        return;
    }
    let at = 64 * (k % 4) + 4 * i + e;
    v[at] |= if k < 4 { x & 0x0f } else { (x & 0x0f) << 4 };
    let planes = match bits {
        Bits::Five => 1,
        Bits::Six => 2,
        _ => 0,
    };
    let bit = 4 * i + e;
    for p in 0..planes {
        if (x >> (4 + p)) & 1 == 1 {
            v[256 + 64 * p + 8 * k + bit / 8] |= 1 << (bit % 8);
        }
    }
}

fn one(scale: f32, min: f32) -> ([f32; 2], [f32; 2]) {
    ([scale, scale], [min, min])
}

/// The 32 nibbles of a 32-element block: element `j` low in byte `j`, `j + 16` high.
fn nibbles(qs: &[u8; 16]) -> [u8; QK] {
    std::array::from_fn(|j| {
        if j < 16 {
            qs[j] & 0x0f
        } else {
            qs[j - 16] >> 4
        }
    })
}

fn q4_0(b: &BlockQ4_0) -> Decoded {
    let d = b.scale();
    let (s, m) = one(d, 8.0 * d);
    (nibbles(&b.qs), s, m)
}

fn q4_1(b: &BlockQ4_1) -> Decoded {
    let (d, m) = b.scale_min();
    let (s, m) = one(d, -m);
    (nibbles(&b.qs), s, m)
}

fn q5_0(b: &BlockQ5_0) -> Decoded {
    let qh = u32::from_le_bytes(b.qh);
    let mut q = nibbles(&b.qs);
    for (j, q) in q.iter_mut().enumerate() {
        *q |= (((qh >> j) & 1) as u8) << 4;
    }
    let d = b.scale();
    let (s, m) = one(d, 16.0 * d);
    (q, s, m)
}

fn q8_0(b: &BlockQ8_0) -> Decoded {
    let q = b.qs.map(|x| (x as i16 + 128) as u8);
    let d = b.scale();
    let (s, m) = one(d, 128.0 * d);
    (q, s, m)
}

/// Sub-block `j` (32 values) of a `Q4_K` / `Q5_K` block's nibbles, with its scale and
/// minimum.
fn k4_sub(d_dmin: (f32, f32), scales: &[u8; 12], qs: &[u8; 128], j: usize) -> Decoded {
    let (d, dmin) = d_dmin;
    let (sc, m) = scale_min_k4(j, scales);
    let (c, high) = (j / 2, j % 2 == 1);
    let q = std::array::from_fn(|l| {
        let x = qs[32 * c + l];
        if high {
            x >> 4
        } else {
            x & 0x0f
        }
    });
    let (s, m) = one(d * sc as f32, dmin * m as f32);
    (q, s, m)
}

/// Sub-block `j` (32 values) of a `Q4_K` block.
fn q4_k(b: &BlockQ4K, j: usize) -> Decoded {
    k4_sub(b.d_dmin(), &b.scales, &b.qs, j)
}

/// Sub-block `j` (32 values) of a `Q5_K` block: the nibbles and bit `j` of each `qh` byte.
fn q5_k(b: &BlockQ5K, j: usize) -> Decoded {
    let (mut q, s, m) = k4_sub(b.d_dmin(), &b.scales, &b.qs, j);
    for (q, h) in q.iter_mut().zip(&b.qh) {
        *q |= ((h >> j) & 1) << 4;
    }
    (q, s, m)
}

/// Elements `32j..32j + 32` of a `Q6_K` block (sub-blocks of 16 `2j` and `2j + 1`).
fn q6_k(b: &BlockQ6K, j: usize) -> Decoded {
    // element e of the 256: half h = e / 128; within it l = e % 32 and quarter r = (e % 128) / 32
    let mut q = [0u8; QK];
    for (t, q) in q.iter_mut().enumerate() {
        let e = 32 * j + t;
        let (h, r, l) = (e / 128, (e % 128) / 32, e % 32);
        let (ql, qh) = (&b.ql[64 * h..], &b.qh[32 * h..]);
        let low = match r {
            0 => ql[l] & 0x0f,
            1 => ql[l + 32] & 0x0f,
            2 => ql[l] >> 4,
            _ => ql[l + 32] >> 4,
        };
        *q = low | (((qh[l] >> (2 * r)) & 3) << 4);
    }
    let d = b.scale();
    let s0 = d * b.scales[2 * j] as f32;
    let s1 = d * b.scales[2 * j + 1] as f32;
    (q, [s0, s1], [32.0 * s0, 32.0 * s1])
}

/// Activation rows per parallel task, for `n` rows.
fn chunk(n: usize) -> usize {
    let per = n.div_ceil(2 * rayon::current_num_threads().max(1));
    per.next_multiple_of(8).clamp(8, 64)
}

/// `out[t × rows + r] = row_r · xs[t]` for every activation row `t` (each `m.blocks()`
/// blocks long), in parallel over chunks of activation rows; each chunk meets every group of
/// 16 weight rows.
pub fn tiled_matmul(kern: Kern, m: &TiledMatrix, xs: &[&[BlockQ8]], out: &mut [f32]) -> Result<()> {
    let n = xs.len();
    if out.len() != n * m.rows {
        return Err(Error::ShapeMismatch {
            what: "out",
            expected: n * m.rows,
            got: out.len(),
        });
    }
    if let Some(x) = xs.iter().find(|x| x.len() != m.blocks()) {
        return Err(Error::ShapeMismatch {
            what: "activation",
            expected: m.blocks(),
            got: x.len(),
        });
    }
    if n == 0 || m.rows == 0 {
        return Ok(());
    }
    // Q6_K's minimums need the activations' sums per 16
    let sums: Vec<Vec<f32>> = if m.halves {
        xs.par_iter()
            .map(|x| {
                x.iter()
                    .flat_map(|b| {
                        let lo: i32 = b.q[..16].iter().map(|&q| q as i32).sum();
                        let hi: i32 = b.q[16..].iter().map(|&q| q as i32).sum();
                        [b.d * lo as f32, b.d * hi as f32]
                    })
                    .collect()
            })
            .collect()
    } else {
        Vec::new()
    };
    let sums: Vec<&[f32]> = sums.iter().map(|s| &s[..]).collect();
    if n < 16 {
        // a few rows (decoding): parallel over groups of weight rows, each into its own
        // `[n × 16]`, then placed
        let mut tmp = vec![0.0f32; m.groups() * n * TILE_ROWS];
        tmp.par_chunks_mut(n * TILE_ROWS)
            .enumerate()
            .for_each(|(g, o)| {
                let lanes = TILE_ROWS.min(m.rows - g * TILE_ROWS);
                let o = MatMut::new(o, 0, TILE_ROWS, n, lanes);
                kern.dot_tiled(m, g, xs, &sums, o);
            });
        for (g, o) in tmp.chunks_exact(n * TILE_ROWS).enumerate() {
            let lanes = TILE_ROWS.min(m.rows - g * TILE_ROWS);
            for (t, o) in o.chunks_exact(TILE_ROWS).enumerate() {
                let at = t * m.rows + g * TILE_ROWS;
                out[at..at + lanes].copy_from_slice(&o[..lanes]);
            }
        }
        return Ok(());
    }
    let ch = chunk(n);
    out.par_chunks_mut(ch * m.rows)
        .enumerate()
        .for_each(|(c, o)| {
            let t0 = c * ch;
            let a = &xs[t0..t0 + o.len() / m.rows];
            let s = if m.halves {
                &sums[t0..t0 + a.len()]
            } else {
                &[][..]
            };
            for g in 0..m.groups() {
                let lanes = TILE_ROWS.min(m.rows - g * TILE_ROWS);
                let o = MatMut::new(&mut o[..], g * TILE_ROWS, m.rows, a.len(), lanes);
                kern.dot_tiled(m, g, a, s, o);
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{blocks, qmatmul, quantize_q8, Block};
    use crate::testing::uniform as rnd;
    use crate::Isa;

    /// `count` blocks of `B` from random bytes, with finite `f16` scales written at `scales`.
    fn random_blocks<B: Block>(count: usize, scales: &[usize], seed: u32) -> Vec<u8> {
        let r = rnd(count * B::BYTES, seed);
        let mut bytes: Vec<u8> = r.iter().map(|x| ((x + 0.5) * 256.0) as u8).collect();
        for (k, b) in bytes.chunks_exact_mut(B::BYTES).enumerate() {
            for (n, &at) in scales.iter().enumerate() {
                let v = 0.01 + 0.05 * (r[k * 7 + n] + 0.5);
                b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        bytes
    }

    fn acts(n: usize, cols: usize) -> Vec<Vec<BlockQ8>> {
        (0..n)
            .map(|t| {
                let mut q = Vec::new();
                let mut x = rnd(cols, 300 + t as u32);
                x[t % cols] = 3.0; // one outlier per row
                quantize_q8(&x, &mut q).unwrap();
                q
            })
            .collect()
    }

    /// Every type's repacked product on every ISA equals the twin's bits, and the stored
    /// blocks' own product (`qmatmul`, another order of the same sums) to rounding.
    #[test]
    fn the_repacked_product_equals_the_twin_and_the_stored_blocks_product() {
        let (rows, per_row) = (37, 3);
        let cols = per_row * QK;
        let q4_0 = random_blocks::<BlockQ4_0>(rows * per_row, &[0], 1);
        let q4_1 = random_blocks::<BlockQ4_1>(rows * per_row, &[0, 2], 2);
        let q5_0 = random_blocks::<BlockQ5_0>(rows * per_row, &[0], 3);
        let q8_0 = random_blocks::<BlockQ8_0>(rows * per_row, &[0], 4);
        let cases = [
            QBlocks::Q4_0(blocks(&q4_0).unwrap()),
            QBlocks::Q4_1(blocks(&q4_1).unwrap()),
            QBlocks::Q5_0(blocks(&q5_0).unwrap()),
            QBlocks::Q8_0(blocks(&q8_0).unwrap()),
        ];
        let scalar = Isa::Scalar.kern().unwrap();
        for n in [1, 5, 8, 9, 16, 19, 70] {
            let a = acts(n, cols);
            let a: Vec<&[BlockQ8]> = a.iter().map(|x| &x[..]).collect();
            for w in cases {
                let m = TiledMatrix::from_q(w, rows).unwrap();
                let mut want = vec![0.0; n * rows];
                qmatmul(scalar, w, rows, &a, &mut want).unwrap();
                let mut twin = vec![0.0; n * rows];
                tiled_matmul(scalar, &m, &a, &mut twin).unwrap();
                for isa in Isa::available() {
                    let mut got = vec![f32::NAN; n * rows];
                    tiled_matmul(isa.kern().unwrap(), &m, &a, &mut got).unwrap();
                    assert_eq!(got, twin, "{w:?} {isa:?} n={n}");
                }
                for (g, w) in twin.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }

    /// The k-quants, repacked (Q6_K with a scale per 16): every ISA gives the twin's bits,
    /// and the product is the dot of the repacked rows (`dequantize_row`) with the
    /// activations; the repacked rows are checked against the gguf package in attend-models.
    #[test]
    fn repacked_k_quants_multiply_as_their_dequantised_rows() {
        let (rows, per_row) = (21, 2);
        let cols = per_row * 256;
        let q4k = random_blocks::<BlockQ4K>(rows * per_row, &[0, 2], 5);
        let q5k = random_blocks::<BlockQ5K>(rows * per_row, &[0, 2], 6);
        let q6k = random_blocks::<BlockQ6K>(rows * per_row, &[208], 7);
        let cases = [
            KBlocks::Q4K(blocks(&q4k).unwrap()),
            KBlocks::Q5K(blocks(&q5k).unwrap()),
            KBlocks::Q6K(blocks(&q6k).unwrap()),
        ];
        let n = 11;
        let a = acts(n, cols);
        let ar: Vec<&[BlockQ8]> = a.iter().map(|x| &x[..]).collect();
        for w in cases {
            let m = TiledMatrix::from_k(w, rows).unwrap();
            assert_eq!(m.halves(), matches!(w, KBlocks::Q6K(_)));
            let mut twin = vec![0.0; n * rows];
            tiled_matmul(Isa::Scalar.kern().unwrap(), &m, &ar, &mut twin).unwrap();
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; n * rows];
                tiled_matmul(isa.kern().unwrap(), &m, &ar, &mut got).unwrap();
                assert_eq!(got, twin, "{w:?} {isa:?}");
            }
            let mut row = vec![0.0; cols];
            for r in 0..rows {
                m.dequantize_row(r, &mut row);
                for (t, x) in a.iter().enumerate() {
                    let xd = x.iter().flat_map(|b| b.q.map(|q| b.d as f64 * q as f64));
                    let (mut want, mut scale) = (0.0f64, 0.0f64);
                    for (w, x) in row.iter().zip(xd) {
                        want += *w as f64 * x;
                        scale += (*w as f64 * x).abs();
                    }
                    let g = twin[t * rows + r] as f64;
                    assert!(
                        (g - want).abs() <= 2e-6 * scale,
                        "{w:?} {r} {t}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn values_round_trip_through_the_layout() {
        for bits in [Bits::Four, Bits::Five, Bits::Six, Bits::Eight] {
            let top = match bits {
                Bits::Four => 16,
                Bits::Five => 32,
                Bits::Six => 64,
                Bits::Eight => 256,
            };
            let mut v = vec![0u8; bits.value_bytes()];
            let x = |i: usize, c: usize| ((i * 37 + c * 11 + 5) % top) as u8;
            for i in 0..TILE_ROWS {
                for c in 0..QK {
                    put(bits, &mut v, i, c, x(i, c));
                }
            }
            for i in 0..TILE_ROWS {
                for c in 0..QK {
                    assert_eq!(value(bits, &v, i, c), x(i, c), "{bits:?} {i} {c}");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_refused() {
        let q8 = random_blocks::<BlockQ8_0>(6, &[0], 9);
        let w = QBlocks::Q8_0(blocks(&q8).unwrap());
        assert!(TiledMatrix::from_q(w, 4).is_err());
        assert!(TiledMatrix::from_q(w, 0).is_err());
        let m = TiledMatrix::from_q(w, 3).unwrap();
        let a = acts(2, 64);
        let a: Vec<&[BlockQ8]> = a.iter().map(|x| &x[..]).collect();
        let k = Kern::best();
        assert!(tiled_matmul(k, &m, &a, &mut [0.0; 5]).is_err());
        assert!(tiled_matmul(k, &m, &a[..1], &mut [0.0; 3]).is_ok());
        let short = acts(1, 32);
        assert!(tiled_matmul(k, &m, &[&short[0][..]], &mut [0.0; 3]).is_err());
    }
}
