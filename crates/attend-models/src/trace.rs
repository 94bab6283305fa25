//! `Trace`: who attends to whom, captured from the fast path when asked for, and what is
//! computed next to it ([`aggregate`]: mean of heads, rollout, value-weighted norms, sinks,
//! per-head statistics, words). Rendering reads these; it never recomputes attention.

pub use crate::tokenize::TokenInfo;

pub mod aggregate;
pub mod effect;
pub mod query;

/// Attention probabilities of every layer and head, `[layer][head][query][key]`, with the
/// tokens. Rows are kept compact: each `(layer, query)` has a span of keys `lo..hi` that its
/// heads can see (every key for an encoder; up to the query in a causal model; the window in a
/// sliding-window layer), and only the span is stored — a causal trace holds half the
/// matrix, a local layer of Gemma 3 its band. Outside its span a row is 0.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The tokens, queries and keys alike.
    pub tokens: Vec<TokenInfo>,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Key/value heads per layer (`heads` for multi-head attention; fewer for GQA/MQA).
    pub kv_heads: usize,
    /// Whether queries saw only earlier keys (a causal model).
    pub causal: bool,
    /// `‖f_h(x_j)‖` `[layer][head][key]`: the norm of what key `j` contributes through head
    /// `h` once weighted by 1 — its value vector times the head's slice of the output
    /// projection (Kobayashi et al. 2020). Empty when the model did not provide it.
    pub value_norms: Vec<f32>,
    rows: Rows,
}

/// The stored rows: for each `(layer, query)` its key span; the spans of a layer laid out one
/// after another for each head.
#[derive(Clone, Debug, Default)]
struct Rows {
    /// `[layer][query]`: the keys `lo..hi` the layer's heads can see from that query.
    spans: Vec<(u32, u32)>,
    /// `[layer][query]`: where the row starts within one head's block of the layer.
    offsets: Vec<usize>,
    /// `[layer]`: where the layer's block starts in `data`, and one head's block's length.
    layer_at: Vec<(usize, usize)>,
    /// The weights.
    data: Vec<f32>,
}

/// The most layers, and the most heads, a trace may have: more (or none) is a caller's
/// mistake, or a hostile request, refused before anything is allocated for them.
const MAX_COUNT: usize = 1 << 16;

fn check_counts(layers: usize, heads: usize) -> crate::Result<()> {
    if layers == 0 || heads == 0 || layers > MAX_COUNT || heads > MAX_COUNT {
        return Err(crate::Error::Invalid(format!(
            "a trace of {layers} layers × {heads} heads (1 to {MAX_COUNT} each)"
        )));
    }
    Ok(())
}

impl Trace {
    /// A trace from dense `[layer][head][query][key]` probabilities (every row all `n` keys).
    pub fn dense(
        tokens: Vec<TokenInfo>,
        (layers, heads, kv_heads): (usize, usize, usize),
        causal: bool,
        attention: Vec<f32>,
    ) -> crate::Result<Trace> {
        let n = tokens.len();
        check_counts(layers, heads)?;
        let want = layers
            .checked_mul(heads)
            .and_then(|x| x.checked_mul(n))
            .and_then(|x| x.checked_mul(n));
        if want != Some(attention.len()) {
            return Err(crate::Error::Invalid(format!(
                "{} weights for {layers} layers × {heads} heads × {n} × {n} tokens",
                attention.len()
            )));
        }
        Trace::from_spans(
            tokens,
            (layers, heads, kv_heads),
            causal,
            vec![(0, n); layers * n],
            attention,
        )
    }

    /// A trace from compact rows: `spans` `[layer][query]` the keys `lo..hi` stored for that
    /// query (by every head of the layer), `data` the rows `[layer][head][query][lo..hi]`.
    /// Sizes that disagree are refused.
    pub fn from_spans(
        tokens: Vec<TokenInfo>,
        (layers, heads, kv_heads): (usize, usize, usize),
        causal: bool,
        spans: Vec<(usize, usize)>,
        data: Vec<f32>,
    ) -> crate::Result<Trace> {
        let n = tokens.len();
        check_counts(layers, heads)?;
        if Some(spans.len()) != layers.checked_mul(n) {
            return Err(crate::Error::Invalid(format!(
                "{} row spans for {layers} layers × {n} tokens",
                spans.len()
            )));
        }
        if let Some(&(lo, hi)) = spans.iter().find(|&&(lo, hi)| lo > hi || hi > n) {
            return Err(crate::Error::Invalid(format!(
                "a row span {lo}..{hi} is not within the {n} keys"
            )));
        }
        let mut offsets = Vec::with_capacity(spans.len());
        let mut layer_at = Vec::with_capacity(layers);
        let mut at = 0usize;
        for l in 0..layers {
            let mut size = 0usize;
            for &(lo, hi) in &spans[l * n..][..n] {
                offsets.push(size);
                size += hi - lo;
            }
            layer_at.push((at, size));
            at = size
                .checked_mul(heads)
                .and_then(|s| s.checked_add(at))
                .ok_or_else(|| crate::Error::Invalid("a trace too large to address".into()))?;
        }
        if data.len() != at {
            return Err(crate::Error::Invalid(format!(
                "{} weights for rows that hold {at}",
                data.len()
            )));
        }
        Ok(Trace {
            tokens,
            layers,
            heads,
            kv_heads,
            causal,
            value_norms: Vec::new(),
            rows: Rows {
                spans: spans
                    .into_iter()
                    .map(|(lo, hi)| (lo as u32, hi as u32))
                    .collect(),
                offsets,
                layer_at,
                data,
            },
        })
    }

    /// Tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// The keys `lo..hi` query `q` of `layer` can see (its stored span).
    pub fn span(&self, layer: usize, q: usize) -> (usize, usize) {
        let (lo, hi) = self.rows.spans[layer * self.len() + q];
        (lo as usize, hi as usize)
    }
    /// The stored part of row `q` of `(layer, head)`: where it starts, and its weights.
    pub fn row_span(&self, layer: usize, head: usize, q: usize) -> (usize, &[f32]) {
        let n = self.len();
        let (lo, hi) = self.span(layer, q);
        let (base, size) = self.rows.layer_at[layer];
        let at = base + head * size + self.rows.offsets[layer * n + q];
        (lo, &self.rows.data[at..at + (hi - lo)])
    }
    /// The weight query `q` gives key `k` in `(layer, head)`.
    pub fn weight(&self, layer: usize, head: usize, q: usize, k: usize) -> f32 {
        let (lo, w) = self.row_span(layer, head, q);
        k.checked_sub(lo)
            .and_then(|i| w.get(i))
            .copied()
            .unwrap_or(0.0)
    }
    /// Row `q` of `(layer, head)` over every key into `out` (`len()` long).
    pub fn row_into(&self, layer: usize, head: usize, q: usize, out: &mut [f32]) {
        let (lo, w) = self.row_span(layer, head, q);
        out.fill(0.0);
        out[lo..lo + w.len()].copy_from_slice(w);
    }
    /// Row `q` of `(layer, head)` over every key.
    pub fn row(&self, layer: usize, head: usize, q: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.len()];
        self.row_into(layer, head, q, &mut out);
        out
    }
    /// The `[query][key]` matrix of `(layer, head)`, every key.
    pub fn matrix(&self, layer: usize, head: usize) -> Vec<f32> {
        let n = self.len();
        let mut m = vec![0.0f32; n * n];
        for (q, row) in m.chunks_exact_mut(n.max(1)).enumerate() {
            self.row_into(layer, head, q, row);
        }
        m
    }
    /// The mean over heads of `layer`'s `[query][key]` matrices.
    pub fn head_mean(&self, layer: usize) -> Vec<f32> {
        let n = self.len();
        let mut m = vec![0.0f32; n * n];
        let heads = self.heads as f32;
        for h in 0..self.heads {
            for q in 0..n {
                let (lo, w) = self.row_span(layer, h, q);
                for (a, b) in m[q * n + lo..][..w.len()].iter_mut().zip(w) {
                    *a += b / heads;
                }
            }
        }
        m
    }
    /// Every weight, `[layer][head][query][key]`, every key (for small traces: `n²` per head).
    pub fn to_dense(&self) -> Vec<f32> {
        (0..self.layers)
            .flat_map(|l| (0..self.heads).map(move |h| (l, h)))
            .flat_map(|(l, h)| self.matrix(l, h))
            .collect()
    }
    /// The weights stored (what the trace holds in memory, in floats).
    pub fn stored(&self) -> usize {
        self.rows.data.len()
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
            data: aggregate::GridData::Dense(&self.rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize) -> Vec<TokenInfo> {
        (0..n)
            .map(|i| TokenInfo {
                id: i as u32,
                text: format!("t{i}"),
                start: i,
                end: i + 1,
            })
            .collect()
    }

    /// Sizes a hostile caller could pass (counts whose product overflows, or so many layers
    /// that the row index could not be allocated) are refused before anything is allocated.
    #[test]
    fn impossible_sizes_are_refused() {
        let t = Trace::dense(tokens(2), (1, 2, 2), false, vec![0.25; 8]).unwrap();
        assert_eq!((t.layers, t.heads, t.len()), (1, 2, 2));
        for (layers, heads, n, data) in [
            (1usize << 62, 0usize, 1usize, 0usize),
            (1 << 62, 1, 0, 0),
            (2, 1 << 62, 2, 8),
            (usize::MAX, usize::MAX, 3, 9),
            (1, 2, 2, 7),
            (2, 0, 3, 0),
            (0, 2, 3, 0),
        ] {
            let e = Trace::dense(tokens(n), (layers, heads, heads), false, vec![0.5; data]);
            assert!(e.is_err(), "{layers} × {heads} × {n}");
            let spans = vec![(0, n); data.min(8)];
            let e = Trace::from_spans(tokens(n), (layers, heads, heads), false, spans, vec![]);
            assert!(e.is_err(), "spans: {layers} × {heads} × {n}");
        }
        // counts within the limits whose product overflows: the checked product refuses them
        let e = Trace::dense(tokens(1 << 16), (1 << 16, 1 << 16, 1), false, vec![]);
        assert!(e.unwrap_err().to_string().contains("weights for"));
    }
}
