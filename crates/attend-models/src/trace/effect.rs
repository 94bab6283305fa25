//! Attention beside its causal effect: what a knockout of each source token (or word) and an
//! ablation of each head do to a prediction, next to the attention the predicting position
//! paid, with the rank correlation between the two. The numbers are computed by a model's
//! interventions (`models::decoder::effect`); this module holds what every front end shows of
//! them.
//!
//! Invariant: nothing here runs a model; every number is read from an [`Effect`].

use crate::tokenize::TokenInfo;
use crate::trace::Trace;

/// Which attention edges a knockout removes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Knockout {
    /// The edges into the source from every later position: nothing after it reads it.
    #[default]
    Later,
    /// Only the edges from the predicting positions (Geva et al. 2023).
    Predicting,
}

/// What an effect measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Measure {
    /// The change of `log p(target)` (a causal model's prediction).
    #[default]
    LogProb,
    /// `1 − cos` between the edited and the unedited sentence embedding (an encoder).
    Embedding,
}

/// Whose attention is shown beside the effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionFrom {
    /// The predicting position (a causal model).
    #[default]
    Predicting,
    /// The first token, `[CLS]` (an encoder with CLS pooling).
    First,
    /// The mean over every query (an encoder pooling every position).
    EveryQuery,
}

impl AttentionFrom {
    /// How the JSON names it.
    pub fn name(self) -> &'static str {
        match self {
            AttentionFrom::Predicting => "predicting",
            AttentionFrom::First => "cls",
            AttentionFrom::EveryQuery => "every_query",
        }
    }
}

/// What replaces an ablated head's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ablation {
    /// Zeros.
    #[default]
    Zero,
    /// Its mean over the text's positions.
    Mean,
}

/// What to measure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectSpec {
    /// The knockout's edges.
    pub knockout: Knockout,
    /// The layers the knockout applies in (all when `None`).
    pub layers: Option<std::ops::Range<usize>>,
    /// Knock out whole words ([`crate::trace::aggregate::words`]) instead of tokens.
    pub words: bool,
    /// The sources, each a list of prompt positions knocked out together (default: every
    /// token, or every word with [`EffectSpec::words`]).
    pub groups: Option<Vec<Vec<usize>>>,
    /// Ablate every head (else only the knockouts are run).
    pub heads: bool,
    /// How a head is ablated.
    pub ablation: Ablation,
    /// Reuse what an intervention cannot change (the KV cache of the positions before the
    /// first one it touches; the residual stream below an ablated head's layer). Off: every
    /// intervention recomputes the whole text (the benchmark's baseline).
    pub reuse: bool,
}

impl Default for EffectSpec {
    fn default() -> Self {
        EffectSpec {
            knockout: Knockout::Later,
            layers: None,
            words: false,
            groups: None,
            heads: true,
            ablation: Ablation::Zero,
            reuse: true,
        }
    }
}

/// One source: a token or a word of the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// Its text.
    pub label: String,
    /// Its token positions.
    pub positions: Vec<usize>,
    /// Attention from the predicting position, `[layer]`: the mean over heads, summed over
    /// the source's tokens.
    pub layer_attention: Vec<f32>,
    /// [`Source::layer_attention`] averaged over layers.
    pub attention: f32,
    /// Rollout (Abnar & Zuidema) from the predicting position at the last layer.
    pub rollout: f32,
    /// `log p(target)` with the source knocked out, minus the unedited one (negative: the
    /// source supported the target); for an encoder, `1 − cos` of the edited embedding with
    /// the unedited one. 0 where the knockout removes no edge.
    pub delta: f32,
    /// The likeliest next token with the source knocked out.
    pub top: String,
    /// Whether the knockout removes any edge (a source at or after the last predicting
    /// position is read by no later query).
    pub removes_edges: bool,
}

/// How much work the sweep did, against recomputing every intervention from scratch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Token × layer passes run.
    pub done: usize,
    /// What recomputing the whole text for every intervention would run.
    pub naive: usize,
}

/// A prediction, each source's knockout and each head's ablation.
#[derive(Clone, Debug)]
pub struct Effect {
    /// What `delta` and `head_delta` measure.
    pub measure: Measure,
    /// Whose attention the sources' `attention` and `rollout` are.
    pub attention_from: AttentionFrom,
    /// Whether the text was cut at the model's length limit (an encoder truncates).
    pub truncated: bool,
    /// The prompt's tokens.
    pub tokens: Vec<TokenInfo>,
    /// The target's token ids (one or more tokens after the prompt).
    pub target_ids: Vec<u32>,
    /// Their names.
    pub target: Vec<String>,
    /// Whether the target is the model's own likeliest next token (none was given).
    pub target_is_top: bool,
    /// `log p(target)`: the sum of the target tokens' log-probabilities.
    pub logp: f32,
    /// The likeliest next token, unedited, and its probability.
    pub top: (String, f32),
    /// What was measured.
    pub spec: EffectSpec,
    /// Layers and heads per layer of the model.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// The sources, in text order.
    pub sources: Vec<Source>,
    /// `[layer][head]`: Δ log p(target) (an encoder: `1 − cos`) with the head ablated (empty
    /// when heads were not ablated).
    pub head_delta: Vec<f32>,
    /// The sweep's work.
    pub work: Work,
    /// The unedited attention of the prompt (what the viewer shows beside the effect).
    pub trace: Trace,
}

impl Effect {
    /// The predicting position (the last prompt token), whose attention is shown (an
    /// encoder: the last token; its attention shown is the mean over every query).
    pub fn predicting(&self) -> usize {
        self.tokens.len() - 1
    }

    /// The name of what `delta` measures, for tables and legends.
    pub fn delta_name(&self) -> &'static str {
        match self.measure {
            Measure::LogProb => "Δ log p",
            Measure::Embedding => "1 − cos",
        }
    }

    /// One line naming the prediction measured: the target, its log-probability, and the
    /// likeliest next token (a page's subtitle).
    pub fn headline(&self) -> String {
        if self.measure == Measure::Embedding {
            return format!(
                "the sentence embedding of {} tokens: each change measured as 1 − cos to the \
                 unedited embedding",
                self.tokens.len()
            );
        }
        let q = self.predicting();
        let p = self.logp.exp();
        format!(
            "after …{:?}: log p({:?}) = {:.3} (p = {}){}; likeliest next {:?} ({:.3})",
            self.tokens[q].text,
            self.target.concat(),
            self.logp,
            if p >= 0.001 {
                format!("{p:.3}")
            } else {
                format!("{p:.1e}")
            },
            if self.target_is_top {
                ", the model's own top token"
            } else {
                ""
            },
            self.top.0,
            self.top.1
        )
    }

    /// Spearman's rank correlation of the sources' attention (mean over layers and heads)
    /// with |Δ log p|, over the sources whose knockout removes edges; `None` with fewer than
    /// three or a constant side.
    pub fn spearman_attention(&self) -> Option<f32> {
        self.spearman_with(|s| s.attention)
    }

    /// The same with the rollout.
    pub fn spearman_rollout(&self) -> Option<f32> {
        self.spearman_with(|s| s.rollout)
    }

    fn spearman_with(&self, f: impl Fn(&Source) -> f32) -> Option<f32> {
        let live: Vec<&Source> = self.sources.iter().filter(|s| s.removes_edges).collect();
        let a: Vec<f32> = live.iter().map(|s| f(s)).collect();
        let b: Vec<f32> = live.iter().map(|s| s.delta.abs()).collect();
        spearman(&a, &b)
    }

    /// Heads sorted by |Δ| (Δ log p, or 1 − cos), largest first: `(layer, head, Δ)`.
    pub fn heads_by_effect(&self) -> Vec<(usize, usize, f32)> {
        let mut out: Vec<(usize, usize, f32)> = self
            .head_delta
            .iter()
            .enumerate()
            .map(|(i, &d)| (i / self.heads.max(1), i % self.heads.max(1), d))
            .collect();
        out.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        out
    }

    /// The effect as a JSON value (what `attend effect --format json` prints and
    /// the viewer and Python read).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let logp = self.measure == Measure::LogProb;
        // (what an encoder has no notion of is null)
        let only = |v: serde_json::Value| if logp { v } else { serde_json::Value::Null };
        let sources: Vec<serde_json::Value> = self
            .sources
            .iter()
            .map(|s| {
                let mut v = json!({
                    "label": s.label,
                    "positions": s.positions,
                    "attention": s.attention,
                    "layer_attention": s.layer_attention,
                    "rollout": s.rollout,
                    "delta": s.delta,
                    "top": s.top,
                    "removes_edges": s.removes_edges,
                });
                if logp {
                    v["delta_logp"] = json!(s.delta);
                }
                v
            })
            .collect();
        let heads: Vec<serde_json::Value> = self
            .heads_by_effect()
            .into_iter()
            .map(|(l, h, d)| {
                if logp {
                    json!({"layer": l, "head": h, "delta": d, "delta_logp": d})
                } else {
                    json!({"layer": l, "head": h, "delta": d})
                }
            })
            .collect();
        let mut doc = json!({
            "measure": match self.measure {
                Measure::LogProb => "logp",
                Measure::Embedding => "embedding",
            },
            "delta_name": self.delta_name(),
            "attention_from": self.attention_from.name(),
            "truncated": self.truncated,
            "target": self.target,
            "target_ids": self.target_ids,
            "target_is_top": only(json!(self.target_is_top)),
            "logp": only(json!(self.logp)),
            "top": only(json!({"token": self.top.0, "p": self.top.1})),
            "predicting_position": only(json!(self.predicting())),
            "knockout": match (self.spec.knockout, logp) {
                (_, false) => "every",
                (Knockout::Later, _) => "later",
                (Knockout::Predicting, _) => "predicting",
            },
            "knockout_layers": self.spec.layers.as_ref().map(|r| [r.start, r.end]),
            "unit": if self.spec.words { "word" } else { "token" },
            "ablation": match self.spec.ablation {
                Ablation::Zero => "zero",
                Ablation::Mean => "mean",
            },
            "layers": self.layers,
            "heads": self.heads,
            "sources": sources,
            "head_delta": self.head_delta,
            "heads_by_effect": heads,
            "spearman": {
                "attention": self.spearman_attention(),
                "rollout": self.spearman_rollout(),
            },
            "work": {"token_layers": self.work.done, "naive_token_layers": self.work.naive},
        });
        if logp {
            doc["head_delta_logp"] = json!(self.head_delta);
        }
        doc
    }
}

/// Attention from queries `qs` of `trace` (averaged over them) to each of `groups` (lists of
/// key positions): `([group][layer]` mean over heads summed over the group's keys, `[group]`
/// rollout at the last layer`)`.
pub fn attention_from(
    trace: &Trace,
    qs: &[usize],
    groups: &[Vec<usize>],
) -> (Vec<Vec<f32>>, Vec<f32>) {
    let per = (trace.heads * qs.len()).max(1) as f32;
    let per_layer: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| {
            (0..trace.layers)
                .map(|l| {
                    let mut sum = 0.0f32;
                    for h in 0..trace.heads {
                        for &q in qs {
                            sum += g.iter().map(|&k| trace.weight(l, h, q, k)).sum::<f32>();
                        }
                    }
                    sum / per
                })
                .collect()
        })
        .collect();
    let n = trace.len();
    let mut last = vec![0.0f32; n];
    trace.rollout_each(|l, r| {
        if l + 1 == trace.layers {
            for &q in qs {
                last.iter_mut()
                    .zip(&r[q * n..(q + 1) * n])
                    .for_each(|(a, b)| *a += b / qs.len().max(1) as f32);
            }
        }
    });
    let rollout = groups
        .iter()
        .map(|g| g.iter().map(|&k| last.get(k).copied().unwrap_or(0.0)).sum())
        .collect();
    (per_layer, rollout)
}

/// The sources `spec` asks for over `prompt`'s tokens: its own groups (checked: strictly
/// increasing positions of the prompt), every word, or every token.
pub fn sources_of(prompt: &[TokenInfo], spec: &EffectSpec) -> crate::Result<Vec<Vec<usize>>> {
    let n = prompt.len();
    if let Some(g) = &spec.groups {
        if let Some(bad) = g.iter().find(|g| {
            g.is_empty() || g.windows(2).any(|w| w[0] >= w[1]) || g.iter().any(|&p| p >= n)
        }) {
            return Err(crate::Error::Invalid(format!(
                "the source {bad:?} is not a strictly increasing list of positions of the \
                 {n}-token prompt"
            )));
        }
        Ok(g.clone())
    } else if spec.words {
        let w = crate::trace::aggregate::words(prompt);
        let mut g: Vec<Vec<usize>> = Vec::new();
        for (i, &wi) in w.iter().enumerate() {
            match g.get_mut(wi) {
                Some(v) => v.push(i),
                None => g.push(vec![i]),
            }
        }
        Ok(g)
    } else {
        Ok((0..n).map(|i| vec![i]).collect())
    }
}

/// Spearman's rank correlation (ties get their mean rank); `None` with fewer than three
/// pairs, different lengths, or a side without spread.
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() || a.len() < 3 {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (a.len() as f64 + 1.0) / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (x, y) = (x - mean, y - mean);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    (saa > 0.0 && sbb > 0.0).then(|| (sab / (saa * sbb).sqrt()) as f32)
}

/// 1-based ranks, ties averaged.
fn ranks(x: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = rank;
        }
        i = j + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_known_rankings() {
        // a monotone map is 1, its reverse −1
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [1.0, 4.0, 9.0, 16.0, 25.0];
        assert!((spearman(&a, &b).unwrap() - 1.0).abs() < 1e-6);
        let c = [5.0, 4.0, 3.0, 2.0, 1.0];
        assert!((spearman(&a, &c).unwrap() + 1.0).abs() < 1e-6);
        // scipy.stats.spearmanr([1,2,3,4,5], [2,1,4,3,5]) = 0.8
        let d = [2.0, 1.0, 4.0, 3.0, 5.0];
        assert!((spearman(&a, &d).unwrap() - 0.8).abs() < 1e-6);
        // ties: spearmanr([1,2,2,3], [1,3,2,4]) = 0.9486833
        let (e, f) = ([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 2.0, 4.0]);
        assert!((spearman(&e, &f).unwrap() - 0.948_683_3).abs() < 1e-6);
        assert_eq!(spearman(&a, &[1.0; 5]), None);
        assert_eq!(spearman(&a[..2], &b[..2]), None);
    }
}
