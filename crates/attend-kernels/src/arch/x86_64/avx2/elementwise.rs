//! GELU, the linear layers' epilogue, the NaN/inf check and the log-sum-exp: the generic code (`arch/generic/elementwise.rs`, the
//! twin) compiled with AVX2 + FMA enabled, so that its branch-free loops use 8 lanes.
//!
//! # Safety (every `pub(crate) unsafe fn` here)
//! The caller proves AVX2, FMA and F16C; the code itself is safe Rust.

use crate::arch::generic::elementwise as generic;

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gelu(x: &mut [f32]) {
    generic::gelu(x);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn epilogue(
    v: &mut [f32],
    bias: Option<&[f32]>,
    gelu: bool,
    residual: Option<&[f32]>,
) {
    generic::epilogue(v, bias, gelu, residual);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn all_finite(x: &[f32]) -> bool {
    generic::all_finite(x)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn lse(m: &[f32], l: &[f32], out: &mut [f32]) {
    generic::lse(m, l, out);
}
