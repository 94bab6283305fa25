//! GELU, the linear layers' epilogue, the NaN/inf check of inputs, the softmax's final
//! log-sum-exp and the quantisation of activations to `Q8` blocks, portable scalar Rust. The SIMD builds compile this
//! same code with their instruction set enabled (it is branch-free, so it vectorises).

use crate::math::gelu_erf;
use crate::quant::{round_to_i8, BlockQ8, QK};

/// [`crate::Kern::gelu`].
#[inline(always)]
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = gelu_erf(*v);
    }
}

/// [`crate::Kern::epilogue`]: `v = gelu?(v + bias) + residual`.
#[inline(always)]
pub fn epilogue(v: &mut [f32], bias: Option<&[f32]>, gelu_on: bool, residual: Option<&[f32]>) {
    if let Some(b) = bias {
        for (e, bb) in v.iter_mut().zip(b) {
            *e += bb;
        }
    }
    if gelu_on {
        gelu(v);
    }
    if let Some(res) = residual {
        for (e, rr) in v.iter_mut().zip(res) {
            *e += rr;
        }
    }
}

/// [`crate::Kern::all_finite`]: no NaN and no infinity in `x` (the exponent bits of those are
/// all ones). Branch-free within a chunk, so that it vectorises; stops at the first bad chunk.
#[inline(always)]
pub fn all_finite(x: &[f32]) -> bool {
    const EXP: u32 = 0x7f80_0000;
    x.chunks(1024)
        .all(|c| c.iter().fold(true, |ok, v| ok & (v.to_bits() & EXP != EXP)))
}

/// [`crate::Kern::quantize_q8`]: each 32 values of `x` (finite: the caller checked) to a
/// [`BlockQ8`] in `out` — `d = max|x|/127` (0 for a block below the normal range), `q` the
/// values over `d` rounded half away from zero, `s = d·Σq`. The maximum in sixteen lanes and
/// the rounding by [`round_to_i8`] are branch-free, so that it vectorises; a maximum is
/// exact in any order, so every build gives these bits.
#[inline(always)]
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    for (c, b) in x.chunks_exact(QK).zip(out) {
        let mut m = [0.0f32; 16];
        for h in c.chunks_exact(16) {
            for (m, v) in m.iter_mut().zip(h) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = m.iter().fold(0.0f32, |a, &v| if v > a { v } else { a });
        let d = if amax / 127.0 >= f32::MIN_POSITIVE {
            amax / 127.0
        } else {
            0.0
        };
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.q.iter_mut().zip(c) {
            *q = round_to_i8(v * inv);
            sum += *q as i32;
        }
        b.d = d;
        b.s = d * sum as f32;
    }
}

/// [`crate::Kern::lse`]: `out[i] = (m[i] + log2(l[i])) · ln 2`, the natural log-sum-exp of an
/// online-softmax state kept in log2 units, and `-inf` where `l[i]` is 0 (a row that saw no
/// key). Branch-free (the log2 is [`log2_pos`]), so that it vectorises.
#[inline(always)]
pub fn lse(m: &[f32], l: &[f32], out: &mut [f32]) {
    for ((o, &m), &l) in out.iter_mut().zip(m).zip(l) {
        let x = (m + log2_pos(l)) * std::f32::consts::LN_2;
        *o = if l > 0.0 { x } else { f32::NEG_INFINITY };
    }
}

/// `log2(x)` for a positive normal finite `x`, within 2e-7 relative (of the result) or 1.5e-7
/// absolute: `x = 2^e · m` with `m` in `[√½, √2)`, and `ln m = 2·atanh(s)`, `s = (m−1)/(m+1)`,
/// by its odd series to `s^13` (`|s| < 0.172`, so the first term left out is below 1e-11).
/// Garbage, not a panic, for other inputs (the caller selects them away).
#[inline(always)]
pub fn log2_pos(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += big as i32;
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let mut p = 1.0 / 13.0;
    for c in [1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        p = p * z + c;
    }
    e as f32 + 2.0 * std::f32::consts::LOG2_E * s * p
}
