//! GELU, the linear layers' epilogue and the NaN/inf check of inputs, portable scalar Rust. The SIMD builds compile this
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
