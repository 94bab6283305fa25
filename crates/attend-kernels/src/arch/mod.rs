//! The kernels of each instruction set, as tables of function pointers.
//!
//! Invariant: a [`Table`] exists only for an instruction set this processor runs (its
//! `table()` returns `None` otherwise), so holding one is the proof the `unsafe` entries need
//! about the processor; the dispatcher (`kern.rs`) supplies the other half, the bounds.

use crate::mat::{MatMut, MatRef};
use crate::quant::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ6K, BlockQ8, BlockQ8K, BlockQ8_0,
};
use crate::tiled::Group;
use crate::Isa;

/// `c[r][p*16 + l] (+)= Σ_k a[r][k] · bp[p][k*16 + l]`.
pub(crate) type GemmA = unsafe fn(MatRef<'_>, MatRef<'_>, MatMut<'_>, bool);
/// `c[r][l] += Σ_t a[t][r] · b[t][l]`.
pub(crate) type GemmB = unsafe fn(MatRef<'_>, MatRef<'_>, MatMut<'_>);
/// One online-softmax step over a column tile.
pub(crate) type SoftmaxCols = unsafe fn(MatMut<'_>, f32, &mut [f32], &mut [f32], &mut [f32]);
/// `x[r][l] *= alpha[l]`.
pub(crate) type ScaleCols = unsafe fn(MatMut<'_>, &[f32]);
/// `s[r][l] = 2^(c·s - sub[r])`.
pub(crate) type ExpRows = unsafe fn(MatMut<'_>, f32, &[f32]);
/// Transposed packing into 16-lane panels.
pub(crate) type PackPanels = unsafe fn(MatRef<'_>, &mut [f32]);
/// `out[r·n + t] = Σ w_r · a[t]` for every weight row `r` of `w` (`per_row` blocks each) and
/// every activation row `t` of `a` (`n` of them, `per_row` blocks each).
pub(crate) type DotRows<B> = unsafe fn(&[B], usize, &[&[BlockQ8]], &mut [f32]);
/// [`DotRows`] for k-quant weights and [`BlockQ8K`] activations.
pub(crate) type DotRowsK<B> = unsafe fn(&[B], usize, &[&[BlockQ8K]], &mut [f32]);
/// One group of 16 repacked weight rows times activation rows (`crate::Kern::dot_tiled`).
pub(crate) type DotTiled = unsafe fn(Group<'_>, &[&[BlockQ8]], &[&[f32]], MatMut<'_>);
/// GELU (erf form) in place.
pub(crate) type Gelu = unsafe fn(&mut [f32]);
/// No NaN or infinity in the slice.
pub(crate) type AllFinite = unsafe fn(&[f32]) -> bool;
/// `out = (m + log2 l) · ln 2`, `-inf` where `l` is 0.
pub(crate) type Lse = unsafe fn(&[f32], &[f32], &mut [f32]);
/// Finite activations to [`BlockQ8`] blocks, one per 32 values.
pub(crate) type QuantizeQ8 = unsafe fn(&[f32], &mut [BlockQ8]);
/// `v = act(v + bias) + residual`.
pub(crate) type EpilogueFn = unsafe fn(&mut [f32], Option<&[f32]>, bool, Option<&[f32]>);

/// Every kernel of one instruction set. The generic twins are safe functions, coerced.
pub(crate) struct Table {
    pub isa: Isa,
    pub gemm_a: GemmA,
    /// `gemm_a` for panels streamed once from memory: the same results, prefetched.
    pub gemm_a_stream: GemmA,
    pub gemm_b: GemmB,
    pub pack_panels: PackPanels,
    pub softmax_cols: SoftmaxCols,
    pub scale_cols: ScaleCols,
    pub exp_rows: ExpRows,
    pub dot_q4_0: DotRows<BlockQ4_0>,
    pub dot_q4_1: DotRows<BlockQ4_1>,
    pub dot_q5_0: DotRows<BlockQ5_0>,
    pub dot_q8_0: DotRows<BlockQ8_0>,
    pub dot_q4_k: DotRowsK<BlockQ4K>,
    pub dot_q5_k: DotRowsK<BlockQ5K>,
    pub dot_q6_k: DotRowsK<BlockQ6K>,
    pub dot_tiled: DotTiled,
    /// Whether `dot_tiled` is a SIMD build (worth repacking weights for).
    pub tiled_native: bool,
    pub gelu: Gelu,
    pub epilogue: EpilogueFn,
    pub all_finite: AllFinite,
    pub lse: Lse,
    pub quantize_q8: QuantizeQ8,
}

/// The `Table` of the instruction set `$isa` from the modules `kernels` (the kernels written
/// once, `arch/simd/`, compiled for it), `panel`, `quant` and `elementwise` where it is
/// invoked: each ISA folder names its kernels the same way.
macro_rules! table {
    ($isa:expr) => {
        crate::arch::Table {
            isa: $isa,
            gemm_a: kernels::gemm_a,
            gemm_a_stream: kernels::gemm_a_stream,
            gemm_b: kernels::gemm_b,
            pack_panels: panel::pack_panels,
            softmax_cols: kernels::softmax_cols,
            scale_cols: kernels::scale_cols,
            exp_rows: kernels::exp_rows,
            dot_q4_0: kernels::dot_q4_0,
            dot_q4_1: kernels::dot_q4_1,
            dot_q5_0: kernels::dot_q5_0,
            dot_q8_0: kernels::dot_q8_0,
            dot_q4_k: quant::dot_q4_k,
            dot_q5_k: quant::dot_q5_k,
            dot_q6_k: quant::dot_q6_k,
            dot_tiled: quant::dot_tiled,
            tiled_native: quant::TILED_NATIVE,
            gelu: elementwise::gelu,
            epilogue: elementwise::epilogue,
            all_finite: elementwise::all_finite,
            lse: elementwise::lse,
            quantize_q8: elementwise::quantize_q8,
        }
    };
}

/// The instruction sets attend has kernels for, from the portable one up to the best; `Auto`
/// takes the last one this processor runs.
pub(crate) const ALL: &[fn() -> Option<&'static Table>] = &[
    generic::table,
    #[cfg(target_arch = "x86_64")]
    x86_64::avx2::table,
    #[cfg(target_arch = "x86_64")]
    x86_64::avx512::table,
];

pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
