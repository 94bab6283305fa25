//! Interventions on the decoder, swept: each source token (or word) knocked out, each head
//! ablated, and the change of `log p(target)` each makes ([`crate::trace::effect`]).
//!
//! A knockout is a key list handed to the kernel's mask ([`attend::Mask::with_hidden_keys`]):
//! no query after the source reads its key (in the chosen layers), never a materialised
//! `n × n` mask. What an intervention cannot change is reused:
//! - a knockout of positions `j…` changes no position up to `j` (nor, in Geva et al.'s
//!   variant, any before the predicting one): the clean KV cache of that prefix is kept
//!   (sources are swept from the last to the first, truncating the one cache back each time)
//!   and only the positions after it are run;
//! - an ablation of a head in layer `l` changes nothing below `l`: the clean residual stream
//!   entering `l` is kept and only layers `l…` run.

use crate::models::decoder::{Decoder, Edit, HeadEdit, Record};
use crate::nn::logits::{argmax, log_sum_exp};
use crate::tokenize::{TokenInfo, Tokenizer};
use crate::trace::effect::{
    attention_from, sources_of, Ablation, AttentionFrom, Effect, EffectSpec, Knockout, Measure,
    Source, Work,
};
use crate::{Error, Result};

/// Most rows of the residual stream one batch of head ablations runs at once.
const BATCH_ROWS: usize = 4096;

impl Decoder {
    /// The effect on `log p(target)` — the target's tokens following `prompt`; the model's own
    /// likeliest next token when `target` is empty — of knocking out each source of `prompt`
    /// and of ablating each head, as `spec` asks, beside the attention the predicting
    /// position (the prompt's last token) pays each source.
    pub fn effect(
        &self,
        prompt: &[TokenInfo],
        target: &[u32],
        spec: &EffectSpec,
    ) -> Result<Effect> {
        let c = &self.config;
        let n = prompt.len();
        if n == 0 {
            return Err(Error::Invalid(
                "an effect needs a prompt of at least one token".into(),
            ));
        }
        if let Some(r) = &spec.layers {
            if r.start >= r.end || r.end > c.n_layers {
                return Err(Error::Invalid(format!(
                    "knockout layers {}..{} are not a range of this model's {} layers",
                    r.start, r.end, c.n_layers
                )));
            }
        }
        // the last target token is only scored, never run: its id is checked here, before any
        // forward pass
        if let Some(&id) = target.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(Error::Invalid(format!(
                "target token id {id} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        let (trace, next) = self.explain_tokens(prompt)?;
        let tok = &self.tokenizer;
        let target_is_top = target.is_empty();
        let target: Vec<u32> = if target_is_top {
            vec![argmax(&next) as u32]
        } else {
            target.to_vec()
        };
        let t = target.len();
        let mut ids: Vec<u32> = prompt.iter().map(|p| p.id).collect();
        ids.extend_from_slice(&target[..t - 1]);
        let total = ids.len();
        let vocab = c.vocab;
        let logp = |logits: &[f32]| -> f32 {
            logits
                .chunks_exact(vocab)
                .zip(&target)
                .map(|(row, &id)| row[id as usize] - log_sum_exp(row))
                .sum()
        };
        let top_of = |logits: &[f32]| -> String { tok.name(argmax(&logits[..vocab]) as u32) };

        // the unedited run, recording the residual stream and the heads' means; every
        // position kept in the cache, so that it can be truncated back to any prefix
        let keep = Edit {
            keep_cache: true,
            ..Edit::default()
        };
        let mut cache = self.new_cache()?;
        let mut record = Record::default();
        let clean = self.forward_edited(&ids, &mut cache, t, &keep, Some(&mut record))?;
        let base = logp(&clean);
        let p0 = {
            let row = &clean[..vocab];
            let i = argmax(row);
            (tok.name(i as u32), (row[i] - log_sum_exp(row)).exp())
        };
        let layers = c.n_layers;
        let mut work = Work::default();

        // the sources and the attention paid to them
        let groups = sources_of(prompt, spec)?;
        let q = n - 1;
        let (per_layer, rollout) = attention_from(&trace, &[q], &groups);

        // knockouts, the one whose first changed position is last first
        let from = match spec.knockout {
            Knockout::Later => 0,
            Knockout::Predicting => q,
        };
        let first_changed = |g: &[usize]| (g[0] + 1).max(from);
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(first_changed(&groups[i])));
        let mut results: Vec<(f32, String, bool)> = vec![(0.0, p0.0.clone(), false); groups.len()];
        for i in order {
            let g = &groups[i];
            let fc = first_changed(g);
            if fc >= total {
                continue; // no later query reads it
            }
            let start = if spec.reuse { fc } else { 0 };
            cache.truncate(start)?;
            let edit = Edit {
                knockout: g.clone(),
                from,
                layers: spec.layers.clone(),
                head: None,
                keep_cache: true,
            };
            // (logits only of the predicting rows the run holds)
            let rows = total - start.max(q);
            let run = self.forward_edited(&ids[start..], &mut cache, rows, &edit, None)?;
            work.done += (total - start) * layers;
            work.naive += total * layers;
            // the predicting rows are positions q..total; those before `start` are unchanged
            let logits = predicting_rows(&clean, &run, q, start, total, vocab);
            results[i] = (logp(&logits) - base, top_of(&logits), true);
        }
        let sources = groups
            .iter()
            .zip(per_layer)
            .zip(rollout)
            .zip(results)
            .map(|(((g, la), r), (delta, top, removes))| Source {
                label: g.iter().map(|&i| prompt[i].text.as_str()).collect(),
                positions: g.clone(),
                attention: la.iter().sum::<f32>() / layers as f32,
                layer_attention: la,
                rollout: r,
                delta,
                top,
                removes_edges: removes,
            })
            .collect();

        // head ablations, from the clean residual stream entering the head's layer; with
        // reuse, a layer's heads run as one batch (the weights read once for all of them)
        let mut head_delta = Vec::new();
        if spec.heads {
            let vd = c.v_head_dim;
            let mut scratch = self.new_cache()?;
            let mut batch_caches = Vec::new();
            // sequences per batch: a layer's heads, fewer for a long text (rows bounded)
            let per_batch = (BATCH_ROWS / total).clamp(1, c.n_heads);
            for l in 0..layers {
                let edits: Vec<HeadEdit> = (0..c.n_heads)
                    .map(|h| HeadEdit {
                        layer: l,
                        head: h,
                        value: match spec.ablation {
                            Ablation::Zero => None,
                            Ablation::Mean => {
                                let at = (l * c.n_heads + h) * vd;
                                Some(record.head_means[at..at + vd].to_vec())
                            }
                        },
                    })
                    .collect();
                if spec.reuse {
                    for chunk in edits.chunks(per_batch) {
                        let runs = self.forward_from_heads(
                            &record.inputs[l],
                            l,
                            &mut batch_caches,
                            t,
                            chunk,
                        )?;
                        for logits in runs {
                            work.done += total * (layers - l);
                            work.naive += total * layers;
                            head_delta.push(logp(&logits) - base);
                        }
                    }
                } else {
                    for e in edits {
                        let edit = Edit {
                            head: Some(e),
                            keep_cache: true,
                            ..Edit::default()
                        };
                        work.done += total * layers;
                        work.naive += total * layers;
                        scratch.reset();
                        let logits = self.forward_edited(&ids, &mut scratch, t, &edit, None)?;
                        head_delta.push(logp(&logits) - base);
                    }
                }
            }
        }
        Ok(Effect {
            measure: Measure::LogProb,
            attention_from: AttentionFrom::Predicting,
            truncated: false,
            tokens: prompt.to_vec(),
            target: target.iter().map(|&id| tok.name(id)).collect(),
            target_ids: target,
            target_is_top,
            logp: base,
            top: p0,
            spec: spec.clone(),
            layers,
            heads: c.n_heads,
            sources,
            head_delta,
            work,
            trace,
        })
    }
}

/// The logits of the predicting positions `q..total`, `[total − q, vocab]`: rows before
/// `start` from the unedited run's `clean` (which holds exactly those rows), the rest from
/// `run` (which holds the last of them, from `max(start, q)`).
fn predicting_rows(
    clean: &[f32],
    run: &[f32],
    q: usize,
    start: usize,
    total: usize,
    vocab: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity((total - q) * vocab);
    let run_first = start.max(q);
    for p in q..total {
        let row = if p < start {
            &clean[(p - q) * vocab..(p - q + 1) * vocab]
        } else {
            &run[(p - run_first) * vocab..(p - run_first + 1) * vocab]
        };
        out.extend_from_slice(row);
    }
    out
}
