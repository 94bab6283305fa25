//! # attend-kernels — every `unsafe` line and every instruction set of attend
//!
//! The numeric kernels under attention, linear layers and quantised products, each written
//! twice: a safe, portable twin in `arch/generic/` (the oracle, and what runs anywhere) and a
//! SIMD build per instruction set in `arch/<target>/<isa>/`, chosen at run time (never by
//! `target-cpu`). One capability detection ([`Features`]), cached; one [`Isa`] that forces every
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
//! Adding an instruction set is adding a folder under `arch/` with one file per family and a
//! [`Table`](arch) of its kernels, and one line in `arch/mod.rs`'s list.
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
