//! Quantised dot products, portable scalar Rust: the safe twins of every SIMD build (see
//! `crate::Kern::dot` and the formulas in `crate::quant`).

use crate::mat::MatMut;
use crate::quant::{
    scales_mins_k4, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8,
    BlockQ8K, BlockQ8_0,
};
use crate::tiled::{value, Group};

/// A 32-element block as the twins read it: its integers `q`, scale `d` and offset `m`, the
/// weights being `d·q + m`.
trait Ints32 {
    fn ints(&self) -> [i32; 32];
    fn scale_offset(&self) -> (f32, f32);
}

/// Element `j` of 16 bytes of nibbles: the low nibble of byte `j`, then the high ones.
fn nibble(qs: &[u8; 16], j: usize) -> i32 {
    (if j < 16 {
        qs[j] & 0x0f
    } else {
        qs[j - 16] >> 4
    }) as i32
}

impl Ints32 for BlockQ4_0 {
    fn ints(&self) -> [i32; 32] {
        std::array::from_fn(|j| nibble(&self.qs, j) - 8)
    }
    fn scale_offset(&self) -> (f32, f32) {
        (self.scale(), 0.0)
    }
}

impl Ints32 for BlockQ4_1 {
    fn ints(&self) -> [i32; 32] {
        std::array::from_fn(|j| nibble(&self.qs, j))
    }
    fn scale_offset(&self) -> (f32, f32) {
        self.scale_min()
    }
}

impl Ints32 for BlockQ5_0 {
    fn ints(&self) -> [i32; 32] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| (nibble(&self.qs, j) | (((qh >> j) & 1) << 4) as i32) - 16)
    }
    fn scale_offset(&self) -> (f32, f32) {
        (self.scale(), 0.0)
    }
}

impl Ints32 for BlockQ8_0 {
    fn ints(&self) -> [i32; 32] {
        self.qs.map(i32::from)
    }
    fn scale_offset(&self) -> (f32, f32) {
        (self.scale(), 0.0)
    }
}

/// [`crate::Kern::dot_rows`] for 32-element weights: `Σ d_w·d_a·(Σ q_w·q_a) + m·s` a block.
fn dot32<B: Ints32>(w: &[B], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(a.len())) {
        for (o, a) in o.iter_mut().zip(a) {
            let mut acc = 0.0f32;
            for (b, a) in wr.iter().zip(a.iter()) {
                let isum: i32 = b.ints().iter().zip(&a.q).map(|(&w, &q)| w * q as i32).sum();
                let (d, m) = b.scale_offset();
                acc += d * a.d * isum as f32 + m * a.s;
            }
            *o = acc;
        }
    }
}

/// [`crate::Kern::dot_rows`] for `Q4_0` weights.
pub fn dot_q4_0(w: &[BlockQ4_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    dot32(w, per_row, a, out)
}

/// [`crate::Kern::dot_rows`] for `Q4_1` weights.
pub fn dot_q4_1(w: &[BlockQ4_1], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    dot32(w, per_row, a, out)
}

/// [`crate::Kern::dot_rows`] for `Q8_0` weights.
pub fn dot_q8_0(w: &[BlockQ8_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    dot32(w, per_row, a, out)
}

/// [`crate::Kern::dot_rows`] for `Q5_0` weights.
pub fn dot_q5_0(w: &[BlockQ5_0], per_row: usize, a: &[&[BlockQ8]], out: &mut [f32]) {
    dot32(w, per_row, a, out)
}

/// The k-quant rows of `w` (`per_row` blocks each) times every activation row, one `row`
/// call per weight row.
fn k_rows<B>(
    w: &[B],
    per_row: usize,
    a: &[&[BlockQ8K]],
    out: &mut [f32],
    row: fn(&[B], &[BlockQ8K]) -> f32,
) {
    for (wr, o) in w.chunks_exact(per_row).zip(out.chunks_exact_mut(a.len())) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = row(wr, a);
        }
    }
}

/// [`crate::Kern::dot_rows_k`] for `Q4_K` weights.
pub fn dot_q4_k(w: &[BlockQ4K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    k_rows(w, per_row, a, out, row_q4_k)
}

/// [`crate::Kern::dot_rows_k`] for `Q5_K` weights.
pub fn dot_q5_k(w: &[BlockQ5K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    k_rows(w, per_row, a, out, row_q5_k)
}

/// [`crate::Kern::dot_rows_k`] for `Q6_K` weights.
pub fn dot_q6_k(w: &[BlockQ6K], per_row: usize, a: &[&[BlockQ8K]], out: &mut [f32]) {
    k_rows(w, per_row, a, out, row_q6_k)
}

/// A `Q4_K` / `Q5_K` block's two integer sums given its 256 unsigned weights `q` (`0..16` or
/// `0..32`): `(Σ_j sc_j Σ_{e∈j} q_e x_e, Σ_j m_j (bsum_2j + bsum_2j+1))`.
fn k4_sums(q: &[u8; 256], sc: &[u8; 8], m: &[u8; 8], a: &BlockQ8K) -> (i32, i32) {
    let mut sumi = 0i32;
    for j in 0..8 {
        let isum: i32 = (0..32)
            .map(|l| q[32 * j + l] as i32 * a.q[32 * j + l] as i32)
            .sum();
        sumi += sc[j] as i32 * isum;
    }
    let mins: i32 = (0..8)
        .map(|j| m[j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32))
        .sum();
    (sumi, mins)
}

/// One `Q4_K` row times one `Q8_K` row.
fn row_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (b, a) in w.iter().zip(a) {
        let (d, dmin) = b.d_dmin();
        let (sc, m) = scales_mins_k4(&b.scales);
        let mut q = [0u8; 256];
        for c in 0..4 {
            for l in 0..32 {
                let v = b.qs[32 * c + l];
                q[64 * c + l] = v & 0x0f;
                q[64 * c + 32 + l] = v >> 4;
            }
        }
        let (sumi, msum) = k4_sums(&q, &sc, &m, a);
        // (the SIMD builds' order: scale products, then the two sums apart)
        acc += d * a.d * sumi as f32;
        mins += dmin * a.d * msum as f32;
    }
    acc - mins
}

/// One `Q5_K` row times one `Q8_K` row.
fn row_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let (mut acc, mut mins) = (0.0f32, 0.0f32);
    for (b, a) in w.iter().zip(a) {
        let (d, dmin) = b.d_dmin();
        let (sc, m) = scales_mins_k4(&b.scales);
        let mut q = [0u8; 256];
        for c in 0..4 {
            for l in 0..32 {
                let v = b.qs[32 * c + l];
                let h = b.qh[l];
                q[64 * c + l] = (v & 0x0f) | (((h >> (2 * c)) & 1) << 4);
                q[64 * c + 32 + l] = (v >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
            }
        }
        let (sumi, msum) = k4_sums(&q, &sc, &m, a);
        // (the SIMD builds' order: scale products, then the two sums apart)
        acc += d * a.d * sumi as f32;
        mins += dmin * a.d * msum as f32;
    }
    acc - mins
}

/// One `Q6_K` row times one `Q8_K` row.
fn row_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(a) {
        // the unsigned six bits, element by element
        let mut q = [0u8; 256];
        for half in 0..2 {
            let (ql, qh) = (&b.ql[64 * half..][..64], &b.qh[32 * half..][..32]);
            let y = &mut q[128 * half..][..128];
            for l in 0..32 {
                y[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                y[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        let mut sumi = 0i32;
        for s in 0..16 {
            let isum: i32 = (0..16)
                .map(|e| q[16 * s + e] as i32 * a.q[16 * s + e] as i32)
                .sum();
            sumi += b.scales[s] as i32 * (isum - 32 * a.bsums[s] as i32);
        }
        acc += b.scale() * a.d * sumi as f32;
    }
    acc
}

/// The portable twin is no SIMD build.
pub(crate) const TILED_NATIVE: bool = false;

/// [`crate::Kern::dot_tiled`]: one group of 16 repacked weight rows (`blocks` blocks of 32
/// columns) times every activation row of `a`, into `out[t][i]` for `i < out.cols()`;
/// `sums[t]` are the activations' sums per 16 (`d·Σq`) when the weights have a scale per 16
/// (`halves`). The same operations in the same order as the SIMD builds.
pub(crate) fn dot_tiled(grp: Group<'_>, a: &[&[BlockQ8]], sums: &[&[f32]], mut out: MatMut<'_>) {
    let (vals, scales, bits, halves) = (grp.vals, grp.scales, grp.bits, grp.halves);
    let lanes = out.cols();
    let vb = bits.value_bytes();
    let sb = if halves { 64 } else { 32 };
    for (t, a) in a.iter().enumerate() {
        for i in 0..lanes {
            let mut acc = 0.0f32;
            for (b, blk) in a.iter().enumerate().take(grp.blocks) {
                let v = &vals[b * vb..(b + 1) * vb];
                let s = &scales[b * sb..(b + 1) * sb];
                let mut dp = [0i32; 2];
                for c in 0..32 {
                    dp[c / 16] += value(bits, v, i, c) as i32 * blk.q[c] as i32;
                }
                if halves {
                    acc = (dp[0] as f32).mul_add(s[i] * blk.d, acc);
                    acc = (dp[1] as f32).mul_add(s[16 + i] * blk.d, acc);
                    acc = (-s[32 + i]).mul_add(sums[t][2 * b], acc);
                    acc = (-s[48 + i]).mul_add(sums[t][2 * b + 1], acc);
                } else {
                    acc = ((dp[0] + dp[1]) as f32).mul_add(s[i] * blk.d, acc);
                    acc = (-s[16 + i]).mul_add(blk.s, acc);
                }
            }
            out.row_mut(t)[i] = acc;
        }
    }
}

/// One row times one activation row, whatever the type (the oracle of the tests).
#[cfg(test)]
pub fn dot_one(w: crate::quant::QBlocks<'_>, a: &[BlockQ8]) -> f32 {
    use crate::quant::QBlocks;
    let mut out = [0.0];
    match w {
        QBlocks::Q4_0(w) => dot32(w, w.len(), &[a], &mut out),
        QBlocks::Q4_1(w) => dot32(w, w.len(), &[a], &mut out),
        QBlocks::Q5_0(w) => dot32(w, w.len(), &[a], &mut out),
        QBlocks::Q8_0(w) => dot32(w, w.len(), &[a], &mut out),
    }
    out[0]
}

/// One k-quant row times one `Q8_K` row (the oracle of the tests).
#[cfg(test)]
pub fn dot_one_k(w: crate::quant::KBlocks<'_>, a: &[BlockQ8K]) -> f32 {
    use crate::quant::KBlocks;
    match w {
        KBlocks::Q4K(w) => row_q4_k(w, a),
        KBlocks::Q5K(w) => row_q5_k(w, a),
        KBlocks::Q6K(w) => row_q6_k(w, a),
    }
}
