//! The kernels of each instruction set, as tables of function pointers.
//!
//! Invariant: a [`Table`] exists only for an instruction set this processor runs (its
//! `table()` returns `None` otherwise), so holding one is the proof the `unsafe` entries need
//! about the processor; the dispatcher (`kern.rs`) supplies the other half, the bounds.

use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8, BlockQ8_0};
use crate::Isa;

pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// `c[r*c_stride + p*16 + l] (+)= Σ_k a[a_off + r*a_stride + k] · bp[p*k_len*16 + k*16 + l]`.
pub(crate) type GemmA =
    unsafe fn(&[f32], usize, usize, usize, usize, &[f32], usize, &mut [f32], usize, bool);
/// `c[r*c_stride + l] += Σ_t a[a_off + t*a_stride + r] · b[b_off + t*b_stride + l]`.
pub(crate) type GemmB =
    unsafe fn(&[f32], usize, usize, usize, usize, &[f32], usize, usize, usize, &mut [f32], usize);
/// One online-softmax step over a column tile.
pub(crate) type SoftmaxCols =
    unsafe fn(&mut [f32], usize, usize, f32, &mut [f32], &mut [f32], &mut [f32]);
/// `x[r*stride + l] *= alpha[l]`.
pub(crate) type ScaleCols = unsafe fn(&mut [f32], usize, usize, usize, &[f32]);
/// `s[r*stride + l] = 2^(c·s - sub[r])`.
pub(crate) type ExpRows = unsafe fn(&mut [f32], usize, usize, usize, f32, &[f32]);
/// Transposed packing into 16-lane panels.
pub(crate) type PackPanels = unsafe fn(&[f32], usize, usize, usize, usize, &mut [f32]);
/// `out[t] = Σ w · a[t]` for 1 to 4 activation rows, one weight block per activation block.
pub(crate) type Dot<B> = unsafe fn(&[B], &[&[BlockQ8]], &mut [f32]);
/// GELU (erf form) in place.
pub(crate) type Gelu = unsafe fn(&mut [f32]);
/// `v = act(v + bias) + residual`.
pub(crate) type EpilogueFn = unsafe fn(&mut [f32], Option<&[f32]>, bool, Option<&[f32]>);

/// Every kernel of one instruction set. The generic twins are safe functions, coerced.
pub(crate) struct Table {
    pub isa: Isa,
    pub gemm_a: GemmA,
    pub gemm_b: GemmB,
    pub pack_panels: PackPanels,
    pub softmax_cols: SoftmaxCols,
    pub scale_cols: ScaleCols,
    pub exp_rows: ExpRows,
    pub dot_q4_0: Dot<BlockQ4_0>,
    pub dot_q4_1: Dot<BlockQ4_1>,
    pub dot_q8_0: Dot<BlockQ8_0>,
    pub gelu: Gelu,
    pub epilogue: EpilogueFn,
}

/// The instruction sets attend has kernels for, from the portable one up to the best; `Auto`
/// takes the last one this processor runs.
pub(crate) const ALL: &[fn() -> Option<&'static Table>] = &[
    generic::table,
    #[cfg(target_arch = "x86_64")]
    x86_64::avx2::table,
];
