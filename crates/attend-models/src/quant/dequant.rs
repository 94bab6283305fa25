//! Dequantisation of one row of any type attend reads, on the block types.

use attend_kernels::math::f16;
use attend_kernels::quant::{
    blocks, Block, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ6K, BlockQ8_0,
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
            "ggml type {ty:?} is not supported yet (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q6_K are)"
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
                let (d, dmin) = (f16(b.d), f16(b.dmin));
                let sc = &b.scales;
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
                    let q = &b.qs[c * 32..(c + 1) * 32];
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

    /// Random Q4_K / Q6_K / Q5_0 blocks and the values the `gguf` Python package (llama.cpp's
    /// reference code) gives them (scripts/golden_kquants.py).
    #[test]
    fn k_quants_match_the_gguf_reference() {
        let g: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/kquants.json")).unwrap();
        for (name, ty) in [
            ("Q4_K", GgmlType::Q4_K),
            ("Q6_K", GgmlType::Q6_K),
            ("Q5_0", GgmlType::Q5_0),
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
            // and a matrix of them multiplies (through the dequantising path)
            let m = QMatrix::new(ty, 3, 256, &bytes).unwrap();
            let x = Activation::new(&rnd(256, 9)).unwrap();
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

    use attend_kernels::testing::uniform as rnd;
}
