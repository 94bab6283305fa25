//! AVX2 + FMA + F16C kernels (x86-64), one file per family; each kernel's scalar twin sits in
//! the same-named file of `arch/generic/`.

mod elementwise;
mod panel;
mod quant;
mod softmax;

use crate::arch::Table;
use crate::{Features, Isa};

static TABLE: Table = Table {
    isa: Isa::Avx2,
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

/// The table, when this processor has AVX2, FMA and F16C.
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    (f.avx2 && f.fma && f.f16c).then_some(&TABLE)
}
