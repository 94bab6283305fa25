//! `Trace`: who attends to whom, captured from the fast path when asked for, and what is
//! computed next to it ([`aggregate`]: mean of heads, rollout, value-weighted norms, sinks,
//! per-head statistics, words). Rendering reads these; it never recomputes attention.

pub use crate::tokenize::TokenInfo;

pub mod aggregate;
pub mod query;

/// Attention probabilities of every layer and head, `[layer][head][query][key]`, with the tokens.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The tokens, queries and keys alike.
    pub tokens: Vec<TokenInfo>,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Probabilities, flat `[layer][head][query][key]`.
    pub attention: Vec<f32>,
    /// Key/value heads per layer (`heads` for multi-head attention; fewer for GQA/MQA).
    pub kv_heads: usize,
    /// Whether queries saw only earlier keys (a causal model).
    pub causal: bool,
    /// `‖f_h(x_j)‖` `[layer][head][key]`: the norm of what key `j` contributes through head
    /// `h` once weighted by 1 — its value vector times the head's slice of the output
    /// projection (Kobayashi et al. 2020). Empty when the model did not provide it.
    pub value_norms: Vec<f32>,
}

impl Trace {
    /// Tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// The weights query `q` gives every key in `(layer, head)`.
    pub fn row(&self, layer: usize, head: usize, q: usize) -> &[f32] {
        let n = self.len();
        &self.attention[((layer * self.heads + head) * n + q) * n..][..n]
    }
    /// The `[query][key]` matrix of `(layer, head)`.
    pub fn matrix(&self, layer: usize, head: usize) -> &[f32] {
        let n = self.len();
        &self.attention[(layer * self.heads + head) * n * n..][..n * n]
    }
    /// The mean over heads of `layer`'s `[query][key]` matrices.
    pub fn head_mean(&self, layer: usize) -> Vec<f32> {
        let n = self.len();
        let mut m = vec![0.0f32; n * n];
        for h in 0..self.heads {
            for (a, b) in m.iter_mut().zip(self.matrix(layer, h)) {
                *a += b / self.heads as f32;
            }
        }
        m
    }
}

/// What `generate` with attention capture saw: the prompt and the generated tokens, and for
/// each generated token the row of the position that predicted it — the rows the KV cache
/// produced during generation, not a recomputation.
#[derive(Clone, Debug)]
pub struct GenerationTrace {
    /// Prompt tokens, then generated tokens.
    pub tokens: Vec<TokenInfo>,
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// Layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// `[layer][head][step][key]`: step `i` is the row of position `prompt_len − 1 + i`
    /// (which predicted generated token `i`) over keys `0..=prompt_len − 1 + i`, zeros after.
    pub rows: Vec<f32>,
}

impl GenerationTrace {
    /// From the prompt's tokens and each generated token with its captured attention
    /// `[layer][head][key]` (as [`crate::generate::GenToken::attention`]); a row of the
    /// wrong length is refused.
    pub fn new(
        prompt: Vec<TokenInfo>,
        generated: Vec<(TokenInfo, &[f32])>,
        (layers, heads, kv_heads): (usize, usize, usize),
    ) -> crate::Result<GenerationTrace> {
        let prompt_len = prompt.len();
        let steps = generated.len();
        if prompt_len == 0 {
            return Err(crate::Error::Invalid("a generation needs a prompt".into()));
        }
        let keys = (prompt_len + steps).saturating_sub(1);
        let mut rows = vec![0.0f32; layers * heads * steps * keys];
        for (i, (_, att)) in generated.iter().enumerate() {
            let seen = prompt_len + i;
            if att.len() != layers * heads * seen {
                return Err(crate::Error::Invalid(format!(
                    "generated token {i} has {} attention weights; {layers} layers × {heads} \
                     heads × {seen} positions expected",
                    att.len()
                )));
            }
            for lh in 0..layers * heads {
                let at = (lh * steps + i) * keys;
                rows[at..at + seen].copy_from_slice(&att[lh * seen..][..seen]);
            }
        }
        let mut tokens = prompt;
        tokens.extend(generated.into_iter().map(|(t, _)| t));
        Ok(GenerationTrace {
            tokens,
            prompt_len,
            layers,
            heads,
            kv_heads,
            rows,
        })
    }

    /// Generated tokens.
    pub fn steps(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Keys per row (every position but the last).
    pub fn keys(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }

    /// The row that predicted generated token `step` in `(layer, head)`, zero-padded.
    pub fn row(&self, layer: usize, head: usize, step: usize) -> &[f32] {
        let (s, k) = (self.steps(), self.keys());
        &self.rows[((layer * self.heads + head) * s + step) * k..][..k]
    }

    /// The rows as an [`aggregate::Grid`] (rows at positions `prompt_len − 1 ..`).
    pub fn grid(&self) -> aggregate::Grid<'_> {
        aggregate::Grid {
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            query_pos: (0..self.steps()).map(|i| self.prompt_len - 1 + i).collect(),
            keys: self.keys(),
            data: &self.rows,
        }
    }
}
