//! AVX-512 (F) kernels (x86-64) for the families where 16-lane registers pay: the panel
//! micro-kernels and the softmax step, whose panels are exactly one `zmm` wide. The quantised
//! dots, packing and element-wise code are the AVX2 builds (their work is bound by decoding
//! blocks or by memory, not by the width of an FMA); each kernel's scalar twin sits in the
//! same-named file of `arch/generic/`.

mod panel;
mod softmax;

use super::avx2::{elementwise, quant};
use crate::arch::Table;
use crate::{Features, Isa};

static TABLE: Table = table!(Isa::Avx512);

/// The table, when this processor has AVX-512F besides AVX2, FMA and F16C (the AVX2 entries
/// of this table need those).
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    (f.avx512f && f.avx2 && f.fma && f.f16c).then_some(&TABLE)
}
