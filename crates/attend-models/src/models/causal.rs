//! What every causal language model offers the layers above it (the generation loop, the
//! explanations, the front ends): [`CausalLm`], with how far it sees ([`Context`]), which
//! attention a step captures ([`AttnCapture`]) and what a step returns ([`Step`]).
//!
//! Invariant: this module knows no model; the decoder and the toy models implement it.

use attend::KvCache;

use crate::tokenize::{TokenInfo, Tokenizer};
use crate::trace::effect::{Effect, EffectSpec};
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
    /// `user` wrapped in the model's chat template as one user turn, and its tokens (the
    /// template's control tokens parsed, the user's text as text); `None` when the model has
    /// no template.
    fn chat(&self, user: &str) -> Option<Result<(String, Vec<TokenInfo>)>> {
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
    /// What knocking out each source of `prompt` and ablating each head do to
    /// `log p(target)` (`target`: token ids after the prompt; empty: the model's likeliest
    /// next token), beside the attention paid ([`crate::trace::effect`]). Models without
    /// interventions refuse.
    fn effect(&self, prompt: &[TokenInfo], target: &[u32], spec: &EffectSpec) -> Result<Effect> {
        let _ = (prompt, target, spec);
        Err(no_interventions())
    }

    /// A flag that, set from another thread, stops the model's running pass at its next layer
    /// with [`crate::Error::Interrupted`] (the one who starts the next run clears it); `None`
    /// for models whose passes are too short to need one.
    fn interrupt(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        None
    }

    /// The bytes of weights one generated token streams: every matrix of the model once (the
    /// limit of generation is these bytes over the memory bandwidth); `None` where the model
    /// does not say.
    fn weight_bytes_per_token(&self) -> Option<u64> {
        None
    }

    /// Whether [`CausalLm::effect`] runs (GGUF decoders) or refuses (the toy models).
    fn has_interventions(&self) -> bool {
        false
    }
}

/// What a model without interventions answers.
fn no_interventions() -> crate::Error {
    crate::Error::Invalid(
        "this model has no interventions (knockout and head ablation run on GGUF decoders \
         and sentence encoders)"
            .into(),
    )
}

/// [`CausalLm::effect`] of `text`, with `target` (a continuation of `text`, e.g. `" tired"`)
/// or the model's likeliest next token. The target's tokens are those that follow the
/// prompt's when the two are tokenized together (or, where that changes the prompt's tokens,
/// the target's own without the special tokens the tokenizer adds). A prompt with no tokens,
/// an empty target, or a text longer than the model reads is refused before anything runs.
pub fn effect_text(
    lm: &dyn CausalLm,
    text: &str,
    target: Option<&str>,
    spec: &EffectSpec,
    control: bool,
) -> Result<Effect> {
    if !lm.has_interventions() {
        return Err(no_interventions());
    }
    let tok = lm.tokenizer();
    let prompt = encode_user(tok, text, control)?;
    let ids: Vec<u32> = match target {
        None => Vec::new(),
        Some(t) => {
            let joint = encode_user(tok, &format!("{text}{t}"), control)?;
            let same =
                joint.len() > prompt.len() && joint.iter().zip(&prompt).all(|(a, b)| a.id == b.id);
            let ids: Vec<u32> = if same {
                joint[prompt.len()..].iter().map(|t| t.id).collect()
            } else {
                tok.encode(t)?
                    .into_iter()
                    .filter(|t| t.end > t.start)
                    .map(|t| t.id)
                    .collect()
            };
            if ids.is_empty() {
                return Err(crate::Error::Invalid(format!(
                    "the target {t:?} has no tokens"
                )));
            }
            ids
        }
    };
    let max = match lm.context() {
        Context::Limit(max) | Context::Window(max) => max,
    };
    let total = prompt.len() + ids.len().saturating_sub(1);
    if prompt.is_empty() || total > max {
        return Err(crate::Error::TextLength { tokens: total, max });
    }
    lm.effect(&prompt, &ids, spec)
}

/// A user's text as tokens: control tokens typed in it are text unless `control` (a prompt
/// written in the model's own format, by choice).
pub fn encode_user(tok: &dyn Tokenizer, text: &str, control: bool) -> Result<Vec<TokenInfo>> {
    if control {
        tok.encode_with_control(text)
    } else {
        tok.encode(text)
    }
}

/// Every layer × head × query × key of `text` in `lm` ([`CausalLm::explain`]), with the `k`
/// likeliest next tokens as the tokenizer names them ([`Tokenizer::name`]) and their
/// probabilities (control tokens typed in `text` parsed only with `control`). A text with no
/// tokens, or longer than the model reads, is refused before anything runs.
pub fn explain_text(
    lm: &dyn CausalLm,
    text: &str,
    k: usize,
    control: bool,
) -> Result<(Trace, Vec<(String, f32)>)> {
    let tok = lm.tokenizer();
    let tokens = encode_user(tok, text, control)?;
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
