//! The portable kernels: safe scalar Rust, the twin of every SIMD build and what runs on any
//! processor. One file per family.

pub(crate) mod elementwise;
pub(crate) mod panel;
pub(crate) mod quant;
pub(crate) mod softmax;

use super::Table;
use crate::Isa;

static TABLE: Table = Table {
    isa: Isa::Scalar,
    gemm_a: panel::gemm_a,
    gemm_b: panel::gemm_b,
    pack_panels: panel::pack_panels,
    softmax_cols: softmax::softmax_cols,
    scale_cols: softmax::scale_cols,
    exp_rows: softmax::exp_rows,
    dot_q4_0: quant::dot_q4_0,
    dot_q4_1: quant::dot_q4_1,
    dot_q8_0: quant::dot_q8_0,
    gelu: elementwise::gelu,
    epilogue: elementwise::epilogue,
};

/// Always available.
pub(crate) fn table() -> Option<&'static Table> {
    Some(&TABLE)
}
