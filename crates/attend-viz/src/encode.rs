//! Compact weights for the page: each row scaled by its own maximum and stored in 8 or 16
//! bits, or — where the page would pass its budget — only each row's largest weights plus the
//! sum of the rest; zlib-compressed (the page inflates it with the browser's own
//! `DecompressionStream`) and base64-encoded.
//!
//! Dense layout (little-endian): `scales: f32[m·r]`, then `values: u8|u16[m·r·k]`, a weight
//! being `value · scale`. Top layout: `scales: f32[m·r]`, `rest: f32[m·r]` (the dropped
//! weights' sum), `index: u32[m·r·t]`, `values: u8|u16[m·r·t]`.

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
    /// base64 of the zlib stream.
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

/// The bytes of `rows` rows of `keys` weights, every weight kept.
pub fn dense_bytes(data: &[f32], keys: usize, bits: u32) -> Vec<u8> {
    let rows = data.len() / keys.max(1);
    let mut out = Vec::with_capacity(rows * 4 + data.len() * (bits as usize / 8));
    let scales: Vec<f32> = data
        .chunks_exact(keys.max(1))
        .map(|r| row_scale(r, bits))
        .collect();
    for s in &scales {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for (row, &s) in data.chunks_exact(keys.max(1)).zip(&scales) {
        for &w in row {
            push_value(&mut out, quantise(w, s), bits);
        }
    }
    out
}

/// The bytes of each row's `top` largest weights (ties: the earlier key) and the rest's sum.
pub fn top_bytes(data: &[f32], keys: usize, top: usize, bits: u32) -> Vec<u8> {
    let keys = keys.max(1);
    let top = top.min(keys);
    let rows = data.len() / keys;
    let mut scales = Vec::with_capacity(rows);
    let mut rest = Vec::with_capacity(rows);
    let mut index: Vec<u32> = Vec::with_capacity(rows * top);
    let mut kept: Vec<f32> = Vec::with_capacity(rows * top);
    let mut order: Vec<usize> = Vec::with_capacity(keys);
    for row in data.chunks_exact(keys) {
        order.clear();
        order.extend(0..keys);
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let chosen = &order[..top];
        let total: f32 = row.iter().filter(|v| v.is_finite()).sum();
        let kept_sum: f32 = chosen.iter().map(|&k| row[k]).sum();
        scales.push(row_scale(row, bits));
        rest.push((total - kept_sum).max(0.0));
        index.extend(chosen.iter().map(|&k| k as u32));
        kept.extend(chosen.iter().map(|&k| row[k]));
    }
    let mut out = Vec::new();
    for s in scales.iter().chain(&rest) {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for i in &index {
        out.extend_from_slice(&i.to_le_bytes());
    }
    for (r, &s) in scales.iter().enumerate() {
        for &w in &kept[r * top..][..top] {
            push_value(&mut out, quantise(w, s), bits);
        }
    }
    out
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
    Encoded {
        encoding: Encoding::Dense,
        bits,
        top: keys,
        data: pack(&dense_bytes(data, keys, bits)),
    }
}

/// One map in the top layout.
pub fn top(data: &[f32], keys: usize, top: usize, bits: u32) -> Encoded {
    Encoded {
        encoding: Encoding::Top,
        bits,
        top: top.min(keys),
        data: pack(&top_bytes(data, keys, top, bits)),
    }
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
            let b = unpack(&dense(&data, 3, bits).data);
            let scales = f32s(&b[..12]);
            let vals: Vec<f32> = if bits == 8 {
                b[12..].iter().map(|&v| v as f32).collect()
            } else {
                b[12..]
                    .chunks_exact(2)
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
        let b = unpack(&top(&data, 4, 2, 8).data);
        let scale = f32s(&b[0..4])[0];
        let rest = f32s(&b[4..8])[0];
        let idx: Vec<u32> = b[8..16]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(idx, vec![1, 3]);
        assert!((rest - 0.15).abs() < 1e-6);
        assert!((b[16] as f32 * scale - 0.6).abs() < 1e-6);
        assert!((b[17] as f32 * scale - 0.25).abs() <= scale);
    }
}
