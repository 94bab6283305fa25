//! x86-64 instruction sets: the vector primitives the generic kernels are written over
//! ([`vector`]), and per instruction set the kernels that are its own (AVX2's packing and
//! k-quant dots, AVX-512 VNNI's repacked dot) and its table.

pub(crate) mod avx2;
pub(crate) mod avx512;
pub(crate) mod vector;
