//! Dequantisation of one row of any type attend reads, on the block types.

use attend_kernels::math::f16;
use attend_kernels::quant::{
    blocks, scale_min_k4, Block, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K,
    BlockQ8_0,
};

use super::GgmlType;
use crate::{Error, Result};

/// `src` as blocks of `B` (its length was checked against the row's).
fn typed<B: Block>(src: &[u8]) -> Result<&[B]> {
    blocks(src).ok_or_else(|| Error::Invalid(format!("{} bytes are not whole blocks", src.len())))
}

/// Dequantises one row of `out.len()` elements of type `ty` from `src` (exactly
/// `ty.row_bytes(out.len())` bytes).
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    if !ty.supported() {
        return Err(Error::Invalid(format!(
            "ggml type {ty:?} is not supported yet ({} are)",
            GgmlType::SUPPORTED
        )));
    }
    let n = out.len();
    if !n.is_multiple_of(ty.block_elems()) || src.len() != ty.row_bytes(n) {
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
                *o = f16([c[0], c[1]]);
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(typed::<BlockQ8_0>(src)?) {
                let d = b.scale();
                for (x, &q) in o.iter_mut().zip(&b.qs) {
                    *x = d * q as f32;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(typed::<BlockQ4_0>(src)?) {
                nibbles(o, &b.qs, b.scale(), 8, 0.0);
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(32).zip(typed::<BlockQ4_1>(src)?) {
                let (d, m) = b.scale_min();
                nibbles(o, &b.qs, d, 0, m);
            }
        }
        GgmlType::Q5_0 => {
            for (o, b) in out.chunks_exact_mut(32).zip(typed::<BlockQ5_0>(src)?) {
                let (d, qh) = (f16(b.d), u32::from_le_bytes(b.qh));
                for j in 0..16 {
                    let hi = |k: usize| (((qh >> k) & 1) << 4) as u8;
                    o[j] = d * (((b.qs[j] & 0x0f) | hi(j)) as i32 - 16) as f32;
                    o[j + 16] = d * (((b.qs[j] >> 4) | hi(j + 16)) as i32 - 16) as f32;
                }
            }
        }
        GgmlType::Q4_K => {
            // each 64 elements take 32 bytes: low nibbles, then high
            for (o, b) in out.chunks_exact_mut(256).zip(typed::<BlockQ4K>(src)?) {
                let (d, dmin) = b.d_dmin();
                for (c, chunk) in o.chunks_exact_mut(64).enumerate() {
                    let q = &b.qs[c * 32..(c + 1) * 32];
                    let (s1, m1) = scale_min_k4(2 * c, &b.scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, &b.scales);
                    let (d1, m1, d2, m2) = (
                        d * s1 as f32,
                        dmin * m1 as f32,
                        d * s2 as f32,
                        dmin * m2 as f32,
                    );
                    for l in 0..32 {
                        chunk[l] = d1 * (q[l] & 0x0f) as f32 - m1;
                        chunk[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q5_K => {
            // as Q4_K, the fifth bits of elements 64c + l and 64c + 32 + l being bits 2c and
            // 2c + 1 of qh[l]
            for (o, b) in out.chunks_exact_mut(256).zip(typed::<BlockQ5K>(src)?) {
                let (d, dmin) = b.d_dmin();
                for (c, chunk) in o.chunks_exact_mut(64).enumerate() {
                    let q = &b.qs[c * 32..(c + 1) * 32];
                    let (s1, m1) = scale_min_k4(2 * c, &b.scales);
                    let (s2, m2) = scale_min_k4(2 * c + 1, &b.scales);
                    let (d1, m1, d2, m2) = (
                        d * s1 as f32,
                        dmin * m1 as f32,
                        d * s2 as f32,
                        dmin * m2 as f32,
                    );
                    for l in 0..32 {
                        let h = b.qh[l];
                        let lo = (q[l] & 0x0f) | (((h >> (2 * c)) & 1) << 4);
                        let hi = (q[l] >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
                        chunk[l] = d1 * lo as f32 - m1;
                        chunk[l + 32] = d2 * hi as f32 - m2;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (o, b) in out.chunks_exact_mut(256).zip(typed::<BlockQ6K>(src)?) {
                let d = f16(b.d);
                for half in 0..2 {
                    let ql = &b.ql[half * 64..half * 64 + 64];
                    let qh = &b.qh[half * 32..half * 32 + 32];
                    let sc = &b.scales[half * 8..half * 8 + 8];
                    let y = &mut o[half * 128..half * 128 + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let s = |k: usize| d * sc[is + k] as f32;
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

/// 32 four-bit values: `o[j] = d·(low(qs[j]) − bias) + m`, `o[j + 16] = d·(high(qs[j]) − bias) + m`.
fn nibbles(o: &mut [f32], qs: &[u8; 16], d: f32, bias: i32, m: f32) {
    for j in 0..16 {
        o[j] = d * ((qs[j] & 0x0f) as i32 - bias) as f32 + m;
        o[j + 16] = d * ((qs[j] >> 4) as i32 - bias) as f32 + m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{Activation, QMatrix};

    fn h(v: f32) -> [u8; 2] {
        half::f16::from_f32(v).to_le_bytes()
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

    /// Random Q4_K / Q6_K / Q5_0 / Q5_K blocks and the values the `gguf` Python package (llama.cpp's
    /// reference code) gives them (scripts/golden_kquants.py).
    #[test]
    fn k_quants_match_the_gguf_reference() {
        let g: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/kquants.json")).unwrap();
        for (name, ty) in [
            ("Q4_K", GgmlType::Q4_K),
            ("Q6_K", GgmlType::Q6_K),
            ("Q5_0", GgmlType::Q5_0),
            ("Q5_K", GgmlType::Q5_K),
        ] {
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
            // and a matrix of them multiplies: 8-bit activations, within their rounding of the
            // float product; exact activations, within f32 rounding
            let m = QMatrix::new(ty, 3, 256, &bytes).unwrap();
            let x = Activation::new(&rnd(256, 9)).unwrap();
            let mut out = vec![0.0; 3];
            m.matmul(std::slice::from_ref(&x), &mut out).unwrap();
            let want0: f32 = want[..256].iter().zip(&x.f).map(|(a, b)| a * b).sum();
            let scale: f32 = want[..256]
                .iter()
                .zip(&x.f)
                .map(|(a, b)| (a * b).abs())
                .sum();
            assert!(
                (out[0] - want0).abs() < 0.01 * scale,
                "{name}: {} vs {want0}",
                out[0]
            );
            let ex = Activation::exact(&x.f);
            m.matmul(std::slice::from_ref(&ex), &mut out).unwrap();
            assert!(
                (out[0] - want0).abs() < 1e-5 * scale,
                "{name}: {} vs {want0}",
                out[0]
            );
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
        assert!(dequantize_row(GgmlType::Q3_K, &[0; 110], &mut [0.0; 256]).is_err());
    }

    use attend_kernels::testing::uniform as rnd;
}
