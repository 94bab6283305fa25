//! Compact weights for the page: each row scaled by its own maximum and stored in 8 or 16
//! bits, or — where the page would pass its budget — only each row's largest weights plus the
//! sum of the rest; zlib-compressed (the page inflates it with the browser's own
//! `DecompressionStream`) and base64-encoded.
//!
//! A map is written one matrix at a time ([`MapWriter`]), so a page never holds more than one
//! matrix of floats besides what it has encoded. Two streams (little-endian): `head` holds
//! `scales: f32[m·r]` (dense), or `scales: f32[m·r]`, `rest: f32[m·r]` (the dropped weights'
//! sum) and `index: u32[m·r·t]` (top); `data` holds `values: u8|u16[m·r·k]` (dense) or
//! `[m·r·t]` (top), a weight being `value · scale`.

use std::io::Write;

use base64::Engine;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use serde::Serialize;

/// How one map's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Every weight.
    Dense,
    /// Each row's `top` largest weights and the sum of the others.
    Top,
}

/// One map, encoded.
#[derive(Clone, Debug, Serialize)]
pub struct Encoded {
    /// Dense or top.
    pub encoding: Encoding,
    /// Bits per stored weight: 8 or 16.
    pub bits: u32,
    /// Weights kept per row (top encoding), else the row length.
    pub top: usize,
    /// base64 of the zlib stream of the scales (and, top encoding, the rests and indices).
    pub head: String,
    /// base64 of the zlib stream of the values.
    pub data: String,
}

fn levels(bits: u32) -> f32 {
    if bits == 16 {
        65535.0
    } else {
        255.0
    }
}

fn push_value(out: &mut Vec<u8>, q: f32, bits: u32) {
    let q = q.round().clamp(0.0, levels(bits));
    if bits == 16 {
        out.extend_from_slice(&(q as u16).to_le_bytes());
    } else {
        out.push(q as u8);
    }
}

fn row_scale(row: &[f32], bits: u32) -> f32 {
    let max = row
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f32, f32::max);
    max / levels(bits)
}

fn quantise(w: f32, scale: f32) -> f32 {
    if scale > 0.0 && w.is_finite() {
        w.max(0.0) / scale
    } else {
        0.0
    }
}

/// Writes one map's matrices, one at a time, in the dense or the top layout.
pub struct MapWriter {
    encoding: Encoding,
    bits: u32,
    keys: usize,
    top: usize,
    scales: Vec<u8>,
    rest: Vec<u8>,
    index: Vec<u8>,
    values: ZlibEncoder<Vec<u8>>,
}

impl MapWriter {
    /// Every weight of rows of `keys`.
    pub fn dense(keys: usize, bits: u32) -> MapWriter {
        MapWriter::new(Encoding::Dense, keys, keys, bits)
    }

    /// Each row's `top` largest weights and the rest's sum.
    pub fn top(keys: usize, top: usize, bits: u32) -> MapWriter {
        MapWriter::new(Encoding::Top, keys, top.min(keys), bits)
    }

    fn new(encoding: Encoding, keys: usize, top: usize, bits: u32) -> MapWriter {
        MapWriter {
            encoding,
            bits,
            keys: keys.max(1),
            top,
            scales: Vec::new(),
            rest: Vec::new(),
            index: Vec::new(),
            // (level 1: a third of level 6's time on the large pages, ~10% larger)
            values: ZlibEncoder::new(Vec::new(), Compression::fast()),
        }
    }

    /// Adds the rows of one matrix (`keys` weights each); rows are encoded in parallel, in
    /// order.
    pub fn push(&mut self, matrix: &[f32]) {
        use rayon::prelude::*;
        let (encoding, bits, keys, top) = (self.encoding, self.bits, self.keys, self.top);
        // (scale, rest, index, values) of each row
        let rows: Vec<(f32, f32, Vec<u32>, Vec<u8>)> = matrix
            .par_chunks_exact(keys)
            .with_min_len(64)
            .map(|row| {
                let scale = row_scale(row, bits);
                let mut values = Vec::with_capacity(row.len() * bits as usize / 8);
                match encoding {
                    Encoding::Dense => {
                        for &w in row {
                            push_value(&mut values, quantise(w, scale), bits);
                        }
                        (scale, 0.0, Vec::new(), values)
                    }
                    Encoding::Top => {
                        // the `top` largest (ties: the earlier key), in that order
                        let by = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
                        let mut order: Vec<usize> = (0..keys).collect();
                        if top < keys {
                            order.select_nth_unstable_by(top, by);
                            order.truncate(top);
                        }
                        order.sort_by(by);
                        let total: f32 = row.iter().filter(|v| v.is_finite()).sum();
                        let kept: f32 = order.iter().map(|&k| row[k]).sum();
                        for &k in &order {
                            push_value(&mut values, quantise(row[k], scale), bits);
                        }
                        let index = order.iter().map(|&k| k as u32).collect();
                        (scale, (total - kept).max(0.0), index, values)
                    }
                }
            })
            .collect();
        for (scale, rest, index, values) in rows {
            self.scales.extend_from_slice(&scale.to_le_bytes());
            if encoding == Encoding::Top {
                self.rest.extend_from_slice(&rest.to_le_bytes());
                for k in index {
                    self.index.extend_from_slice(&k.to_le_bytes());
                }
            }
            // writing into a Vec cannot fail
            let _ = self.values.write_all(&values);
        }
    }

    /// Bytes written so far, compressed (what the page will hold, before base64).
    pub fn compressed_len(&self) -> usize {
        self.values.get_ref().len() + self.scales.len() + self.rest.len() + self.index.len()
    }

    /// The map.
    pub fn finish(self) -> Encoded {
        let values = self.values.finish().unwrap_or_default();
        let mut head = self.scales;
        head.extend_from_slice(&self.rest);
        head.extend_from_slice(&self.index);
        Encoded {
            encoding: self.encoding,
            bits: self.bits,
            top: self.top,
            head: pack(&head),
            data: base64::engine::general_purpose::STANDARD.encode(values),
        }
    }
}

/// zlib, then base64.
pub fn pack(bytes: &[u8]) -> String {
    let mut z = ZlibEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::new(6));
    // writing into a Vec cannot fail
    let _ = z.write_all(bytes);
    let compressed = z.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(compressed)
}

/// One map in the dense layout.
pub fn dense(data: &[f32], keys: usize, bits: u32) -> Encoded {
    let mut w = MapWriter::dense(keys, bits);
    w.push(data);
    w.finish()
}

/// One map in the top layout.
pub fn top(data: &[f32], keys: usize, top: usize, bits: u32) -> Encoded {
    let mut w = MapWriter::top(keys, top, bits);
    w.push(data);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    fn unpack(s: &str) -> Vec<u8> {
        let z = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let mut out = Vec::new();
        ZlibDecoder::new(&z[..]).read_to_end(&mut out).unwrap();
        out
    }

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn dense_rows_round_trip_within_half_a_step() {
        let data = [0.5, 0.25, 0.25, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0];
        for bits in [8, 16] {
            let e = dense(&data, 3, bits);
            let scales = f32s(&unpack(&e.head));
            let b = unpack(&e.data);
            let vals: Vec<f32> = if bits == 8 {
                b.iter().map(|&v| v as f32).collect()
            } else {
                b.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
                    .collect()
            };
            assert_eq!(vals.len(), 9);
            for (i, &w) in data.iter().enumerate() {
                let got = vals[i] * scales[i / 3];
                assert!(
                    (got - w).abs() <= scales[i / 3] * 0.5 + 1e-7,
                    "{bits} bits: {got} vs {w}"
                );
            }
            // an all-zero row stays zero
            assert_eq!(&vals[6..], &[0.0, 0.0, 0.0]);
        }
    }

    #[test]
    fn top_keeps_the_largest_and_the_rest_sum() {
        let data = [0.1, 0.6, 0.05, 0.25];
        let e = top(&data, 4, 2, 8);
        let (h, b) = (unpack(&e.head), unpack(&e.data));
        let scale = f32s(&h[0..4])[0];
        let rest = f32s(&h[4..8])[0];
        let idx: Vec<u32> = h[8..16]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(idx, vec![1, 3]);
        assert!((rest - 0.15).abs() < 1e-6);
        assert!((b[0] as f32 * scale - 0.6).abs() < 1e-6);
        assert!((b[1] as f32 * scale - 0.25).abs() <= scale);
    }
}
