//! A sentence encoder: a BERT-family folder as sentence-transformers lays it out
//! (`config.json`, `model.safetensors`, `tokenizer.json`, and where present `modules.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`), with tokenization, truncation,
//! pooling and normalisation as those files say.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;

use super::bert::BertModel;
use crate::error::{Error, Result};
use crate::formats::fields::Fields;
use crate::nn::linear::Precision;
use crate::tokenize::hf::{HfTokenizer, Tokenized};
use crate::trace::Trace;

/// Texts per forward pass in [`SentenceEncoder::embed`].
pub const BATCH: usize = 64;

/// How token states become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real tokens (special tokens included, as sentence-transformers does).
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the tokens.
    Max,
}

/// Embeddings of a batch of texts.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// Vector width.
    pub dim: usize,
    /// One vector per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Indices of the texts that were truncated.
    pub truncated: Vec<usize>,
}

/// A BERT sentence encoder.
pub struct SentenceEncoder {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// The transformer.
    pub model: BertModel,
    /// The tokenizer, truncating at [`SentenceEncoder::max_len`].
    pub tokenizer: HfTokenizer,
    /// Longest input in tokens, special tokens included.
    pub max_len: usize,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised.
    pub normalize: bool,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::formats::read_regular_text(path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Format {
            path: path.to_path_buf(),
            what: format!("invalid JSON: {e}"),
        })
}

/// The texts whose activations set the int8 path's smoothing ([`Precision::Int8`]): short and
/// long, prose, code, numbers, other scripts — the ranges a layer's input columns reach.
/// (The tests check the int8 embeddings on other texts.)
const CALIBRATION: &[&str] = &[
    "",
    "ok",
    "Thanks!",
    "What time does the library open on Sundays?",
    "The committee postponed its decision until the budget figures were confirmed.",
    "She poured the coffee, glanced at the rain, and decided the letter could wait.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "for (i, x) in items.iter().enumerate() { total += x * weights[i]; }",
    "Order #48213 shipped on 2024-03-07: 3 × $19.99, tracking 1Z999AA10123456784.",
    "Le train de 8 h 15 est annulé en raison d'une grève.",
    "Ich habe meinen Regenschirm im Büro vergessen.",
    "¿Dónde está la estación de autobuses más cercana?",
    "Москва — столица России.",
    "今日はとても暑いので、アイスクリームを食べました。",
    "omg that movie was sooo good 😂😂 10/10 would watch again",
    "ERROR: connection refused (errno 111) while contacting 10.0.0.12:5432",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong stepped out first.",
    "The defendant's counsel argued that the contract was void for lack of consideration.",
    "Mix two cups of flour with one teaspoon of salt, then add water slowly.",
    "Is it better to rent or to buy a house when interest rates are high and prices keep \
     rising faster than wages in most of the country's larger cities?",
];

impl SentenceEncoder {
    /// Loads the folder `dir`.
    pub fn load(dir: &Path) -> Result<SentenceEncoder> {
        SentenceEncoder::load_with(dir, Precision::Float32)
    }

    /// [`SentenceEncoder::load`] with the linear layers' weights at `precision`
    /// ([`Precision::Int8`]: `Q8_0` weights and integer products).
    pub fn load_with(dir: &Path, precision: Precision) -> Result<SentenceEncoder> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{} is not a model folder",
                dir.display()
            )));
        }
        let model = BertModel::load(dir)?;
        let sbert_path = dir.join("sentence_bert_config.json");
        let sbert = read_json(&sbert_path)?;
        let max_len = match sbert.as_ref().and_then(|v| v.get("max_seq_length")) {
            None | Some(Value::Null) => model.config.max_position_embeddings,
            Some(v) => {
                let f = Fields::of(&sbert_path);
                let n = v
                    .as_u64()
                    .ok_or_else(|| f.bad("max_seq_length", format_args!("is {v}, not a count")))?;
                // longer than the position table is what sentence-transformers clips too
                f.count(
                    "max_seq_length",
                    usize::try_from(n).unwrap_or(usize::MAX),
                    2..=usize::MAX,
                )?
                .min(model.config.max_position_embeddings)
            }
        };
        let pool_cfg = read_json(&dir.join("1_Pooling").join("config.json"))?;
        let flag = |k: &str| {
            pool_cfg
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let pooling = if flag("pooling_mode_cls_token") {
            Pooling::Cls
        } else if flag("pooling_mode_max_tokens") {
            Pooling::Max
        } else {
            Pooling::Mean
        };
        let modules = read_json(&dir.join("modules.json"))?;
        let normalize = modules.as_ref().and_then(Value::as_array).is_some_and(|m| {
            m.iter().any(|x| {
                x.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("Normalize"))
            })
        });
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = HfTokenizer::from_file(&tok_path, max_len)?;
        // every id the tokenizer can produce must have an embedding row
        let ids = crate::tokenize::Tokenizer::vocab_size(&tokenizer);
        if ids > model.config.vocab_size {
            return Err(Error::Format {
                path: tok_path,
                what: format!(
                    "the tokenizer has {ids} tokens, but config.json's vocab_size is {} (the \
                     embedding table's rows): the two files are not from one model",
                    model.config.vocab_size
                ),
            });
        }
        let mut enc = SentenceEncoder {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            max_len,
            pooling,
            normalize,
        };
        if precision == Precision::Int8 {
            let seqs = CALIBRATION
                .iter()
                .map(|t| enc.tokenize(t).map(|t| t.ids()))
                .collect::<Result<Vec<_>>>()?;
            enc.model.quantise_int8(&seqs)?;
        }
        Ok(enc)
    }

    /// Reads up to `max_len` tokens (special tokens included) instead of the length its
    /// sentence-transformers configuration gives (`max_seq_length`, what it was trained on):
    /// at least 2, at most the model's position table.
    pub fn set_max_len(&mut self, max_len: usize) -> Result<()> {
        let most = self.model.config.max_position_embeddings;
        if !(2..=most).contains(&max_len) {
            return Err(Error::Invalid(format!(
                "a length of {max_len} tokens: this model reads 2 to {most} (its position table)"
            )));
        }
        self.tokenizer.set_max_len(max_len)?;
        self.max_len = max_len;
        Ok(())
    }

    /// The longest input its position table allows.
    pub fn max_positions(&self) -> usize {
        self.model.config.max_position_embeddings
    }

    /// Tokenizes one text, special tokens added, truncated at [`SentenceEncoder::max_len`].
    pub fn tokenize(&self, text: &str) -> Result<Tokenized> {
        self.tokenizer.tokenize(text)
    }

    /// Sentence embeddings of `texts`, in batches of [`BATCH`] texts of similar length (packed,
    /// never padded).
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        let toks: Vec<Tokenized> = texts
            .par_iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_>>()?;
        let truncated = toks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.truncated)
            .map(|(i, _)| i)
            .collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| toks[i].tokens.len());
        let dim = self.model.config.hidden_size;
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| toks[i].ids()).collect();
            let out = self.model.forward(&seqs, false)?;
            let mut row = 0;
            for (&i, s) in batch.iter().zip(&seqs) {
                vectors[i] = self.pool(&out.hidden[row * dim..(row + s.len()) * dim], dim);
                row += s.len();
            }
        }
        Ok(Embeddings {
            dim,
            vectors,
            truncated,
        })
    }

    fn pool(&self, states: &[f32], dim: usize) -> Vec<f32> {
        let n = states.len() / dim;
        let mut v = match self.pooling {
            Pooling::Cls => states[..dim].to_vec(),
            Pooling::Mean => {
                let mut m = vec![0.0f64; dim];
                for row in states.chunks_exact(dim) {
                    for (a, b) in m.iter_mut().zip(row) {
                        *a += *b as f64;
                    }
                }
                m.iter().map(|x| (x / n as f64) as f32).collect()
            }
            Pooling::Max => {
                let mut m = vec![f32::NEG_INFINITY; dim];
                for row in states.chunks_exact(dim) {
                    for (a, b) in m.iter_mut().zip(row) {
                        *a = a.max(*b);
                    }
                }
                m
            }
        };
        if self.normalize {
            let norm = v
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
        v
    }

    /// The attention of every layer and head over `text`'s tokens, from the fused kernel.
    pub fn trace(&self, text: &str) -> Result<(Trace, Tokenized)> {
        let tok = self.tokenize(text)?;
        let out = self.model.forward(&[tok.ids()], true)?;
        let c = &self.model.config;
        let heads = c.num_attention_heads;
        let mut trace = Trace::dense(
            tok.tokens.clone(),
            (c.num_hidden_layers, heads, heads),
            false,
            out.attention.into_iter().next().unwrap_or_default(),
        )?;
        trace.value_norms = out.value_norms.into_iter().next().unwrap_or_default();
        Ok((trace, tok))
    }
}

impl SentenceEncoder {
    /// Attention beside its causal effect on the sentence embedding: each source of `text`
    /// (token, or word with [`EffectSpec::words`]) knocked out — its key hidden from every
    /// query, its own included, in the chosen layers — and each head zero-ablated, the change
    /// measured as `1 − cos` between the edited and the unedited embedding. The attention
    /// shown beside it is the one the pooled positions pay: `[CLS]`'s with CLS pooling, the
    /// mean over every query otherwise. Interventions run as batches of packed sequences;
    /// nothing is reused (every position reads a knocked-out key, so every position changes).
    pub fn effect(
        &self,
        text: &str,
        spec: &crate::trace::effect::EffectSpec,
    ) -> Result<crate::trace::effect::Effect> {
        use super::bert::EncoderEdit;
        use crate::trace::effect::{
            attention_from, sources_of, Ablation, AttentionFrom, Effect, Knockout, Measure, Source,
            Work,
        };
        let c = &self.model.config;
        if spec.knockout == Knockout::Predicting {
            return Err(Error::Invalid(
                "an encoder predicts nothing: its knockouts remove a token's edges from every \
                 position (knockout `later`)"
                    .into(),
            ));
        }
        if spec.heads && spec.ablation == Ablation::Mean {
            return Err(Error::Invalid(
                "mean ablation is for causal models; an encoder's heads are zero-ablated".into(),
            ));
        }
        if let Some(r) = &spec.layers {
            if r.start >= r.end || r.end > c.num_hidden_layers {
                return Err(Error::Invalid(format!(
                    "knockout layers {}..{} are not a range of this model's {} layers",
                    r.start, r.end, c.num_hidden_layers
                )));
            }
        }
        let (trace, tok) = self.trace(text)?;
        let ids = tok.ids();
        let n = ids.len();
        let dim = c.hidden_size;
        let groups = sources_of(&tok.tokens, spec)?;
        let queries: Vec<usize> = match self.pooling {
            Pooling::Cls => vec![0],
            Pooling::Mean | Pooling::Max => (0..n).collect(),
        };
        let (per_layer, rollout) = attention_from(&trace, &queries, &groups);

        // the unedited embedding, then every intervention as one packed sequence each
        let clean = self.pool(
            &self
                .model
                .forward(std::slice::from_ref(&ids), false)?
                .hidden,
            dim,
        );
        let mut edits: Vec<EncoderEdit> = Vec::new();
        // a source covering every token would leave the queries nothing to read
        let live: Vec<bool> = groups.iter().map(|g| g.len() < n).collect();
        for (g, _) in groups.iter().zip(&live).filter(|(_, &l)| l) {
            edits.push(EncoderEdit {
                hidden: g.clone(),
                layers: spec.layers.clone(),
                head: None,
            });
        }
        let knockouts = edits.len();
        if spec.heads {
            for l in 0..c.num_hidden_layers {
                for h in 0..c.num_attention_heads {
                    edits.push(EncoderEdit {
                        head: Some((l, h)),
                        ..EncoderEdit::default()
                    });
                }
            }
        }
        let mut deltas = Vec::with_capacity(edits.len());
        for chunk in edits.chunks(BATCH) {
            let seqs = vec![ids.clone(); chunk.len()];
            let out = self.model.forward_edited(&seqs, chunk)?;
            for i in 0..chunk.len() {
                let v = self.pool(&out.hidden[i * n * dim..(i + 1) * n * dim], dim);
                // (a cosine a rounding above 1 is no change)
                deltas.push((1.0 - cosine(&clean, &v)).max(0.0));
            }
        }
        let layers = c.num_hidden_layers;
        let mut knocked = deltas[..knockouts].iter();
        let sources = groups
            .iter()
            .zip(per_layer)
            .zip(rollout)
            .zip(&live)
            .map(|(((g, la), r), &removes)| Source {
                label: g.iter().map(|&i| tok.tokens[i].text.as_str()).collect(),
                positions: g.clone(),
                attention: la.iter().sum::<f32>() / layers as f32,
                layer_attention: la,
                rollout: r,
                delta: if removes {
                    knocked.next().copied().unwrap_or(0.0)
                } else {
                    0.0
                },
                top: String::new(),
                removes_edges: removes,
            })
            .collect();
        let passes = edits.len() * n * layers;
        Ok(Effect {
            measure: Measure::Embedding,
            attention_from: match self.pooling {
                Pooling::Cls => AttentionFrom::First,
                Pooling::Mean | Pooling::Max => AttentionFrom::EveryQuery,
            },
            truncated: tok.truncated,
            tokens: tok.tokens.clone(),
            target_ids: Vec::new(),
            target: Vec::new(),
            target_is_top: false,
            logp: 0.0,
            top: (String::new(), 0.0),
            spec: spec.clone(),
            layers,
            heads: c.num_attention_heads,
            sources,
            head_delta: deltas[knockouts..].to_vec(),
            work: Work {
                done: passes,
                naive: passes,
            },
            trace,
        })
    }
}

/// Cosine similarity, in f64.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    (ab / (aa * bb).sqrt()) as f32
}
