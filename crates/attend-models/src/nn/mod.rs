//! The layers around attention, one copy of each: linear layers ([`linear`]), layer and RMS
//! norms ([`norm`]), rotary positions ([`rope`]), activations ([`activations`]) and what is done
//! with logits — softmax, log-probabilities, top-k ([`logits`]). Rows are tokens, row-major
//! `f32`. The kernels underneath are `attend-kernels`'.
//!
//! Invariant: the models, the sampler, the losses and the CLI use these and define none of
//! their own; a function here that changes its arithmetic changes `toy-winograd`'s bits.

pub mod activations;
pub mod linear;
pub mod logits;
pub mod norm;
pub mod rope;
