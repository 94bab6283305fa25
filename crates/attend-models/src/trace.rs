//! `Trace`: who attends to whom, captured from the fast path when asked for.

use serde::Serialize;

/// One token of a traced text.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TokenInfo {
    /// Vocabulary id.
    pub id: u32,
    /// The token's text as the tokenizer spells it (`[CLS]`, `##ing`, ...).
    pub text: String,
    /// Byte offset of the token's start in the input text (0 for special tokens).
    pub start: usize,
    /// Byte offset of its end.
    pub end: usize,
}

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
