//! What every causal language model offers the layers above it (the generation loop, the
//! explanations, the front ends): [`CausalLm`], with how far it sees ([`Context`]), which
//! attention a step captures ([`AttnCapture`]) and what a step returns ([`Step`]).
//!
//! Invariant: this module knows no model; the decoder and the toy models implement it.

use attend::KvCache;

use crate::tokenize::{TokenInfo, Tokenizer};
use crate::trace::Trace;
use crate::Result;

/// How far a model can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// At most this many positions; a longer request is refused before anything runs.
    Limit(usize),
    /// Learned positions end here; past it, the last half of the text is run again from
    /// position 0 and generation goes on from there.
    Window(usize),
}

/// Which attention to capture during a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnCapture {
    /// None (the fast path).
    None,
    /// The last position's attention, every layer × head: `[layer][head][key]`.
    LastRow,
    /// Every position's attention, every layer × head, each row kept to the keys it can see
    /// (an explanation of the whole text), with the value norms of every head.
    All,
}

/// What one step returns.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// Logits of the last position.
    pub logits: Vec<f32>,
    /// With [`AttnCapture::LastRow`]: `[layer][head][key]` flattened, keys = every cached
    /// position.
    pub attention: Vec<f32>,
}

/// A causal language model as the generation loop sees it.
pub trait CausalLm: Send + Sync {
    /// Layers (of captured attention).
    fn layers(&self) -> usize;
    /// Query heads per layer.
    fn heads(&self) -> usize;
    /// Key/value heads per layer (fewer than [`CausalLm::heads`] under GQA/MQA).
    fn kv_heads(&self) -> usize {
        self.heads()
    }
    /// How far it sees.
    fn context(&self) -> Context;
    /// Its tokenizer.
    fn tokenizer(&self) -> &dyn Tokenizer;
    /// Whether `id` ends a text.
    fn is_end(&self, id: u32) -> bool;
    /// `user` wrapped in the model's chat template as one user turn; `None` when the model has
    /// no template.
    fn chat(&self, user: &str) -> Option<Result<String>> {
        let _ = user;
        None
    }
    /// Computes with unquantised `f32` activations (slow; what float32 reference
    /// implementations compute) instead of 8-bit ones. Returns whether the model has such a
    /// switch (models whose activations are always `f32` have none, and are exact already).
    fn set_exact(&mut self, exact: bool) -> bool {
        let _ = exact;
        false
    }
    /// An empty KV cache for [`CausalLm::step`].
    fn new_cache(&self) -> Result<KvCache>;
    /// Runs `tokens` at positions `cache.len()..`, appending their keys and values to
    /// `cache`; the logits of the last one and, when asked, its attention.
    fn step(&self, tokens: &[u32], cache: &mut KvCache, capture: AttnCapture) -> Result<Step>;
    /// The attention of every layer × head × query × key over `tokens` (run from position 0
    /// in one forward pass), with the value norms the aggregations need, and the logits of
    /// the last position (what the model predicts next).
    fn explain(&self, tokens: &[TokenInfo]) -> Result<(Trace, Vec<f32>)>;
}

/// Every layer × head × query × key of `text` in `lm` ([`CausalLm::explain`]), with the `k`
/// likeliest next tokens as the tokenizer names them ([`Tokenizer::name`]) and their
/// probabilities. A text with no
/// tokens, or longer than the model reads, is refused before anything runs.
pub fn explain_text(
    lm: &dyn CausalLm,
    text: &str,
    k: usize,
) -> Result<(Trace, Vec<(String, f32)>)> {
    let tok = lm.tokenizer();
    let tokens = tok.encode(text)?;
    let max = match lm.context() {
        Context::Limit(max) | Context::Window(max) => max,
    };
    if tokens.is_empty() || tokens.len() > max {
        return Err(crate::Error::TextLength {
            tokens: tokens.len(),
            max,
        });
    }
    let (trace, logits) = lm.explain(&tokens)?;
    let p = crate::nn::logits::softmax(&logits);
    let next = crate::nn::logits::top_k(&logits, k)
        .into_iter()
        .map(|(id, _)| (tok.name(id as u32), p[id]))
        .collect();
    Ok((trace, next))
}
