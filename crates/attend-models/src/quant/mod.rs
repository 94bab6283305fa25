//! ggml tensor types as GGUF numbers them, dequantisation, and matrices in their stored types
//! multiplied the way the formats were designed to be used: integer dot products of quantised
//! weight rows with 8-bit activations (the block types and the kernels are
//! `attend_kernels::quant`'s; the formulas are in its documentation): `Q4_0`, `Q4_1`, `Q5_0`
//! and `Q8_0` rows against activations quantised per 32, the k-quants `Q4_K`, `Q5_K` and
//! `Q6_K` against activations quantised per 256 (`Q8_K`). Only float rows (`F32`, `F16`,
//! `BF16`) are dequantised (once per row per call) and dotted in `f32`, as is every type when
//! the activations are exact (unquantised).
//!
//! Invariant: no dot product or schedule is written here; [`QMatrix::matmul`] hands the
//! integer types to `attend_kernels::quant::qmatmul` / `qmatmul_k` and the others to its row
//! scheduler.

mod dequant;
mod matrix;

pub use attend_kernels::quant::{
    quantize_q8, quantize_q8k, Block, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0,
    BlockQ6K, BlockQ8, BlockQ8K, BlockQ8_0, QK, QK_K,
};
pub use dequant::dequantize_row;
pub use matrix::{Activation, QMatrix};

/// A ggml element type, with the numbers GGUF stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    BF16,
}

impl GgmlType {
    /// The type GGUF numbers `v`, if known.
    pub fn from_u32(v: u32) -> Option<GgmlType> {
        use GgmlType::*;
        Some(match v {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            30 => BF16,
            _ => return None,
        })
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 => 32,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => 256,
        }
    }

    /// Bytes per block (the block types' sizes where attend has them as types; ggml's
    /// `type_size` for the others).
    pub fn block_bytes(self) -> usize {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | BF16 => 2,
            Q4_0 => BlockQ4_0::BYTES,
            Q4_1 => BlockQ4_1::BYTES,
            Q5_0 => BlockQ5_0::BYTES,
            Q5_1 => 24,
            Q8_0 => BlockQ8_0::BYTES,
            Q8_1 => 36,
            Q2_K => 84,
            Q3_K => 110,
            Q4_K => BlockQ4K::BYTES,
            Q5_K => BlockQ5K::BYTES,
            Q6_K => BlockQ6K::BYTES,
            Q8_K => 292,
        }
    }

    /// The types attend reads, as an error message lists them.
    pub const SUPPORTED: &'static str = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K";

    /// Whether attend can read this type (dequantise it, multiply by it).
    pub fn supported(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q8_0 | Q4_K | Q5_K | Q6_K
        )
    }

    /// Bytes of a row of `n` elements (`n` a multiple of the block size).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}
