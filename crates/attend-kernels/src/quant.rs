//! ggml's block formats as `#[repr(C)]` types, activations quantised to 8 bits per 32-block,
//! and the scheduling of a quantised matrix product.
//!
//! Block layouts (little-endian, `f16` scales):
//! - `Q8_0` (32 elements, 34 bytes): `d`, 32 × `i8` `q`; `x = d·q`.
//! - `Q4_0` (32, 18): `d`, 16 bytes; byte `j` holds element `j` (low nibble) and `j + 16`
//!   (high); `x = d·(q − 8)`.
//! - `Q4_1` (32, 20): `d`, `m`, 16 bytes as in `Q4_0`; `x = d·q + m`.
//! - `Q4_K` (256, 144): `d`, `dmin`, 12 bytes of 6-bit scales and mins for eight sub-blocks of
//!   32, 128 bytes of nibbles.
//! - `Q5_0` (32, 22): `d`, 4 bytes of fifth bits (bit `j` is element `j`'s), 16 bytes as in
//!   `Q4_0`; `x = d·(q − 16)`.
//! - `Q4_K` (256, 144): `d`, `dmin`, 12 bytes of 6-bit scales `sc` and mins `m` for eight
//!   sub-blocks of 32 ([`scale_min_k4`]), 128 bytes of nibbles (each 64 elements take 32
//!   bytes: low nibbles, then high); `x = d·sc·q − dmin·m`.
//! - `Q5_K` (256, 176): as `Q4_K` with 32 bytes of fifth bits before the nibbles (bits `2c`
//!   and `2c + 1` of byte `l` belong to elements `64c + l` and `64c + 32 + l`).
//! - `Q6_K` (256, 210): 128 bytes of low nibbles, 64 of 2-bit high parts, 16 `i8` scales for
//!   sub-blocks of 16, `d` last; `x = d·sc·(q − 32)`.
//!
//! Activations are quantised per 32-element block to [`BlockQ8`] (`f32` scale `d`, and `s =
//! d·Σq` for the offset terms) for the 32-element formats, and per 256 to [`BlockQ8K`] (`f32`
//! scale, and the integer sums of each 16) for the k-quants. A weight block times an
//! activation block is then an integer dot product and one or two multiplies:
//! `Q4_1·Q8 = d_w·d_x·Σ q_w q_x + m_w·s_x`, `Q4_0·Q8 = d_w·d_x·(Σ q_w q_x − 8 Σ q_x)`,
//! `Q5_0·Q8 = d_w·(d_x·Σ q_w q_x − 16 s_x)`, `Q8_0·Q8 = d_w·d_x·Σ q_w q_x`;
//! `Q4_K·Q8_K = d_x·(d·Σ_j sc_j Σ q_w q_x − dmin·Σ_j m_j (bsum_2j + bsum_2j+1))` (the sums
//! of 16 fold the minimums in; `Q5_K` the same), `Q6_K·Q8_K = d·d_x·Σ_s sc_s (Σ q_w q_x −
//! 32 bsum_s)` with `q_w` the unsigned six bits.

use rayon::prelude::*;

use crate::math::f16;
use crate::{Error, Kern, Result};

/// Elements per block of the 32-element formats.
pub const QK: usize = 32;

/// A ggml weight block.
///
/// # Safety
/// Implemented only for `#[repr(C)]` structs made of `u8` / `i8` arrays: alignment 1, no
/// padding, every bit pattern valid — what [`blocks`] needs to view file bytes as blocks.
pub unsafe trait Block: Copy + 'static {
    /// Bytes per block (ggml's `type_size`).
    const BYTES: usize;
    /// Elements per block (ggml's `blck_size`).
    const ELEMS: usize;
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, $bytes:expr, $elems:expr, { $($(#[$fdoc:meta])* $f:ident: $t:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub struct $name {
            $($(#[$fdoc])* pub $f: $t),*
        }
        const _: () = assert!(
            std::mem::size_of::<$name>() == $bytes && std::mem::align_of::<$name>() == 1
        );
        // SAFETY: repr(C) of byte arrays only (the assertion above: size as declared, align 1).
        unsafe impl Block for $name {
            const BYTES: usize = $bytes;
            const ELEMS: usize = $elems;
        }
    };
}

block!(
    /// `Q4_0`: 32 four-bit values with one scale, `x = d·(q − 8)`.
    BlockQ4_0, 18, 32, {
    /// Scale (`f16`).
    d: [u8; 2],
    /// Element `j` in the low nibble of byte `j`, element `j + 16` in its high nibble.
    qs: [u8; 16],
});
block!(
    /// `Q4_1`: 32 four-bit values with a scale and an offset, `x = d·q + m`.
    BlockQ4_1, 20, 32, {
    /// Scale (`f16`).
    d: [u8; 2],
    /// Offset (`f16`).
    m: [u8; 2],
    /// As in `Q4_0`.
    qs: [u8; 16],
});
block!(
    /// `Q5_0`: 32 five-bit values with one scale, `x = d·(q − 16)`.
    BlockQ5_0, 22, 32, {
    /// Scale (`f16`).
    d: [u8; 2],
    /// The fifth bits: bit `j` of this little-endian `u32` is element `j`'s.
    qh: [u8; 4],
    /// The low four bits, as in `Q4_0`.
    qs: [u8; 16],
});
block!(
    /// `Q8_0`: 32 signed bytes with one scale, `x = d·q`.
    BlockQ8_0, 34, 32, {
    /// Scale (`f16`).
    d: [u8; 2],
    /// The values.
    qs: [i8; 32],
});
block!(
    /// `Q4_K`: 256 four-bit values in eight sub-blocks of 32 with 6-bit scales and minimums.
    BlockQ4K, 144, 256, {
    /// Super-block scale of the scales (`f16`).
    d: [u8; 2],
    /// Super-block scale of the minimums (`f16`).
    dmin: [u8; 2],
    /// 6-bit scales and minimums of the eight sub-blocks, packed.
    scales: [u8; 12],
    /// Each 64 elements take 32 bytes: low nibbles, then high nibbles.
    qs: [u8; 128],
});
block!(
    /// `Q5_K`: 256 five-bit values in eight sub-blocks of 32 with 6-bit scales and minimums.
    BlockQ5K, 176, 256, {
    /// Super-block scale of the scales (`f16`).
    d: [u8; 2],
    /// Super-block scale of the minimums (`f16`).
    dmin: [u8; 2],
    /// 6-bit scales and minimums of the eight sub-blocks, packed as in `Q4_K`.
    scales: [u8; 12],
    /// Fifth bits: bit `2c` of byte `l` is element `64c + l`'s, bit `2c + 1` element
    /// `64c + 32 + l`'s.
    qh: [u8; 32],
    /// Low four bits, as in `Q4_K`.
    qs: [u8; 128],
});
block!(
    /// `Q6_K`: 256 six-bit values in sixteen sub-blocks of 16 with signed 8-bit scales.
    BlockQ6K, 210, 256, {
    /// Low four bits.
    ql: [u8; 128],
    /// High two bits.
    qh: [u8; 64],
    /// Sub-block scales.
    scales: [i8; 16],
    /// Super-block scale (`f16`).
    d: [u8; 2],
});

impl BlockQ4_0 {
    /// The scale.
    pub fn scale(&self) -> f32 {
        f16(self.d)
    }
}
impl BlockQ4_1 {
    /// The scale and the offset.
    pub fn scale_min(&self) -> (f32, f32) {
        (f16(self.d), f16(self.m))
    }
}
impl BlockQ8_0 {
    /// The scale.
    pub fn scale(&self) -> f32 {
        f16(self.d)
    }
}
impl BlockQ5_0 {
    /// The scale.
    pub fn scale(&self) -> f32 {
        f16(self.d)
    }
}

/// Sub-block `j`'s (6-bit scale, 6-bit minimum) of a `Q4_K` / `Q5_K` block's 12 packed bytes
/// (ggml's `get_scale_min_k4`): sub-blocks 0–3 in the low six bits of bytes `j` and `j + 4`;
/// 4–7 in the nibbles of byte `j + 4` with their top two bits in bytes `j − 4` and `j`.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The eight (scale, minimum) pairs of a `Q4_K` / `Q5_K` block.
#[inline]
pub fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

macro_rules! k_scales {
    ($($t:ident),*) => {$(
        impl $t {
            /// The super-block scales of the scales and of the minimums.
            pub fn d_dmin(&self) -> (f32, f32) {
                (f16(self.d), f16(self.dmin))
            }
        }
    )*};
}
k_scales!(BlockQ4K, BlockQ5K);
impl BlockQ6K {
    /// The super-block scale.
    pub fn scale(&self) -> f32 {
        f16(self.d)
    }
}

/// `bytes` as blocks of `B`; `None` unless it is a whole number of them.
pub fn blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    if !bytes.len().is_multiple_of(B::BYTES) {
        return None;
    }
    // SAFETY: `Block` types are byte arrays in repr(C) (align 1, every bit pattern valid, size
    // BYTES), and `bytes` holds exactly len / BYTES of them.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / B::BYTES) })
}

/// The blocks of one weight row (or of a whole matrix), of a type with integer dot products.
#[derive(Clone, Copy, Debug)]
pub enum QBlocks<'a> {
    /// `Q4_0` blocks.
    Q4_0(&'a [BlockQ4_0]),
    /// `Q4_1` blocks.
    Q4_1(&'a [BlockQ4_1]),
    /// `Q5_0` blocks.
    Q5_0(&'a [BlockQ5_0]),
    /// `Q8_0` blocks.
    Q8_0(&'a [BlockQ8_0]),
}

impl<'a> QBlocks<'a> {
    /// Blocks held.
    pub fn len(&self) -> usize {
        match self {
            QBlocks::Q4_0(b) => b.len(),
            QBlocks::Q4_1(b) => b.len(),
            QBlocks::Q5_0(b) => b.len(),
            QBlocks::Q8_0(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> QBlocks<'a> {
        match self {
            QBlocks::Q4_0(b) => QBlocks::Q4_0(&b[range]),
            QBlocks::Q4_1(b) => QBlocks::Q4_1(&b[range]),
            QBlocks::Q5_0(b) => QBlocks::Q5_0(&b[range]),
            QBlocks::Q8_0(b) => QBlocks::Q8_0(&b[range]),
        }
    }
}

/// The blocks of one weight row (or of a whole matrix) of a k-quant type, multiplied by
/// [`BlockQ8K`] activations.
#[derive(Clone, Copy, Debug)]
pub enum KBlocks<'a> {
    /// `Q4_K` blocks.
    Q4K(&'a [BlockQ4K]),
    /// `Q5_K` blocks.
    Q5K(&'a [BlockQ5K]),
    /// `Q6_K` blocks.
    Q6K(&'a [BlockQ6K]),
}

impl<'a> KBlocks<'a> {
    /// Blocks held.
    pub fn len(&self) -> usize {
        match self {
            KBlocks::Q4K(b) => b.len(),
            KBlocks::Q5K(b) => b.len(),
            KBlocks::Q6K(b) => b.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> KBlocks<'a> {
        match self {
            KBlocks::Q4K(b) => KBlocks::Q4K(&b[range]),
            KBlocks::Q5K(b) => KBlocks::Q5K(&b[range]),
            KBlocks::Q6K(b) => KBlocks::Q6K(&b[range]),
        }
    }
}

/// Elements per block of the k-quants.
pub const QK_K: usize = 256;

/// 256 activations quantised to `i8` (ggml's `block_q8_K`): `x ≈ d·q`, with the integer sum
/// of each 16 (what folds a k-quant's minimums, or `Q6_K`'s offset, into one multiply).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// The quantised values.
    pub q: [i8; QK_K],
    /// `bsums[s] = Σ q[16s..16s + 16]`.
    pub bsums: [i16; 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            q: [0; QK_K],
            bsums: [0; 16],
        }
    }
}

/// Quantises `x` (a multiple of 256 long) per 256: `d = max|x| / 127`, `q = round(x/d)`, and
/// the sums of each 16. A NaN or an infinity is refused ([`Error::NonFinite`]).
pub fn quantize_q8k(x: &[f32], out: &mut Vec<BlockQ8K>) -> Result<()> {
    out.clear();
    for (bi, c) in x.chunks_exact(QK_K).enumerate() {
        if let Some(j) = c.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "activations",
                index: bi * QK_K + j,
                value: c[j],
            });
        }
        let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = if amax / 127.0 >= f32::MIN_POSITIVE {
            amax / 127.0
        } else {
            0.0
        };
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockQ8K {
            d,
            ..Default::default()
        };
        for (q, &v) in b.q.iter_mut().zip(c) {
            *q = round_to_i8(v * inv);
        }
        for (s, q) in b.bsums.iter_mut().zip(b.q.chunks_exact(16)) {
            *s = q.iter().map(|&v| v as i16).sum();
        }
        out.push(b);
    }
    Ok(())
}

/// `x.round() as i8` (half away from zero, saturating) without a call to libm's `roundf`
/// (which the quantisation of every activation row spent a sixth of a decoder's time in):
/// adding the largest float below ½ with `x`'s sign and truncating gives `roundf`'s result
/// for every finite float (the sum of a float just below ½ and ½ rounds to 1, as it must).
#[inline(always)]
pub fn round_to_i8(x: f32) -> i8 {
    (x + 0.499_999_97f32.copysign(x)) as i8
}

/// 32 activations quantised to `i8`: `x ≈ d·q`, with `s = d·Σq`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
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
/// A NaN or an infinity is refused ([`Error::NonFinite`], with its index): `f32::max` would
/// skip a NaN and the block would quietly become zeros. On the best kernels
/// ([`Kern::quantize_q8`]: the same bits on every instruction set).
pub fn quantize_q8(x: &[f32], out: &mut Vec<BlockQ8>) -> Result<()> {
    out.clear();
    out.resize(x.len() / QK, BlockQ8::default());
    let done = quantize_q8_into(x, out);
    if done.is_err() {
        out.clear();
    }
    done
}

/// [`quantize_q8`] into `out`, which holds one block per 32 values of `x` (else
/// [`Error::ShapeMismatch`]): for a caller that quantises many rows into one buffer.
pub fn quantize_q8_into(x: &[f32], out: &mut [BlockQ8]) -> Result<()> {
    let kern = Kern::best();
    let x = &x[..x.len() / QK * QK];
    if out.len() != x.len() / QK {
        return Err(Error::ShapeMismatch {
            what: "quantised blocks",
            expected: x.len() / QK,
            got: out.len(),
        });
    }
    if !kern.all_finite(x) {
        let index = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::NonFinite {
            what: "activations",
            index,
            value: x[index],
        });
    }
    kern.quantize_q8(x, out);
    Ok(())
}

/// Quantises weights `w` (a multiple of 32 long) to [`BlockQ8_0`], like llama.cpp's
/// `quantize_row_q8_0_ref`: per block `d = max|w| / 127`, stored as `f16`, `q = round(w/d)`
/// — but with `d` as stored (llama.cpp divides by the unrounded one) (so `d·q` is the nearest point of the grid the product multiplies by).
/// A value that is not finite, or a block whose scale overflows `f16`, is refused.
pub fn quantize_q8_0(w: &[f32], out: &mut Vec<BlockQ8_0>) -> Result<()> {
    out.clear();
    out.reserve(w.len() / QK);
    for (bi, c) in w.chunks_exact(QK).enumerate() {
        if let Some(j) = c.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "weights",
                index: bi * QK + j,
                value: c[j],
            });
        }
        let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        if !d.is_finite() {
            let j = c.iter().position(|v| v.abs() == amax).unwrap_or(0);
            return Err(Error::OutOfRange {
                what: "weights",
                index: bi * QK + j,
                value: c[j],
            });
        }
        let df = d.to_f32();
        let inv = if df > 0.0 { 1.0 / df } else { 0.0 };
        out.push(BlockQ8_0 {
            d: d.to_le_bytes(),
            // |w/d| ≤ 127 up to the f16 rounding of d: clamped, never wrapped
            qs: std::array::from_fn(|i| round_to_i8((c[i] * inv).clamp(-127.0, 127.0))),
        });
    }
    Ok(())
}

/// Weight rows per parallel task of a matrix product.
const ROW_BLOCK: usize = 16;

/// The schedule of every matrix product of a weight matrix (`rows` rows) with `n` activation
/// rows: `block(r0, dots, scratch)` writes rows `r0..r0 + dots.len() / n`' dots with every
/// activation into `dots` (`[rows in block × n]`); the results land in `out` as `[n × rows]`.
/// Weight rows go in parallel blocks of 16, so each block of weights is read once and meets
/// every activation row; with several activation rows, the blocks' `[rows × n]` results are
/// transposed at the end. `scratch` is one buffer per task, for a caller that dequantises.
pub fn for_each_block(
    rows: usize,
    n: usize,
    out: &mut [f32],
    block: impl Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
) -> Result<()> {
    if out.len() != n * rows {
        return Err(Error::ShapeMismatch {
            what: "out",
            expected: n * rows,
            got: out.len(),
        });
    }
    if n == 1 {
        // [1 × rows] is [rows × 1]: no transpose
        out.par_chunks_mut(ROW_BLOCK)
            .enumerate()
            .for_each(|(b, o)| block(b * ROW_BLOCK, o, &mut Vec::new()));
    } else if n > 1 {
        let mut tr = vec![0.0f32; rows * n];
        tr.par_chunks_mut(ROW_BLOCK * n)
            .enumerate()
            .for_each(|(b, o)| block(b * ROW_BLOCK, o, &mut Vec::new()));
        // the transpose, in parallel over bands of 16 activation rows: each weight row's 16
        // results are one cache line of `tr`, written to 16 rows of `out` in order
        const BAND: usize = 16;
        out.par_chunks_mut(BAND * rows)
            .enumerate()
            .for_each(|(band, o)| {
                let t0 = band * BAND;
                let m = o.len() / rows;
                for (j, trow) in tr.chunks_exact(n).enumerate() {
                    for (k, &v) in trow[t0..t0 + m].iter().enumerate() {
                        o[k * rows + j] = v;
                    }
                }
            });
    }
    Ok(())
}

/// [`for_each_block`] one weight row at a time: `row(j, dots, scratch)` writes row `j`'s dot
/// with each activation into `dots` (`n` long).
pub fn for_each_row(
    rows: usize,
    n: usize,
    out: &mut [f32],
    row: impl Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
) -> Result<()> {
    for_each_block(rows, n, out, |r0, dots, scratch| {
        for (i, d) in dots.chunks_exact_mut(n).enumerate() {
            row(r0 + i, d, scratch);
        }
    })
}

/// The blocks per weight row of a product of `w_blocks` weight blocks (`rows` rows) with
/// activation rows of `x_blocks` blocks each: an error unless they agree; `None` (and `out`
/// zeroed) when the rows are empty.
fn blocks_per_row(
    w_blocks: usize,
    rows: usize,
    mut x_blocks: impl Iterator<Item = usize> + Clone,
    out: &mut [f32],
) -> Result<Option<usize>> {
    let per_row = x_blocks.clone().next().unwrap_or(0);
    if w_blocks != rows * per_row {
        return Err(Error::ShapeMismatch {
            what: "weight blocks",
            expected: rows * per_row,
            got: w_blocks,
        });
    }
    if let Some(got) = x_blocks.find(|&l| l != per_row) {
        return Err(Error::ShapeMismatch {
            what: "activation blocks",
            expected: per_row,
            got,
        });
    }
    if per_row == 0 {
        out.fill(0.0);
        return Ok(None);
    }
    Ok(Some(per_row))
}

/// `out[t × rows + j] = Σ w_j · xs[t]` for a quantised weight matrix `w` (`rows` rows of
/// `xs[t].len()` blocks each) and quantised activation rows `xs`: integer dot products, a block
/// of weight rows per kernel call, four activation rows per pass over a weight row.
pub fn qmatmul(
    kern: Kern,
    w: QBlocks<'_>,
    rows: usize,
    xs: &[&[BlockQ8]],
    out: &mut [f32],
) -> Result<()> {
    let Some(per_row) = blocks_per_row(w.len(), rows, xs.iter().map(|x| x.len()), out)? else {
        return Ok(());
    };
    let n = xs.len();
    for_each_block(rows, n, out, |r0, dots, _| {
        let rb = dots.len() / n;
        kern.dot_rows(
            w.slice(r0 * per_row..(r0 + rb) * per_row),
            per_row,
            xs,
            dots,
        );
    })
}

/// [`qmatmul`] for a k-quant weight matrix and [`BlockQ8K`] activation rows.
pub fn qmatmul_k(
    kern: Kern,
    w: KBlocks<'_>,
    rows: usize,
    xs: &[&[BlockQ8K]],
    out: &mut [f32],
) -> Result<()> {
    let Some(per_row) = blocks_per_row(w.len(), rows, xs.iter().map(|x| x.len()), out)? else {
        return Ok(());
    };
    let n = xs.len();
    for_each_block(rows, n, out, |r0, dots, _| {
        let rb = dots.len() / n;
        kern.dot_rows_k(
            w.slice(r0 * per_row..(r0 + rb) * per_row),
            per_row,
            xs,
            dots,
        );
    })
}

#[cfg(test)]
mod tests {

    /// `round_to_i8` is `f32::round` (then `as i8`) on the edge cases and on a sweep of the
    /// quantiser's range.
    #[test]
    fn round_to_i8_is_roundf() {
        let below_half = f32::from_bits(0.5f32.to_bits() - 1);
        let mut xs = vec![
            0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 127.0, -127.0,
        ];
        xs.extend([
            below_half,
            -below_half,
            1.0 - below_half,
            127.49,
            127.5,
            128.0,
            -128.5,
            300.0,
        ]);
        let mut x = -128.0f32;
        while x <= 128.0 {
            xs.push(x);
            x = f32::from_bits(x.to_bits().wrapping_add(if x < 0.0 {
                -4099i32 as u32
            } else {
                4099
            }));
            if x.is_nan() || x == 0.0 {
                x = f32::from_bits(4099);
            }
        }
        for &v in &xs {
            assert_eq!(round_to_i8(v), v.round() as i8, "{v:e}");
        }
    }

    use super::*;
    use crate::arch::generic::quant as twin;
    use crate::Isa;

    use crate::testing::uniform as rnd;

    fn h(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
    }

    /// A random row of `blocks` blocks of `Q5_0`.
    fn random_q5_0(blocks: usize, seed: u32) -> Vec<BlockQ5_0> {
        let r = rnd(blocks * 40, seed);
        let byte = |x: f32| ((x + 0.5) * 255.0) as u8;
        (0..blocks)
            .map(|k| BlockQ5_0 {
                d: h(0.1 + r[k * 40].abs()),
                qh: std::array::from_fn(|j| byte(r[k * 40 + 20 + j])),
                qs: std::array::from_fn(|j| byte(r[k * 40 + 2 + j])),
            })
            .collect()
    }

    /// Random bytes as k-quant blocks, their `f16` super-block scales small and finite.
    fn random_k<B: Block>(blocks: usize, seed: u32, scales: &[usize]) -> Vec<u8> {
        let r = rnd(blocks * B::BYTES, seed);
        let mut bytes: Vec<u8> = r.iter().map(|&x| ((x + 0.5) * 255.0) as u8).collect();
        for b in bytes.chunks_exact_mut(B::BYTES) {
            for (i, &at) in scales.iter().enumerate() {
                let v = 0.002 + 0.01 * (i + 1) as f32 * b[at + 1] as f32 / 255.0;
                b[at..at + 2].copy_from_slice(&h(v));
            }
        }
        bytes
    }

    /// A random row of `blocks` blocks of each integer type.
    fn random_rows(blocks: usize, seed: u32) -> (Vec<BlockQ4_0>, Vec<BlockQ4_1>, Vec<BlockQ8_0>) {
        let r = rnd(blocks * 40, seed);
        let nib = |k: usize| std::array::from_fn(|j| ((r[k * 40 + 2 + j] + 0.5) * 255.0) as u8);
        let q40 = (0..blocks)
            .map(|k| BlockQ4_0 {
                d: h(0.1 + r[k * 40].abs()),
                qs: nib(k),
            })
            .collect();
        let q41 = (0..blocks)
            .map(|k| BlockQ4_1 {
                d: h(0.1 + r[k * 40].abs()),
                m: h(r[k * 40 + 1]),
                qs: nib(k),
            })
            .collect();
        let q80 = (0..blocks)
            .map(|k| BlockQ8_0 {
                d: h(0.01 + r[k * 40].abs() * 0.1),
                qs: std::array::from_fn(|j| (r[k * 40 + 2 + j] * 250.0) as i8),
            })
            .collect();
        (q40, q41, q80)
    }

    fn quantized(x: &[f32]) -> Vec<BlockQ8> {
        let mut q = Vec::new();
        quantize_q8(x, &mut q).unwrap();
        q
    }

    /// A NaN or an infinity is refused with its index, never laundered into a zero block.
    #[test]
    fn non_finite_activations_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = vec![0.5f32; 64];
            x[40] = bad;
            let mut q = Vec::new();
            let e = quantize_q8(&x, &mut q).unwrap_err();
            assert!(matches!(e, Error::NonFinite { index: 40, .. }), "{e}");
            // a whole block of NaN too (f32::max skips NaN, so amax would be 0)
            let mut q = Vec::new();
            assert!(quantize_q8(&[f32::NAN; 32], &mut q).is_err());
        }
    }

    /// A block whose largest value is below the normal range quantises to zeros (its `1/d`
    /// would overflow and saturate the values to ±128), in both quantisers; a product with
    /// no activation rows writes nothing on every instruction set.
    #[test]
    fn tiny_blocks_quantise_to_zero_and_empty_products_do_nothing() {
        let tiny = [1e-40f32, -3e-42, 0.0, 2e-39];
        let x: Vec<f32> = (0..256).map(|i| tiny[i % 4]).collect();
        let q = quantized(&x);
        assert!(
            q.iter().all(|b| b.d == 0.0 && b.q.iter().all(|&v| v == 0)),
            "{q:?}"
        );
        let mut k = Vec::new();
        quantize_q8k(&x, &mut k).unwrap();
        assert!(k.iter().all(|b| b.q.iter().all(|&v| v == 0)));
        let (_, _, q80) = random_rows(4, 1);
        for isa in Isa::available() {
            let mut out: [f32; 0] = [];
            isa.kern()
                .unwrap()
                .dot_rows(QBlocks::Q8_0(&q80), 2, &[], &mut out);
        }
    }

    /// Weights to `Q8_0`: every value within half a step of its block's grid, the scale an
    /// `f16`; a non-finite value or an overflowing scale refused with its index.
    #[test]
    fn weights_quantise_to_q8_0_within_half_a_step() {
        let mut w = rnd(32 * 40, 11);
        w[70] = 3.0;
        w.extend([0.0f32; 32]);
        let mut q = Vec::new();
        quantize_q8_0(&w, &mut q).unwrap();
        assert_eq!(q.len(), 41);
        for (b, c) in q.iter().zip(w.chunks_exact(32)) {
            let d = b.scale();
            let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!((d - amax / 127.0).abs() <= amax / 127.0 * 1e-3 + 1e-9);
            for (&v, &x) in b.qs.iter().zip(c) {
                assert!(v != -128);
                assert!(
                    (d * v as f32 - x).abs() <= d * 0.5 + amax * 1e-3,
                    "{x} {v} {d}"
                );
            }
        }
        assert!(q[40].qs.iter().all(|&v| v == 0) && q[40].scale() == 0.0);
        w[5] = f32::NAN;
        let e = quantize_q8_0(&w, &mut q).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 5, .. }), "{e}");
        w[5] = 1e9;
        let e = quantize_q8_0(&w, &mut q).unwrap_err();
        assert!(matches!(e, Error::OutOfRange { index: 5, .. }), "{e}");
    }

    /// Every instruction set's dots against the scalar twin, one to nine activation rows.
    #[test]
    fn every_dot_matches_its_scalar_twin() {
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            for blocks in [1, 2, 18, 48] {
                let (q40, q41, q80) = random_rows(blocks, blocks as u32 + 3);
                let q50 = random_q5_0(blocks, blocks as u32 + 9);
                let mut xf = rnd(blocks * 32, 5);
                xf[3] = 40.0; // one outlier, as real activations have
                let xs: Vec<Vec<BlockQ8>> = std::iter::once(quantized(&xf))
                    .chain((0..8).map(|t| quantized(&rnd(blocks * 32, 20 + t))))
                    .collect();
                // 1 to 9 rows: every width of the four- and eight-row passes, and a second pass
                for n in 1..=9 {
                    let a: Vec<&[BlockQ8]> = xs[..n].iter().map(|x| &x[..]).collect();
                    for w in [
                        QBlocks::Q4_0(&q40),
                        QBlocks::Q4_1(&q41),
                        QBlocks::Q5_0(&q50),
                        QBlocks::Q8_0(&q80),
                    ] {
                        let mut got = vec![0.0; n];
                        k.dot(w, &a, &mut got);
                        for (t, x) in a.iter().enumerate() {
                            let want = twin::dot_one(w, x);
                            assert!(
                                (got[t] - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{isa:?} {w:?} × {blocks}, row {t} of {n}: {} vs {want}",
                                got[t]
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every instruction set's k-quant dots against the scalar twin: the same integer sums and
    /// float operations, so the same value (up to the last bit, allowed for), one to five
    /// activation rows, through `qmatmul_k` too.
    #[test]
    fn every_k_quant_dot_matches_its_scalar_twin() {
        for blocks in [1, 3, 8] {
            let b4 = random_k::<BlockQ4K>(blocks * 5, 3 + blocks as u32, &[0, 2]);
            let b5 = random_k::<BlockQ5K>(blocks * 5, 4 + blocks as u32, &[0, 2]);
            let b6 = random_k::<BlockQ6K>(blocks * 5, 5 + blocks as u32, &[208]);
            let (q4, q5, q6): (&[BlockQ4K], &[BlockQ5K], &[BlockQ6K]) =
                (blocks_of(&b4), blocks_of(&b5), blocks_of(&b6));
            let xs: Vec<Vec<BlockQ8K>> = (0..5)
                .map(|t| {
                    let mut x = rnd(blocks * QK_K, 50 + t);
                    x[7] = 30.0; // an outlier
                    let mut q = Vec::new();
                    quantize_q8k(&x, &mut q).unwrap();
                    q
                })
                .collect();
            for isa in Isa::available() {
                let k = isa.kern().unwrap();
                for n in 1..=5 {
                    let a: Vec<&[BlockQ8K]> = xs[..n].iter().map(|x| &x[..]).collect();
                    for w in [KBlocks::Q4K(q4), KBlocks::Q5K(q5), KBlocks::Q6K(q6)] {
                        let rows = 5;
                        let mut got = vec![0.0; n * rows];
                        qmatmul_k(k, w, rows, &a, &mut got).unwrap();
                        for r in 0..rows {
                            let wr = w.slice(r * blocks..(r + 1) * blocks);
                            for (t, x) in a.iter().enumerate() {
                                let want = twin::dot_one_k(wr, x);
                                let g = got[t * rows + r];
                                assert!(
                                    (g - want).abs() <= 1e-6 * (1.0 + want.abs()),
                                    "{isa:?} {blocks} blocks, row {r}, act {t} of {n}: {g} vs {want}"
                                );
                            }
                        }
                    }
                }
                let a = [&xs[0][..]];
                assert!(qmatmul_k(k, KBlocks::Q4K(&q4[1..]), 5, &a, &mut [0.0; 5]).is_err());
            }
        }
    }

    fn blocks_of<B: Block>(b: &[u8]) -> &[B] {
        blocks(b).unwrap()
    }

    #[test]
    fn q8k_keeps_the_sums_of_each_16_and_refuses_nan() {
        let x = rnd(512, 3);
        let mut q = Vec::new();
        quantize_q8k(&x, &mut q).unwrap();
        assert_eq!(q.len(), 2);
        for (b, c) in q.iter().zip(x.chunks(256)) {
            for s in 0..16 {
                let want: i32 = b.q[16 * s..16 * s + 16].iter().map(|&v| v as i32).sum();
                assert_eq!(b.bsums[s] as i32, want);
            }
            for (&v, &xv) in b.q.iter().zip(c) {
                assert!((v as f32 * b.d - xv).abs() <= 0.5 * b.d + 1e-7);
            }
        }
        let mut bad = x.clone();
        bad[300] = f32::NAN;
        let e = quantize_q8k(&bad, &mut q).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 300, .. }), "{e}");
    }

    #[test]
    fn quantised_dots_match_dequantised_f64() {
        let blocks = 18; // 576 elements, SmolLM2's width
        let (q40, q41, q80) = random_rows(blocks, 7);
        let xf = rnd(blocks * 32, 11);
        let xq = quantized(&xf);
        let deq: Vec<f64> = xq
            .iter()
            .flat_map(|b| b.q.iter().map(move |&q| b.d as f64 * q as f64))
            .collect();
        let wf: [Vec<f64>; 3] = [
            q40.iter()
                .flat_map(|b| {
                    let d = b.scale() as f64;
                    let lo = b.qs.map(|q| d * ((q & 15) as f64 - 8.0));
                    let hi = b.qs.map(|q| d * ((q >> 4) as f64 - 8.0));
                    lo.into_iter().chain(hi)
                })
                .collect(),
            q41.iter()
                .flat_map(|b| {
                    let (d, m) = b.scale_min();
                    let lo = b.qs.map(|q| d as f64 * (q & 15) as f64 + m as f64);
                    let hi = b.qs.map(|q| d as f64 * (q >> 4) as f64 + m as f64);
                    lo.into_iter().chain(hi)
                })
                .collect(),
            q80.iter()
                .flat_map(|b| b.qs.map(|q| b.scale() as f64 * q as f64))
                .collect(),
        ];
        for (w, wf) in [
            QBlocks::Q4_0(&q40),
            QBlocks::Q4_1(&q41),
            QBlocks::Q8_0(&q80),
        ]
        .into_iter()
        .zip(&wf)
        {
            let want: f64 = wf.iter().zip(&deq).map(|(a, b)| a * b).sum();
            let scale: f64 = wf.iter().zip(&deq).map(|(a, b)| (a * b).abs()).sum();
            let got = twin::dot_one(w, &xq) as f64;
            assert!((got - want).abs() <= 1e-5 * scale, "{w:?}: {got} vs {want}");
            // and close to the f32 product (activation quantisation error only)
            let full: f64 = wf.iter().zip(&xf).map(|(a, &b)| a * b as f64).sum();
            assert!((got - full).abs() <= 0.02 * scale, "{w:?}: {got} vs {full}");
        }
    }

    #[test]
    fn qmatmul_matches_row_dots_and_checks_lengths() {
        let (rows, blocks) = (37, 2);
        let mut w = Vec::new();
        for r in 0..rows {
            w.extend(random_rows(blocks, r as u32 + 1).1);
        }
        let xs: Vec<Vec<BlockQ8>> = (0..6).map(|t| quantized(&rnd(64, 100 + t))).collect();
        for isa in Isa::available() {
            let k = isa.kern().unwrap();
            for n in [1, 3, 6] {
                let a: Vec<&[BlockQ8]> = xs[..n].iter().map(|x| &x[..]).collect();
                let mut out = vec![0.0; n * rows];
                qmatmul(k, QBlocks::Q4_1(&w), rows, &a, &mut out).unwrap();
                for t in 0..n {
                    for j in 0..rows {
                        let mut one = [0.0];
                        let wr = QBlocks::Q4_1(&w[j * blocks..(j + 1) * blocks]);
                        k.dot(wr, &a[t..t + 1], &mut one);
                        assert_eq!(out[t * rows + j], one[0]);
                    }
                }
            }
            let a = [&xs[0][..]];
            assert!(qmatmul(k, QBlocks::Q4_1(&w[1..]), rows, &a, &mut [0.0; 37]).is_err());
            assert!(qmatmul(k, QBlocks::Q4_1(&w), rows, &a, &mut [0.0; 3]).is_err());
        }
    }

    #[test]
    fn bytes_view_as_blocks() {
        let bytes: Vec<u8> = (0..40).collect();
        let b: &[BlockQ4_1] = blocks(&bytes).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].d, [20, 21]);
        assert_eq!(b[1].qs[15], 39);
        assert!(blocks::<BlockQ4_1>(&bytes[1..]).is_none());
        assert_eq!(blocks::<BlockQ6K>(&[0; 420]).unwrap().len(), 2);
    }
}
