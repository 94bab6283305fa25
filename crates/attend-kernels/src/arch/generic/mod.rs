//! The portable kernels: safe scalar Rust, the twin of every SIMD build and what runs on any
//! processor. One file per family.

pub(crate) mod elementwise;
pub(crate) mod panel;
pub(crate) mod quant;
pub(crate) mod softmax;

use super::Table;
use crate::Isa;

pub(crate) static TABLE: Table = table!(Isa::Scalar);

/// Always available.
pub(crate) fn table() -> Option<&'static Table> {
    Some(&TABLE)
}
