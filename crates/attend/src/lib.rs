//! # attend — exact, fast scaled dot-product attention on the CPU
//!
//! Every token asks of every other: *how relevant are you to me right now?* Its query is
//! compared with every key, the scores become weights through a softmax, and the weighted mix
//! of the values is its new, context-aware representation:
//! `softmax(scale · Q·Kᵀ + mask) · V`, with the semantics of PyTorch's
//! `scaled_dot_product_attention` (see [`mask`] for the one place we differ).
//!
//! Two implementations of one contract:
//! - [`reference`]: materialises the scores, written to be read, the oracle of every test;
//! - [`fused`]: tiles of queries × keys with an online softmax, O(tile) extra memory,
//!   multi-threaded (rayon), SIMD inner loops from `attend-kernels` chosen at run time; plus exact
//!   attention weights on demand, a decode path over a [`decode::KvCache`], and the backward
//!   pass ([`backward`]).
//!
//! ```
//! use attend::{attention, AttnParams, Layout, Mask, Shape};
//! // batch 1, 4 query heads sharing 2 key/value heads (GQA), 6 tokens, head dim 8
//! let shape = Shape::new(1, 4, 6, 6, 8).with_kv_heads(2);
//! let q = vec![0.5f32; shape.q_len()];
//! let k = vec![0.25f32; shape.k_len()];
//! let v: Vec<f32> = (0..shape.v_len()).map(|i| i as f32).collect();
//! let params = AttnParams::new(shape).layout(Layout::Bshd).mask(Mask::causal());
//! let out = attention(&params, &q, &k, &v)?;
//! assert_eq!(out.out.len(), shape.o_len());
//! # Ok::<(), attend::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod backward;
pub mod cases;
pub mod decode;
mod error;
pub mod fused;
pub mod mask;
mod params;
pub mod reference;
mod shape;
mod tile;

pub use attend_kernels::Isa;
pub use decode::{KvCache, LayerCache};
pub use error::{Error, Result};
pub use mask::{Explicit, Mask, MaskScope};
pub use params::{AttnParams, Layout};
pub use shape::Shape;

/// The result of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The attention output, in the call's layout (`[b, h, s_q, d_v]` or `[b, s_q, h, d_v]`).
    pub out: Vec<f32>,
    /// Log-sum-exp of each query row's logits (natural log), `[b, h, s_q]`; `-inf` for a row
    /// with every key masked.
    pub lse: Vec<f32>,
}

/// Gradients of a scalar loss with respect to the inputs, each in its input's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    /// `∂L/∂q`.
    pub dq: Vec<f32>,
    /// `∂L/∂k`.
    pub dk: Vec<f32>,
    /// `∂L/∂v`.
    pub dv: Vec<f32>,
}

/// Attention with the fused kernel: the main entry point (see [`fused::forward`]).
pub fn attention(p: &AttnParams, q: &[f32], k: &[f32], v: &[f32]) -> Result<Output> {
    fused::forward(p, q, k, v)
}
