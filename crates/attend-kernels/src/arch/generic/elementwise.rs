//! GELU, the linear layers' epilogue, the NaN/inf check of inputs and the softmax's final
//! log-sum-exp, portable scalar Rust. The SIMD builds compile this
//! same code with their instruction set enabled (it is branch-free, so it vectorises).

use crate::math::gelu_erf;

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
