//! The BERT encoder (`BertModel` in transformers): embeddings, then layers of self-attention
//! on the fused kernel and a GELU MLP, each with a residual and a post-layer-norm.
//!
//! Sequences of different lengths are packed row after row — the linear layers see only real
//! tokens, no padding — and each sequence attends within itself.

use std::path::Path;

use attend::{fused, AttnParams, Layout, PackedMatrix, Shape};
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ops::{layer_norm, linear, linear_gelu};
use crate::weights::Weights;

/// The fields of `config.json` the encoder uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads per layer.
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Token-type vocabulary.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "eps")]
    pub layer_norm_eps: f32,
    /// Activation (`gelu` only).
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn eps() -> f32 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}

/// A BERT model over memory-mapped safetensors weights.
pub struct BertModel {
    /// Its configuration.
    pub config: BertConfig,
    weights: Weights,
    prefix: String,
    /// The linear layers' weights packed for the GEMM, by tensor name (without prefix).
    packed: std::collections::HashMap<String, PackedMatrix>,
}

/// What a forward pass returns: the last hidden states of every sequence, packed
/// `[Σ len, hidden]`, and, when asked, each sequence's attention `[layer][head][q][k]`.
pub struct BertOutput {
    /// Hidden states, sequence after sequence.
    pub hidden: Vec<f32>,
    /// Attention probabilities per sequence (empty unless asked for).
    pub attention: Vec<Vec<f32>>,
}

impl BertModel {
    /// Loads `config.json` and `model.safetensors` from `dir`, checking every tensor's shape.
    pub fn load(dir: &Path) -> Result<BertModel> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(crate::error::io(&cfg_path))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: cfg_path.clone(),
            what: format!("not a BERT config: {e}"),
        })?;
        let c = &config;
        if c.hidden_size == 0
            || c.num_attention_heads == 0
            || c.hidden_size % c.num_attention_heads != 0
        {
            return Err(Error::Format {
                path: cfg_path,
                what: format!(
                    "hidden_size {} is not a positive multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            });
        }
        if c.hidden_act != "gelu" {
            return Err(Error::Format {
                path: cfg_path,
                what: format!("activation `{}` is not supported (gelu is)", c.hidden_act),
            });
        }
        let weights = Weights::open(&dir.join("model.safetensors"))?;
        let prefix = if weights.has("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut model = BertModel {
            config,
            weights,
            prefix: prefix.into(),
            packed: Default::default(),
        };
        model.check()?;
        model.packed = model.pack_linears()?;
        Ok(model)
    }

    fn w(&self, name: &str, shape: &[usize]) -> Result<std::borrow::Cow<'_, [f32]>> {
        self.weights.get(&format!("{}{name}", self.prefix), shape)
    }

    /// Every tensor the forward pass reads, with its shape.
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let mut t = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![c.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![c.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![c.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            for (n, s) in [
                ("attention.self.query.weight", vec![h, h]),
                ("attention.self.query.bias", vec![h]),
                ("attention.self.key.weight", vec![h, h]),
                ("attention.self.key.bias", vec![h]),
                ("attention.self.value.weight", vec![h, h]),
                ("attention.self.value.bias", vec![h]),
                ("attention.output.dense.weight", vec![h, h]),
                ("attention.output.dense.bias", vec![h]),
                ("attention.output.LayerNorm.weight", vec![h]),
                ("attention.output.LayerNorm.bias", vec![h]),
                ("intermediate.dense.weight", vec![i, h]),
                ("intermediate.dense.bias", vec![i]),
                ("output.dense.weight", vec![h, i]),
                ("output.dense.bias", vec![h]),
                ("output.LayerNorm.weight", vec![h]),
                ("output.LayerNorm.bias", vec![h]),
            ] {
                t.push((format!("{p}{n}"), s));
            }
        }
        t
    }

    /// Packs every linear layer's weight once (see `attend::gemm`): the forward pass then
    /// never re-packs a weight, which for one short sentence costs as much as the product.
    fn pack_linears(&self) -> Result<std::collections::HashMap<String, PackedMatrix>> {
        let mut out = std::collections::HashMap::new();
        for (name, shape) in self.tensors() {
            if shape.len() == 2 && name.starts_with("encoder.") {
                let w = self.w(&name, &shape)?;
                out.insert(name, PackedMatrix::pack(&w, shape[0], shape[1])?);
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<()> {
        for (name, shape) in self.tensors() {
            self.w(&name, &shape)?;
        }
        Ok(())
    }

    /// Runs the encoder over `seqs` (token ids, each at most `max_position_embeddings` long).
    pub fn forward(&self, seqs: &[Vec<u32>], want_attention: bool) -> Result<BertOutput> {
        let c = &self.config;
        let (hd, nh) = (c.hidden_size, c.num_attention_heads);
        let dh = hd / nh;
        let total: usize = seqs.iter().map(Vec::len).sum();
        if let Some(s) = seqs.iter().find(|s| s.len() > c.max_position_embeddings) {
            return Err(Error::Invalid(format!(
                "a sequence of {} tokens exceeds the model's {} positions",
                s.len(),
                c.max_position_embeddings
            )));
        }
        if seqs.iter().any(Vec::is_empty) {
            return Err(Error::Invalid(
                "an empty token sequence cannot be encoded".into(),
            ));
        }
        // embeddings: word + position + token type 0, then layer norm
        let word = self.w("embeddings.word_embeddings.weight", &[c.vocab_size, hd])?;
        let pos = self.w(
            "embeddings.position_embeddings.weight",
            &[c.max_position_embeddings, hd],
        )?;
        let typ = self.w(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, hd],
        )?;
        let mut x = Vec::with_capacity(total * hd);
        for s in seqs {
            for (p, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= c.vocab_size {
                    return Err(Error::Invalid(format!(
                        "token id {id} is outside the vocabulary of {}",
                        c.vocab_size
                    )));
                }
                let (w, ps) = (&word[id * hd..][..hd], &pos[p * hd..][..hd]);
                x.extend((0..hd).map(|e| w[e] + ps[e] + typ[e]));
            }
        }
        let ln = |x: &mut [f32], name: &str| -> Result<()> {
            let g = self.w(&format!("{name}.weight"), &[hd])?;
            let b = self.w(&format!("{name}.bias"), &[hd])?;
            layer_norm(x, &g, &b, hd, c.layer_norm_eps);
            Ok(())
        };
        ln(&mut x, "embeddings.LayerNorm")?;

        let mut attention: Vec<Vec<f32>> = if want_attention {
            seqs.iter()
                .map(|s| Vec::with_capacity(c.num_hidden_layers * nh * s.len() * s.len()))
                .collect()
        } else {
            Vec::new()
        };
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let lin = |x: &[f32], name: &str, residual: Option<&[f32]>| -> Result<Vec<f32>> {
                let w = &self.packed[&format!("{p}{name}.weight")];
                let b = self.w(&format!("{p}{name}.bias"), &[w.n()])?;
                linear(x, w, Some(&b), residual, total)
            };
            // BertSelfAttention: Q, K, V as [tokens, heads, head_dim] — the kernel's [b, s, h, d]
            let q = lin(&x, "attention.self.query", None)?;
            let k = lin(&x, "attention.self.key", None)?;
            let v = lin(&x, "attention.self.value", None)?;
            let mut o = vec![0.0f32; total * hd];
            let mut chunks = Vec::with_capacity(seqs.len());
            let mut rest = o.as_mut_slice();
            let mut start = 0;
            for s in seqs {
                let (head, tail) = rest.split_at_mut(s.len() * hd);
                chunks.push((start, s.len(), head));
                start += s.len();
                rest = tail;
            }
            let probs: Vec<Result<Vec<f32>>> = chunks
                .into_par_iter()
                .map(|(start, n, out)| {
                    let params = AttnParams::new(Shape::new(1, nh, n, n, dh)).layout(Layout::Bshd);
                    let r = start * hd..(start + n) * hd;
                    let (qs, ks, vs) = (&q[r.clone()], &k[r.clone()], &v[r]);
                    let mut lse = vec![0.0f32; nh * n];
                    fused::forward_into(&params, qs, ks, vs, out, &mut lse)?;
                    if want_attention {
                        Ok(fused::probabilities_from_lse(&params, qs, ks, &lse, None)?)
                    } else {
                        Ok(Vec::new())
                    }
                })
                .collect();
            for (i, pr) in probs.into_iter().enumerate() {
                let pr = pr?;
                if want_attention {
                    attention[i].extend_from_slice(&pr);
                }
            }
            // BertSelfOutput: dense, residual, layer norm
            let mut a = lin(&o, "attention.output.dense", Some(&x))?;
            ln(&mut a, &format!("{p}attention.output.LayerNorm"))?;
            // BertIntermediate + BertOutput: GELU MLP, residual, layer norm
            let mid = {
                let w = &self.packed[&format!("{p}intermediate.dense.weight")];
                let b = self.w(&format!("{p}intermediate.dense.bias"), &[w.n()])?;
                linear_gelu(&a, w, Some(&b), total)?
            };
            let mut out = lin(&mid, "output.dense", Some(&a))?;
            ln(&mut out, &format!("{p}output.LayerNorm"))?;
            x = out;
        }
        Ok(BertOutput {
            hidden: x,
            attention,
        })
    }
}
