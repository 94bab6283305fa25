//! AVX-512 (F) kernels (x86-64) for the families where 16-lane registers pay: the panel
//! micro-kernels and the softmax step, whose panels are exactly one `zmm` wide; and, where the
//! processor has VNNI, the `Q5_0` / `Q8_0` dots ([`quant`]). Packing, element-wise code and
//! the other dots are the AVX2 builds (bound by decoding blocks or by memory, not by the width
//! of an FMA); each kernel's scalar twin sits in the same-named file of `arch/generic/`.

mod panel;
mod quant;
mod softmax;

use super::avx2::elementwise;
use crate::arch::Table;
use crate::{Features, Isa};

/// AVX-512F with the AVX2 dots.
mod plain {
    use super::super::avx2::{elementwise, quant};
    use super::{panel, softmax};
    use crate::Isa;

    pub(super) static TABLE: crate::arch::Table = table!(Isa::Avx512);
}

/// AVX-512F with the VNNI dots.
static TABLE_VNNI: Table = table!(Isa::Avx512);

/// The table, when this processor has AVX-512F besides AVX2, FMA and F16C (the AVX2 entries
/// of this table need those): with the VNNI dots when it also has AVX-512BW/VL/VNNI.
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    if !(f.avx512f && f.avx2 && f.fma && f.f16c) {
        return None;
    }
    Some(if f.avx512vnni {
        &TABLE_VNNI
    } else {
        &plain::TABLE
    })
}
