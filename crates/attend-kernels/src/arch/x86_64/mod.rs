//! x86-64 instruction sets.

pub(crate) mod avx2;
