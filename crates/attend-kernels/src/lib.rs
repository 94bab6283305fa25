//! # attend-kernels — every `unsafe` line and every instruction set of attend
//!
//! The numeric kernels under attention, linear layers and quantised products: each has a safe,
//! portable twin in `arch/generic/` (the oracle, and what runs anywhere) and a SIMD build,
//! chosen at run time (never by `target-cpu`). The SIMD kernels that every instruction set
//! has — panel micro-kernels, the online-softmax step, the 32-element quantised dots — are
//! written once in `arch/simd/`, over per-ISA vector primitives (`F32s`, `Q32`; the x86-64
//! ones in `arch/x86_64/vector.rs`); what only one instruction set has (AVX2's packing and
//! k-quant dots, AVX-512 VNNI's repacked-weight kernel) sits in `arch/<target>/<isa>/`. The
//! kernels take checked strided views ([`MatRef`], [`MatMut`]) rather than slices with offsets
//! and strides. One capability detection ([`Features`]), cached; one [`Isa`] that forces every
//! family at once; one checked dispatcher ([`Kern`]) that asserts every bound before an
//! `unsafe` kernel runs, so a wrong call is a panic in this crate, never an out-of-bounds access.
//!
//! Families (one file each per instruction set):
//! - *panel* micro-kernels and packing: [`Kern::gemm_a`], [`Kern::gemm_b`], [`Kern::pack_panels`];
//! - *softmax*: one online-softmax step ([`Kern::softmax_cols`]), `exp2` rows
//!   ([`Kern::exp_rows`]), column rescaling ([`Kern::scale_cols`]);
//! - *quant*: ggml block types ([`quant`]), 8-bit activation blocks, quantised dot products
//!   ([`Kern::dot`]) and the scheduling of a quantised matrix product ([`quant::qmatmul`]);
//! - *elementwise*: GELU and the linear layers' epilogue ([`Kern::gelu`], [`Kern::epilogue`]),
//!   the NaN/inf check of inputs ([`Kern::all_finite`]); the scalar math they are built from
//!   is [`math`].
//!
//! On top of the panel kernels: [`gemm`], matrix products with weights packed once, and the
//! `gemm` crate's strided sgemm behind a bounds-checked signature.
//!
//! Adding an instruction set is implementing the two primitive traits for its registers,
//! invoking `arch::simd::entries!` in a folder under `arch/` with a `Table` of its
//! kernels (the others may be the twins), and one line in `arch/mod.rs`'s list.
#![warn(missing_docs)]

mod arch;
mod error;
pub mod gemm;
mod kern;
mod mat;
pub mod math;
pub mod quant;
#[doc(hidden)]
pub mod testing;
pub mod tiled;

pub use error::{Error, Result};
pub use gemm::{matmul_packed, matmul_packed_map, matmul_packed_with, Epilogue, PackedMatrix};
pub use kern::{force_isa, Features, Isa, Kern, NR};
pub use mat::{Mat, MatMut, MatRef};
