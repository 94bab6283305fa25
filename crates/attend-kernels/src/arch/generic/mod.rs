//! The portable kernels: safe scalar Rust, the twin of every SIMD build and what runs on any
//! processor. One file per family.

pub(crate) mod elementwise;
pub(crate) mod panel;
pub(crate) mod quant;
pub(crate) mod softmax;

/// The twins under the names the table takes the generic SIMD kernels by.
mod kernels {
    pub(crate) use super::panel::{gemm_a, gemm_a as gemm_a_stream, gemm_b};
    pub(crate) use super::quant::{dot_q4_0, dot_q4_1, dot_q5_0, dot_q8_0};
    pub(crate) use super::softmax::{exp_rows, scale_cols, softmax_cols};
}

use super::Table;
use crate::Isa;

pub(crate) static TABLE: Table = table!(Isa::Scalar);

/// Always available.
pub(crate) fn table() -> Option<&'static Table> {
    Some(&TABLE)
}
