//! AVX2 + FMA + F16C kernels (x86-64), one file per family; each kernel's scalar twin sits in
//! the same-named file of `arch/generic/`.

pub(crate) mod elementwise;
pub(crate) mod panel;
pub(crate) mod quant;
mod softmax;

use crate::arch::Table;
use crate::{Features, Isa};

static TABLE: Table = table!(Isa::Avx2);

/// The table, when this processor has AVX2, FMA and F16C.
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    (f.avx2 && f.fma && f.f16c).then_some(&TABLE)
}
