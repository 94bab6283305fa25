//! The BERT encoder (`BertModel` in transformers): embeddings, then layers of self-attention
//! on the fused kernel and a GELU MLP, each with a residual and a post-layer-norm.
//!
//! Sequences of different lengths are packed row after row — the linear layers see only real
//! tokens, no padding — and each sequence attends within itself.
//!
//! Every weight is resolved once, at load, into the structs below (named after transformers'
//! modules): linear weights packed for the GEMM, norms and biases copied, the embedding tables
//! borrowed from the memory map at each forward by their full names.

use std::path::Path;

use attend::{fused, AttnParams, Layout, Mask, Shape};
use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::formats::fields::Fields;
use crate::formats::safetensors::Weights;
use crate::nn::linear::{column_max, Linear};
use crate::nn::norm::layer_norm;

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

/// The largest width, vocabulary or position count a config may declare (the tensors must
/// then match it, which bounds everything allocated from it).
const MAX_DIM: usize = 1 << 24;

impl BertConfig {
    /// Checks every number against its range, the others and the tensors of `weights`, before
    /// anything is allocated from it; errors name `path` and the field.
    pub fn validate(&self, path: &Path, weights: &Weights) -> Result<()> {
        let f = Fields::of(path);
        f.count("hidden_size", self.hidden_size, 1..=MAX_DIM)?;
        f.count(
            "num_attention_heads",
            self.num_attention_heads,
            1..=self.hidden_size,
        )?;
        f.divides(
            "hidden_size",
            self.hidden_size,
            self.num_attention_heads,
            "num_attention_heads",
        )?;
        f.count("intermediate_size", self.intermediate_size, 1..=MAX_DIM)?;
        f.count(
            "max_position_embeddings",
            self.max_position_embeddings,
            1..=MAX_DIM,
        )?;
        f.count("vocab_size", self.vocab_size, 1..=MAX_DIM)?;
        f.count("type_vocab_size", self.type_vocab_size, 1..=MAX_DIM)?;
        f.real(
            "layer_norm_eps",
            self.layer_norm_eps as f64,
            0.0..=0.1,
            true,
        )?;
        if self.hidden_act != "gelu" {
            return Err(f.bad(
                "hidden_act",
                format_args!("is `{}`; only gelu is supported", self.hidden_act),
            ));
        }
        // the layers the weights hold: `[bert.]encoder.layer.N.…`
        let names = weights
            .names()
            .map(|n| n.strip_prefix("bert.").unwrap_or(n));
        let present = crate::formats::fields::numbered_blocks(names, "encoder.layer.");
        if present == 0 {
            return Err(Error::Format {
                path: weights.path().to_path_buf(),
                what: "holds no encoder layer (`encoder.layer.0.…`)".into(),
            });
        }
        if self.num_hidden_layers != present {
            return Err(f.bad(
                "num_hidden_layers",
                format_args!(
                    "is {}, but {} holds {present} layers",
                    self.num_hidden_layers,
                    weights.path().display()
                ),
            ));
        }
        Ok(())
    }
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

/// `BertEmbeddings`: word + position + token type 0, then layer norm.
struct BertEmbeddings {
    word: String,
    position: String,
    token_type: String,
    layer_norm: LayerNorm,
}

/// A `LayerNorm` module's parameters.
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &mut [f32]) {
        layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.weight.len(),
            self.eps,
            None,
        );
    }
}

/// `BertSelfAttention`: the Q, K, V projections (attention itself is `attend::fused`).
struct BertSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
}

/// `BertSelfOutput` and `BertOutput`: dense, residual, layer norm.
struct BertOutputBlock {
    dense: Linear,
    layer_norm: LayerNorm,
}

impl BertOutputBlock {
    fn forward(&self, x: &[f32], residual: &[f32], rows: usize) -> Result<Vec<f32>> {
        let mut y = self.dense.forward(x, rows, Some(residual))?;
        self.layer_norm.forward(&mut y);
        Ok(y)
    }
}

/// `BertLayer`.
struct BertLayer {
    attention: BertSelfAttention,
    attention_output: BertOutputBlock,
    /// `BertIntermediate`: dense + GELU.
    intermediate: Linear,
    output: BertOutputBlock,
}

/// A BERT model over memory-mapped safetensors weights.
pub struct BertModel {
    /// Its configuration.
    pub config: BertConfig,
    weights: Weights,
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
}

/// What a forward pass returns: the last hidden states of every sequence, packed
/// `[Σ len, hidden]`, and, when asked, each sequence's attention `[layer][head][q][k]`.
pub struct BertOutput {
    /// Hidden states, sequence after sequence.
    pub hidden: Vec<f32>,
    /// Attention probabilities per sequence (empty unless asked for).
    pub attention: Vec<Vec<f32>>,
    /// With the attention, each sequence's value norms `‖f_h(x_j)‖` `[layer][head][token]`
    /// (see [`crate::trace::aggregate::value_norms`]).
    pub value_norms: Vec<Vec<f32>>,
}

/// An intervention on one sequence of a batch ([`BertModel::forward_edited`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncoderEdit {
    /// Positions no query reads (strictly increasing): their keys are hidden from every
    /// query, their own included, through the kernel's mask.
    pub hidden: Vec<usize>,
    /// The layers the knockout applies in (all when `None`).
    pub layers: Option<std::ops::Range<usize>>,
    /// A head `(layer, head)` whose output is zeroed before the attention output projection.
    pub head: Option<(usize, usize)>,
}

impl EncoderEdit {
    fn hides_in(&self, layer: usize) -> bool {
        !self.hidden.is_empty() && self.layers.as_ref().is_none_or(|r| r.contains(&layer))
    }
}

/// Resolves the weights of one model, names under a prefix, shapes checked.
struct Loader<'a> {
    weights: &'a Weights,
    prefix: &'a str,
}

impl Loader<'_> {
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Ok(self.weights.get(&self.name(name), shape)?.into_owned())
    }

    /// Checks a tensor's shape and returns its full name (for a table read at each forward).
    fn table(&self, name: &str, shape: &[usize]) -> Result<String> {
        let full = self.name(name);
        self.weights.get(&full, shape)?;
        Ok(full)
    }

    /// `{name}.weight` (`[out, in]`, packed) and `{name}.bias`.
    fn linear(&self, name: &str, out: usize, inp: usize) -> Result<Linear> {
        let w = self
            .weights
            .get(&self.name(&format!("{name}.weight")), &[out, inp])?;
        let b = self.vec(&format!("{name}.bias"), &[out])?;
        Linear::new(&w, out, inp, Some(b))
    }

    /// [`Loader::linear`] at int8, smoothed by `act_max` (its input columns' maxima).
    fn linear_int8(&self, name: &str, out: usize, inp: usize, act_max: &[f32]) -> Result<Linear> {
        let w = self
            .weights
            .get(&self.name(&format!("{name}.weight")), &[out, inp])?;
        let b = self.vec(&format!("{name}.bias"), &[out])?;
        Linear::int8(&w, out, inp, Some(b), Some(act_max)).map_err(|e| e.at(|| self.name(name)))
    }

    fn layer_norm(&self, name: &str, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.vec(&format!("{name}.weight"), &[dim])?,
            bias: self.vec(&format!("{name}.bias"), &[dim])?,
            eps,
        })
    }

    fn output(&self, name: &str, out: usize, inp: usize, eps: f32) -> Result<BertOutputBlock> {
        Ok(BertOutputBlock {
            dense: self.linear(&format!("{name}.dense"), out, inp)?,
            layer_norm: self.layer_norm(&format!("{name}.LayerNorm"), out, eps)?,
        })
    }
}

/// Where a checkpoint's names start (`bert.` for a `BertModel` saved inside another).
fn prefix(weights: &Weights) -> &'static str {
    if weights.has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    }
}

/// The largest magnitude each input column of one layer's linear layers reaches, on the
/// sequences of a calibration pass ([`BertModel::quantise_int8`]).
#[derive(Clone, Debug, Default)]
struct InputMax {
    /// The layer's input (Q, K and V read it).
    x: Vec<f32>,
    /// The heads' outputs (the attention output projection reads them).
    o: Vec<f32>,
    /// After the attention block (the intermediate layer reads it).
    a: Vec<f32>,
    /// After GELU (the output layer reads it).
    mid: Vec<f32>,
}

impl BertModel {
    /// Loads `config.json` and `model.safetensors` from `dir`, checking every tensor's shape
    /// and packing every linear layer's weight once (see `attend_kernels::gemm`): the forward
    /// pass then never re-packs a weight, which for one short sentence costs as much as the
    /// product.
    pub fn load(dir: &Path) -> Result<BertModel> {
        let cfg_path = dir.join("config.json");
        let text = crate::formats::read_regular_text(&cfg_path)?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: cfg_path.clone(),
            what: format!("not a BERT config: {e}"),
        })?;
        let weights = Weights::open(&dir.join("model.safetensors"))?;
        config.validate(&cfg_path, &weights)?;
        let c = &config;
        let prefix = prefix(&weights);
        let ld = Loader {
            weights: &weights,
            prefix,
        };
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let embeddings = BertEmbeddings {
            word: ld.table("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: ld.table(
                "embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, h],
            )?,
            token_type: ld.table(
                "embeddings.token_type_embeddings.weight",
                &[c.type_vocab_size, h],
            )?,
            layer_norm: ld.layer_norm("embeddings.LayerNorm", h, eps)?,
        };
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}.");
                Ok(BertLayer {
                    attention: BertSelfAttention {
                        query: ld.linear(&format!("{p}attention.self.query"), h, h)?,
                        key: ld.linear(&format!("{p}attention.self.key"), h, h)?,
                        value: ld.linear(&format!("{p}attention.self.value"), h, h)?,
                    },
                    attention_output: ld.output(&format!("{p}attention.output"), h, h, eps)?,
                    intermediate: ld.linear(&format!("{p}intermediate.dense"), i, h)?,
                    output: ld.output(&format!("{p}output"), h, i, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BertModel {
            config,
            weights,
            embeddings,
            layers,
        })
    }

    /// Runs the encoder over `seqs` (token ids, each at most `max_position_embeddings` long).
    pub fn forward(&self, seqs: &[Vec<u32>], want_attention: bool) -> Result<BertOutput> {
        self.forward_with(seqs, want_attention, &[], None)
    }

    /// [`BertModel::forward`] with one [`EncoderEdit`] per sequence (no attention kept).
    pub fn forward_edited(&self, seqs: &[Vec<u32>], edits: &[EncoderEdit]) -> Result<BertOutput> {
        let c = &self.config;
        if edits.len() != seqs.len() {
            return Err(Error::Invalid(format!(
                "{} edits for {} sequences",
                edits.len(),
                seqs.len()
            )));
        }
        for (s, e) in seqs.iter().zip(edits) {
            let bad_keys = e.hidden.windows(2).any(|w| w[0] >= w[1])
                || e.hidden.last().is_some_and(|&j| j >= s.len())
                || e.hidden.len() >= s.len();
            let bad_layers = e
                .layers
                .as_ref()
                .is_some_and(|r| r.start >= r.end || r.end > c.num_hidden_layers);
            let bad_head = e
                .head
                .is_some_and(|(l, h)| l >= c.num_hidden_layers || h >= c.num_attention_heads);
            if bad_keys || bad_layers || bad_head {
                return Err(Error::Invalid(format!(
                    "the edit {e:?} does not fit a sequence of {} tokens and {} layers × {} heads \
                     (hidden positions strictly increasing, fewer than the tokens)",
                    s.len(),
                    c.num_hidden_layers,
                    c.num_attention_heads
                )));
            }
        }
        self.forward_with(seqs, false, edits, None)
    }

    /// Turns every linear layer to [`crate::Precision::Int8`]: a float32 pass over `calibration`
    /// (token-id sequences, a few varied texts) records the largest magnitude each layer's
    /// input columns reach, and each weight is quantised smoothed by them
    /// ([`Linear::int8`]). The weights are read again from the file.
    pub fn quantise_int8(&mut self, calibration: &[Vec<u32>]) -> Result<()> {
        let mut stats = vec![InputMax::default(); self.layers.len()];
        self.forward_with(calibration, false, &[], Some(&mut stats))?;
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let ld = Loader {
            weights: &self.weights,
            prefix: prefix(&self.weights),
        };
        // every layer made before any is replaced: an error leaves the model as it was
        let made = stats
            .iter()
            .enumerate()
            .map(|(l, m)| {
                let p = format!("encoder.layer.{l}.");
                let lin = |name: &str, out, inp, act: &[f32]| {
                    ld.linear_int8(&format!("{p}{name}"), out, inp, act)
                };
                Ok([
                    lin("attention.self.query", h, h, &m.x)?,
                    lin("attention.self.key", h, h, &m.x)?,
                    lin("attention.self.value", h, h, &m.x)?,
                    lin("attention.output.dense", h, h, &m.o)?,
                    lin("intermediate.dense", i, h, &m.a)?,
                    lin("output.dense", h, i, &m.mid)?,
                ])
            })
            .collect::<Result<Vec<_>>>()?;
        for (layer, [q, k, v, o, mid, out]) in self.layers.iter_mut().zip(made) {
            layer.attention.query = q;
            layer.attention.key = k;
            layer.attention.value = v;
            layer.attention_output.dense = o;
            layer.intermediate = mid;
            layer.output.dense = out;
        }
        Ok(())
    }

    fn forward_with(
        &self,
        seqs: &[Vec<u32>],
        want_attention: bool,
        edits: &[EncoderEdit],
        mut calibration: Option<&mut [InputMax]>,
    ) -> Result<BertOutput> {
        let c = &self.config;
        let (hd, nh) = (c.hidden_size, c.num_attention_heads);
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
        // BertEmbeddings: word + position + token type 0, then layer norm
        let e = &self.embeddings;
        let word = self.weights.get(&e.word, &[c.vocab_size, hd])?;
        let pos = self
            .weights
            .get(&e.position, &[c.max_position_embeddings, hd])?;
        let typ = self.weights.get(&e.token_type, &[c.type_vocab_size, hd])?;
        let mut x = Vec::with_capacity(total * hd); // (Σ len, hidden)
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
        e.layer_norm.forward(&mut x);

        let mut attention: Vec<Vec<f32>> = if want_attention {
            seqs.iter()
                .map(|s| Vec::with_capacity(c.num_hidden_layers * nh * s.len() * s.len()))
                .collect()
        } else {
            Vec::new()
        };
        let mut value_norms: Vec<Vec<f32>> = vec![Vec::new(); attention.len()];
        crate::nn::check_finite(&x, || "the embeddings".into())?;
        for (l, layer) in self.layers.iter().enumerate() {
            let mut stats = calibration.as_deref_mut().map(|s| &mut s[l]);
            if let Some(m) = stats.as_deref_mut() {
                column_max(&mut m.x, &x, hd);
            }
            let (mut o, v) = self
                .self_attention(&layer.attention, &x, seqs, &mut attention, edits, l)
                .map_err(|e| e.at(|| format!("layer {l}")))?;
            // a head ablated: its columns of `o` ([Σ len, heads, head_dim]) zeroed
            let mut start = 0;
            for (s, e) in seqs.iter().zip(edits) {
                if let Some((_, h)) = e.head.filter(|&(el, _)| el == l) {
                    let dh = hd / nh;
                    o[start * hd..(start + s.len()) * hd]
                        .chunks_exact_mut(hd)
                        .for_each(|row| row[h * dh..(h + 1) * dh].fill(0.0));
                }
                start += s.len();
            }
            if want_attention {
                self.value_norms(&layer.attention_output.dense, &v, seqs, &mut value_norms)?;
            }
            if let Some(m) = stats.as_deref_mut() {
                column_max(&mut m.o, &o, hd);
            }
            let a = layer.attention_output.forward(&o, &x, total)?;
            if let Some(m) = stats.as_deref_mut() {
                column_max(&mut m.a, &a, hd);
            }
            let mid = layer.intermediate.forward_gelu(&a, total)?;
            if let Some(m) = stats {
                column_max(&mut m.mid, &mid, c.intermediate_size);
            }
            x = layer.output.forward(&mid, &a, total)?;
            crate::nn::check_finite(&x, || format!("layer {l} output"))?;
        }
        Ok(BertOutput {
            hidden: x,
            attention,
            value_norms,
        })
    }

    /// Appends each sequence's `‖f_h(x_j)‖` for one layer: its values `v` through the
    /// attention output projection `dense`, without its bias, one head at a time.
    fn value_norms(
        &self,
        dense: &Linear,
        v: &[f32],
        seqs: &[Vec<u32>],
        out: &mut [Vec<f32>],
    ) -> Result<()> {
        let c = &self.config;
        let (hd, nh) = (c.hidden_size, c.num_attention_heads);
        let bias = dense.forward(&vec![0.0; hd], 1, None)?;
        let mut start = 0;
        for (s, norms) in seqs.iter().zip(out.iter_mut()) {
            let n = s.len();
            let vs = &v[start * hd..(start + n) * hd];
            norms.extend(crate::trace::aggregate::value_norms(
                vs,
                n,
                nh,
                hd / nh,
                |x| {
                    let mut y = dense.forward(x, n, None)?;
                    for row in y.chunks_exact_mut(hd) {
                        row.iter_mut().zip(&bias).for_each(|(y, b)| *y -= b);
                    }
                    Ok::<_, Error>(y)
                },
            )?);
            start += n;
        }
        Ok(())
    }

    /// `BertSelfAttention`: Q, K, V as `[tokens, heads, head_dim]` — the kernel's
    /// `[b, s, h, d]` — then each sequence attends within itself on the fused kernel; with
    /// `attention` non-empty, each sequence's probabilities (from the same call's
    /// log-sum-exp) are appended to its entry.
    fn self_attention(
        &self,
        sa: &BertSelfAttention,
        x: &[f32],
        seqs: &[Vec<u32>],
        attention: &mut [Vec<f32>],
        edits: &[EncoderEdit],
        layer: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = &self.config;
        let (hd, nh) = (c.hidden_size, c.num_attention_heads);
        let dh = hd / nh;
        let total: usize = seqs.iter().map(Vec::len).sum();
        let want_attention = !attention.is_empty();
        let q = sa.query.forward(x, total, None)?; // (Σ len, heads, head_dim)
        let k = sa.key.forward(x, total, None)?;
        let v = sa.value.forward(x, total, None)?;
        let mut o = vec![0.0f32; total * hd]; // (Σ len, heads, head_dim)
        let mut chunks = Vec::with_capacity(seqs.len());
        let mut rest = o.as_mut_slice();
        let mut start = 0;
        for (i, s) in seqs.iter().enumerate() {
            let (head, tail) = rest.split_at_mut(s.len() * hd);
            let hidden = edits
                .get(i)
                .filter(|e| e.hides_in(layer))
                .map(|e| e.hidden.as_slice());
            chunks.push((start, s.len(), head, hidden));
            start += s.len();
            rest = tail;
        }
        let probs: Vec<Result<Vec<f32>>> = chunks
            .into_par_iter()
            .map(|(start, n, out, hidden)| {
                let mut params = AttnParams::new(Shape::new(1, nh, n, n, dh)).layout(Layout::Bshd);
                if let Some(keys) = hidden {
                    params = params.mask(Mask::none().with_hidden_keys(keys));
                }
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
        Ok((o, v))
    }
}
