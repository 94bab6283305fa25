//! What is computed next to a [`Trace`]: the mean of heads, attention rollout (Abnar &
//! Zuidema 2020), value-weighted norms ‖α·f(x)‖ (Kobayashi et al. 2020), attention sinks and
//! rows renormalised without them, per-head statistics (the head atlas) and words.
//!
//! Every function reads probabilities the kernel produced; none recomputes attention.

use serde::Serialize;

use super::{TokenInfo, Trace};

/// A key is a sink of a head when it takes at least this share of the weight of the queries
/// that see it, on average (and at least twice a uniform share, so that short texts do not
/// make every token a sink).
pub const SINK_SHARE: f32 = 0.2;

/// … in at least this fraction of all heads.
pub const SINK_HEADS: f32 = 0.5;

/// The rule [`Trace::sinks`] applies, in words (the viewer shows it).
pub const SINK_RULE: &str = "a position is a sink when, in at least half of all heads, it \
takes on average at least 20% (and at least twice a uniform share) of the weight of the \
queries that see it";

/// One head's statistics, for the head atlas.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HeadStats {
    /// Layer.
    pub layer: usize,
    /// Query head.
    pub head: usize,
    /// The key/value head it reads (GQA/MQA share one among several query heads).
    pub kv_head: usize,
    /// Mean entropy of its rows, in bits.
    pub entropy: f32,
    /// Mean weight its rows give the sinks (0 when there are none).
    pub sink_share: f32,
    /// Mean weight a query gives the token just before it (queries 1..).
    pub prev_token: f32,
    /// Mean distance `Σ_k α_qk |q − k|` between a query and what it attends to, in tokens.
    pub distance: f32,
}

/// `[query][key]` weights with the `sinks` columns removed and each row renormalised over the
/// rest (a row that gave the sinks everything becomes zeros). Rows are `keys` long.
pub fn without_sinks(weights: &[f32], keys: usize, sinks: &[usize]) -> Vec<f32> {
    let mut out = weights.to_vec();
    if keys == 0 {
        return out;
    }
    for row in out.chunks_exact_mut(keys) {
        for &s in sinks.iter().filter(|&&s| s < keys) {
            row[s] = 0.0;
        }
        let rest: f32 = row.iter().sum();
        let scale = if rest > 0.0 { 1.0 / rest } else { 0.0 };
        row.iter_mut().for_each(|v| *v *= scale);
    }
    out
}

/// Matrix product of two `n × n` row-major matrices (the kernels' GEMM, in parallel).
fn matmul(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; n * n];
    attend_kernels::gemm::sgemm_strided((n, n, n), a, (n, 1), b, (n, 1), &mut c, false);
    c
}

/// Word index of each token: sub-word pieces (`##ing`, or a piece glued to the previous one
/// with no space between them and no leading space mark `Ġ`/`▁`, letters or digits on both sides) join the word before them;
/// special tokens (empty spans) and punctuation are words of their own.
pub fn words(tokens: &[TokenInfo]) -> Vec<usize> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut word = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        let joins = i > 0 && {
            let prev = &tokens[i - 1];
            let wordy = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
            let special = |t: &TokenInfo| t.end <= t.start || t.text.starts_with('<');
            let spaced = t.text.starts_with([' ', '\u{120}', '\u{2581}', '\n', '\t']);
            if t.text.starts_with("##") {
                true
            } else {
                !spaced
                    && !special(t)
                    && !special(prev)
                    && t.start == prev.end
                    && wordy(t.text.chars().next())
                    && wordy(prev.text.chars().last())
            }
        };
        if i > 0 && !joins {
            word += 1;
        }
        out.push(word);
    }
    out
}

/// How a word-level view merges sub-word pieces: the viewer's words toggle, `attend explain
/// --words` and [`word_trace`] all follow it.
pub const WORD_RULE: &str = "sub-word pieces merged into words: a word's weight as a key is \
     the sum over its pieces, its row as a query the mean over its pieces' rows";

/// A word's text from its pieces: joined, the `##` of a continuation piece dropped.
pub fn word_text(pieces: &[&TokenInfo]) -> String {
    pieces
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i > 0 {
                t.text.strip_prefix("##").unwrap_or(&t.text)
            } else {
                t.text.as_str()
            }
        })
        .collect()
}

/// `trace` with words for tokens ([`words`], [`WORD_RULE`]): each word's key weight the sum
/// over its pieces, each word's row the mean of its pieces' rows — every layer and head, dense
/// (a word's first piece may not see its later pieces in a causal model; the mean is over what
/// each piece saw). The value norms are not carried over (they belong to single keys).
pub fn word_trace(trace: &Trace) -> crate::Result<Trace> {
    let w = words(&trace.tokens);
    let nw = w.last().map_or(0, |&x| x + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); nw];
    for (i, &wi) in w.iter().enumerate() {
        members[wi].push(i);
    }
    let tokens: Vec<TokenInfo> = members
        .iter()
        .map(|m| {
            let pieces: Vec<&TokenInfo> = m.iter().map(|&i| &trace.tokens[i]).collect();
            TokenInfo {
                id: pieces[0].id,
                text: word_text(&pieces),
                start: pieces[0].start,
                end: pieces[pieces.len() - 1].end,
            }
        })
        .collect();
    let n = trace.len();
    let mut att = Vec::with_capacity(trace.layers * trace.heads * nw * nw);
    for l in 0..trace.layers {
        for h in 0..trace.heads {
            let m = trace.matrix(l, h);
            for q in &members {
                let mut row = vec![0.0f32; nw];
                for &qi in q {
                    for (k, &wk) in w.iter().enumerate() {
                        row[wk] += m[qi * n + k];
                    }
                }
                row.iter_mut().for_each(|v| *v /= q.len() as f32);
                att.extend(row);
            }
        }
    }
    Trace::dense(
        tokens,
        (trace.layers, trace.heads, trace.kv_heads),
        trace.causal,
        att,
    )
}

/// Rectangular attention of every layer and head, `[layer][head][row][key]`: the rows of a
/// full [`Trace`] (every token a query), or the rows a KV cache produced during generation
/// (one per generated token, keys padded with zeros). Sinks and head statistics are computed
/// on it, so both kinds get the same numbers.
#[derive(Clone, Debug)]
pub struct Grid<'a> {
    /// Layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Position of each row's query.
    pub query_pos: Vec<usize>,
    /// Keys per row.
    pub keys: usize,
    /// The weights.
    pub data: GridData<'a>,
}

/// Where a [`Grid`]'s weights are.
#[derive(Clone, Copy, Debug)]
pub enum GridData<'a> {
    /// `[layer][head][row][key]`, every key.
    Dense(&'a [f32]),
    /// A trace's compact rows.
    Trace(&'a Trace),
}

impl Grid<'_> {
    /// Rows per matrix.
    pub fn rows(&self) -> usize {
        self.query_pos.len()
    }

    /// Calls `f(row, lo, weights)` for every row of `(layer, head)`: the stored weights of
    /// keys `lo..lo + weights.len()` (the others are 0).
    pub fn each_row(&self, layer: usize, head: usize, mut f: impl FnMut(usize, usize, &[f32])) {
        match self.data {
            GridData::Dense(d) => {
                let size = self.rows() * self.keys;
                let m = &d[(layer * self.heads + head) * size..][..size];
                for (r, row) in m.chunks_exact(self.keys.max(1)).enumerate() {
                    f(r, 0, row);
                }
            }
            GridData::Trace(t) => {
                for q in 0..self.rows() {
                    let (lo, w) = t.row_span(layer, head, q);
                    f(q, lo, w);
                }
            }
        }
    }

    /// The `[row][key]` matrix of `(layer, head)`, every key.
    pub fn matrix(&self, layer: usize, head: usize) -> Vec<f32> {
        let k = self.keys;
        let mut m = vec![0.0f32; self.rows() * k];
        self.each_row(layer, head, |r, lo, w| {
            m[r * k + lo..][..w.len()].copy_from_slice(w)
        });
        m
    }

    /// The key/value head query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        let group = (self.heads / self.kv_heads.max(1)).max(1);
        h / group
    }

    /// The mean over heads of `layer`'s matrices.
    pub fn head_mean(&self, layer: usize) -> Vec<f32> {
        let k = self.keys;
        let mut m = vec![0.0f32; self.rows() * k];
        let heads = self.heads as f32;
        for h in 0..self.heads {
            self.each_row(layer, h, |r, lo, w| {
                for (a, b) in m[r * k + lo..][..w.len()].iter_mut().zip(w) {
                    *a += b / heads;
                }
            });
        }
        m
    }

    /// For `(layer, head)`, the mean weight each key receives from the rows that see it
    /// (a row sees a key when their weight is not exactly zero — in a causal model, the
    /// queries at or after it).
    pub fn key_share(&self, layer: usize, head: usize) -> Vec<f32> {
        let n = self.keys;
        let mut sum = vec![0.0f64; n];
        let mut seen = vec![0usize; n];
        self.each_row(layer, head, |_, lo, row| {
            for (k, &w) in row.iter().enumerate() {
                if w > 0.0 {
                    sum[lo + k] += w as f64;
                    seen[lo + k] += 1;
                }
            }
        });
        sum.iter()
            .zip(&seen)
            .map(|(s, &c)| if c == 0 { 0.0 } else { (s / c as f64) as f32 })
            .collect()
    }

    /// The sink positions, by [`SINK_RULE`].
    pub fn sinks(&self) -> Vec<usize> {
        let n = self.keys;
        let all = self.layers * self.heads;
        if n < 2 || all == 0 || self.rows() == 0 {
            return Vec::new();
        }
        let threshold = SINK_SHARE.max(2.0 / n as f32);
        let mut votes = vec![0usize; n];
        for l in 0..self.layers {
            for h in 0..self.heads {
                for (k, s) in self.key_share(l, h).into_iter().enumerate() {
                    if s >= threshold {
                        votes[k] += 1;
                    }
                }
            }
        }
        (0..n)
            .filter(|&k| votes[k] as f32 >= SINK_HEADS * all as f32)
            .collect()
    }

    /// Per-head statistics (the head atlas), with `sinks` for the sink share.
    pub fn head_stats(&self, sinks: &[usize]) -> Vec<HeadStats> {
        let n = self.keys;
        let mut out = Vec::with_capacity(self.layers * self.heads);
        for layer in 0..self.layers {
            for head in 0..self.heads {
                let (mut ent, mut sink, mut prev, mut dist) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                let mut prev_rows = 0usize;
                self.each_row(layer, head, |r, lo, row| {
                    let q = self.query_pos[r];
                    for (i, &w) in row.iter().enumerate() {
                        if w > 0.0 {
                            ent -= w as f64 * (w as f64).log2();
                        }
                        dist += w as f64 * q.abs_diff(lo + i) as f64;
                    }
                    let at = |k: usize| k.checked_sub(lo).and_then(|i| row.get(i)).copied();
                    sink += sinks
                        .iter()
                        .filter_map(|&s| at(s))
                        .map(|w| w as f64)
                        .sum::<f64>();
                    if q > 0 && q - 1 < n {
                        prev += at(q - 1).unwrap_or(0.0) as f64;
                        prev_rows += 1;
                    }
                });
                let rows = self.rows().max(1) as f64;
                out.push(HeadStats {
                    layer,
                    head,
                    kv_head: self.kv_head(head),
                    entropy: (ent / rows) as f32,
                    sink_share: (sink / rows) as f32,
                    prev_token: (prev / prev_rows.max(1) as f64) as f32,
                    distance: (dist / rows) as f32,
                });
            }
        }
        out
    }
}

impl Trace {
    /// Every row of the trace as a [`Grid`].
    pub fn grid(&self) -> Grid<'_> {
        Grid {
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            query_pos: (0..self.len()).collect(),
            keys: self.len(),
            data: GridData::Trace(self),
        }
    }

    fn n(&self) -> usize {
        self.len()
    }

    /// Attention rollout (Abnar & Zuidema 2020): with `Ā_l = ½·mean_h A_l + ½·I` (rows still
    /// sum to 1), `R_0 = Ā_0` and `R_l = Ā_l · R_{l−1}`; `[layer][query][key]`, the layer-`l`
    /// entry being the flow from the input tokens up to layer `l`'s output.
    pub fn rollout(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.layers * self.n() * self.n());
        self.rollout_each(|_, r| out.extend_from_slice(r));
        out
    }

    /// [`Trace::rollout`] one layer at a time: `f(layer, R_layer)` (so that only two `n × n`
    /// matrices are held at once).
    pub fn rollout_each(&self, mut f: impl FnMut(usize, &[f32])) {
        let n = self.n();
        let mut r: Option<Vec<f32>> = None;
        for l in 0..self.layers {
            let mut a = self.head_mean(l);
            for v in a.iter_mut() {
                *v *= 0.5;
            }
            for i in 0..n {
                a[i * n + i] += 0.5;
            }
            let next = match &r {
                None => a,
                Some(prev) => matmul(&a, prev, n),
            };
            f(l, &next);
            r = Some(next);
        }
    }

    /// Whether value-weighted norms can be computed (the model gave its value norms).
    pub fn has_value_norms(&self) -> bool {
        self.value_norms.len() == self.layers * self.heads * self.n() && self.n() > 0
    }

    /// The value-weighted norms `‖α_qk · f_h(x_k)‖ = α_qk · ‖f_h(x_k)‖` of `(layer, head)`,
    /// `[query][key]` (Kobayashi et al. 2020); `None` without value norms.
    pub fn value_weighted(&self, layer: usize, head: usize) -> Option<Vec<f32>> {
        if !self.has_value_norms() {
            return None;
        }
        let n = self.n();
        let norms = &self.value_norms[(layer * self.heads + head) * n..][..n];
        let mut m = self.matrix(layer, head);
        for row in m.chunks_exact_mut(n) {
            row.iter_mut().zip(norms).for_each(|(w, f)| *w *= f);
        }
        Some(m)
    }
}

/// `‖f_h(x_j)‖` for every head and token of one layer, `[head][token]`: `v` is the layer's
/// values `[tokens, heads, head_dim]` (bias included), and `project` applies the output
/// projection *without its bias* to `[tokens, heads·head_dim]` rows. Each head's slice is run
/// alone (the others zeroed), so `project` may be any linear map the model has.
pub fn value_norms<E>(
    v: &[f32],
    tokens: usize,
    heads: usize,
    head_dim: usize,
    mut project: impl FnMut(&[f32]) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    let width = heads * head_dim;
    let mut out = Vec::with_capacity(heads * tokens);
    let mut masked = vec![0.0f32; tokens * width];
    for h in 0..heads {
        masked.iter_mut().for_each(|x| *x = 0.0);
        for t in 0..tokens {
            let at = t * width + h * head_dim;
            masked[at..at + head_dim].copy_from_slice(&v[at..at + head_dim]);
        }
        let y = project(&masked)?;
        let d_out = y.len() / tokens.max(1);
        out.extend(
            y.chunks_exact(d_out.max(1))
                .map(|r| r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() as f32),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, start: usize, end: usize) -> TokenInfo {
        TokenInfo {
            id: 0,
            text: text.into(),
            start,
            end,
        }
    }

    /// Two layers, one head, three tokens; rows sum to 1.
    fn trace(attention: Vec<f32>, layers: usize, heads: usize) -> Trace {
        let tokens = vec![tok("[CLS]", 0, 0), tok("a", 0, 1), tok("b", 2, 3)];
        Trace::dense(tokens, (layers, heads, heads), false, attention).unwrap()
    }

    /// Words: "un ##bel ##ievably" is one word; its key weight is the sum over its pieces,
    /// its row the mean of theirs; rows still sum to 1.
    #[test]
    fn a_word_trace_sums_keys_and_averages_queries() {
        let tokens = vec![
            tok("[CLS]", 0, 0),
            tok("un", 0, 2),
            tok("##bel", 2, 5),
            tok("##ievably", 5, 12),
            tok("tired", 13, 18),
        ];
        // one layer, one head, 5 × 5 rows
        let att: Vec<f32> = vec![
            1.0, 0.0, 0.0, 0.0, 0.0, //
            0.5, 0.5, 0.0, 0.0, 0.0, //
            0.2, 0.3, 0.5, 0.0, 0.0, //
            0.1, 0.2, 0.3, 0.4, 0.0, //
            0.1, 0.1, 0.1, 0.1, 0.6, //
        ];
        let t = Trace::dense(tokens, (1, 1, 1), true, att).unwrap();
        let w = word_trace(&t).unwrap();
        let texts: Vec<&str> = w.tokens.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["[CLS]", "unbelievably", "tired"]);
        assert_eq!((w.tokens[1].start, w.tokens[1].end), (0, 12));
        let m = w.matrix(0, 0);
        // the word's row: the mean of rows 1..=3 with keys 1..=3 summed
        let want = [(0.5 + 0.2 + 0.1) / 3.0, (0.5 + 0.8 + 0.9) / 3.0, 0.0];
        for (a, b) in m[3..6].iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        // "tired" as a query gives the word the sum of its pieces
        assert!((m[7] - 0.3).abs() < 1e-6 && (m[8] - 0.6).abs() < 1e-6);
        for r in m.chunks(3) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn rollout_matches_a_hand_computed_product() {
        let a0 = [1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.2, 0.3, 0.5];
        let a1 = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        let t = trace([a0, a1].concat(), 2, 1);
        let r = t.rollout();
        let bar = |a: &[f32]| -> Vec<f32> {
            (0..9)
                .map(|i| 0.5 * a[i] + if i % 4 == 0 { 0.5 } else { 0.0 })
                .collect()
        };
        let (b0, b1) = (bar(&a0), bar(&a1));
        assert_eq!(&r[..9], &b0[..]);
        for i in 0..3 {
            for j in 0..3 {
                let want: f32 = (0..3).map(|k| b1[i * 3 + k] * b0[k * 3 + j]).sum();
                assert!((r[9 + i * 3 + j] - want).abs() < 1e-6);
            }
            let s: f32 = r[9 + i * 3..][..3].iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "rollout rows sum to 1");
        }
    }

    #[test]
    fn a_column_most_heads_lean_on_is_a_sink_and_renormalising_drops_it() {
        // every row gives token 0 most of its weight, in both heads
        let m = [0.8, 0.1, 0.1, 0.7, 0.2, 0.1, 0.6, 0.1, 0.3];
        let t = trace([m, m].concat(), 1, 2);
        assert_eq!(t.grid().sinks(), vec![0]);
        let stats = t.grid().head_stats(&[0]);
        assert!((stats[0].sink_share - 0.7).abs() < 1e-6);
        let r = without_sinks(&m, 3, &[0]);
        assert_eq!(r[0], 0.0);
        assert!((r[1] - 0.5).abs() < 1e-6 && (r[2] - 0.5).abs() < 1e-6);
        assert!((r[7] - 0.25).abs() < 1e-6 && (r[8] - 0.75).abs() < 1e-6);
        // uniform attention has no sink
        let u = [1.0 / 3.0; 9];
        assert!(trace([u, u].concat(), 1, 2).grid().sinks().is_empty());
    }

    #[test]
    fn head_statistics_by_hand() {
        // previous-token head: row q puts everything on q-1 (row 0 on itself)
        let m = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        let s = &trace(m.to_vec(), 1, 1).grid().head_stats(&[])[0];
        assert_eq!(s.prev_token, 1.0);
        assert_eq!(s.entropy, 0.0);
        assert!((s.distance - 2.0 / 3.0).abs() < 1e-6);
        let u = [0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.25, 0.25, 0.5];
        let s = &trace(u.to_vec(), 1, 1).grid().head_stats(&[])[0];
        assert!((s.entropy - 1.5).abs() < 1e-6);
    }

    #[test]
    fn gqa_heads_name_their_shared_kv_head() {
        let mut t = trace(vec![0.0; 4 * 9], 1, 4);
        t.kv_heads = 2;
        assert_eq!(
            (0..4).map(|h| t.grid().kv_head(h)).collect::<Vec<_>>(),
            [0, 0, 1, 1]
        );
        t.kv_heads = 1;
        assert_eq!(t.grid().head_stats(&[])[3].kv_head, 0);
    }

    #[test]
    fn words_join_pieces_and_keep_punctuation_apart() {
        let toks = [
            tok("[CLS]", 0, 0),
            tok("play", 0, 4),
            tok("##ing", 4, 7),
            tok("don", 8, 11),
            tok("'", 11, 12),
            tok("t", 12, 13),
            tok("Ġcat", 13, 17),
            tok("s", 17, 18),
            tok("[SEP]", 0, 0),
        ];
        assert_eq!(words(&toks), vec![0, 1, 1, 2, 3, 4, 5, 5, 6]);
    }

    #[test]
    fn value_norms_run_each_head_alone() {
        // two heads of dim 1, two tokens; the projection sums both inputs into one output
        // and doubles the second into another
        let v = [3.0, 4.0, 1.0, 2.0];
        let norms = value_norms::<()>(&v, 2, 2, 1, |x| {
            Ok(x.chunks(2)
                .flat_map(|r| [r[0] + r[1], 2.0 * r[1]])
                .collect())
        })
        .unwrap();
        // head 0 sees (3, 0) and (1, 0); head 1 sees (0, 4) and (0, 2)
        let n = |a: f32, b: f32| (a * a + b * b).sqrt();
        assert_eq!(norms, vec![3.0, 1.0, n(4.0, 8.0), n(2.0, 4.0)]);
    }
}
