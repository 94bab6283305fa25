//! A sentence encoder: a BERT-family folder as sentence-transformers lays it out
//! (`config.json`, `model.safetensors`, `tokenizer.json`, and where present `modules.json`,
//! `sentence_bert_config.json`, `1_Pooling/config.json`), with tokenization, truncation,
//! pooling and normalisation as those files say.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;

use super::bert::BertModel;
use crate::error::{io, Error, Result};
use crate::formats::fields::Fields;
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
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Format {
            path: path.to_path_buf(),
            what: format!("invalid JSON: {e}"),
        })
}

impl SentenceEncoder {
    /// Loads the folder `dir`.
    pub fn load(dir: &Path) -> Result<SentenceEncoder> {
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
        Ok(SentenceEncoder {
            dir: dir.to_path_buf(),
            model,
            tokenizer,
            max_len,
            pooling,
            normalize,
        })
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
