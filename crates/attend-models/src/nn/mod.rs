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

/// Refuses activations that hold NaN or an infinity, naming where (`at`): a model whose
/// weights are broken, or that diverges on an input, must fail, not answer.
pub fn check_finite(x: &[f32], at: impl FnOnce() -> String) -> crate::Result<()> {
    // branch-free per chunk (vectorises); the culprit is located only on failure
    if x.chunks(256)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
    {
        return Ok(());
    }
    let index = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
    Err(crate::Error::NonFinite {
        at: at(),
        index,
        value: x[index],
    })
}
