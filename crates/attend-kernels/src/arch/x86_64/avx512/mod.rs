//! AVX-512 kernels (x86-64): the generic kernels of `arch/simd/` over `__m512` (a panel of 16
//! lanes is one `zmm`), with AVX2's byte dots, or with VNNI's `vpdpbusd` ones and the repacked
//! kernel ([`quant`]) where the processor has AVX-512 BW/VL/VNNI. Packing, element-wise code
//! and the k-quant dots are the AVX2 builds (bound by decoding blocks or by memory, not by the
//! width of an FMA); each kernel's scalar twin sits in the same-named file of `arch/generic/`.

mod quant;

use crate::arch::Table;
use crate::Features;

/// AVX-512F with the AVX2 dots.
mod plain {
    use super::super::avx2::{elementwise, panel, quant};
    use crate::Isa;

    /// The generic kernels compiled for AVX-512F.
    mod kernels {
        use super::super::super::vector::X86Q;
        use std::arch::x86_64::__m512;
        crate::arch::simd::entries!(__m512, X86Q<false>, "avx512f,avx2,fma,f16c");
    }

    pub(super) static TABLE: crate::arch::Table = table!(Isa::Avx512);
}

/// AVX-512F with the VNNI dots.
mod vnni {
    use super::super::avx2::{elementwise, panel};
    use crate::Isa;

    /// The repacked kernel of this table, and the AVX2 k-quant dots.
    mod quant {
        pub(crate) use super::super::super::avx2::quant::{dot_q4_k, dot_q5_k, dot_q6_k};
        pub(crate) use super::super::quant::{dot_tiled, TILED_NATIVE};
    }

    /// The generic kernels compiled for AVX-512F with VNNI's byte dots.
    mod kernels {
        use super::super::super::vector::X86Q;
        use std::arch::x86_64::__m512;
        crate::arch::simd::entries!(
            __m512,
            X86Q<true>,
            "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
        );
    }

    pub(super) static TABLE: crate::arch::Table = table!(Isa::Avx512);
}

/// The table, when this processor has AVX-512F besides AVX2, FMA and F16C (the AVX2 entries
/// of this table need those): with the VNNI dots when it also has AVX-512BW/VL/VNNI.
pub(crate) fn table() -> Option<&'static Table> {
    let f = Features::get();
    if !(f.avx512f && f.avx2 && f.fma && f.f16c) {
        return None;
    }
    Some(if f.avx512vnni {
        &vnni::TABLE
    } else {
        &plain::TABLE
    })
}
