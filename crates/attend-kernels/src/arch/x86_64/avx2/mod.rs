//! AVX2 + FMA + F16C kernels (x86-64): the generic kernels of `arch/simd/` over `__m256`
//! and AVX2's byte dot ([`kernels`]), and the ones written for AVX2 alone (packing, the
//! k-quant dots, the element-wise loops); each kernel's scalar twin sits in the same-named
//! file of `arch/generic/`.

pub(crate) mod elementwise;
pub(crate) mod panel;
pub(crate) mod quant;

use crate::arch::Table;
use crate::{Features, Isa};

/// The generic kernels compiled for AVX2.
pub(crate) mod kernels {
    use super::super::vector::X86Q;
    use std::arch::x86_64::__m256;
    crate::arch::simd::entries!(__m256, X86Q<false>, "avx2,fma,f16c");
}

static TABLE: Table = table!(Isa::Avx2);

/// The table, when this processor has AVX2, FMA and F16C.
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    (f.avx2 && f.fma && f.f16c).then_some(&TABLE)
}
