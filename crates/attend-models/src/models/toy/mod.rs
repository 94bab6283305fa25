//! The small decoders attend trains itself: token + learned position embeddings, `layers`
//! pre-norm blocks (`x += Wo·attn(LN(x))`, `x += W2·gelu(W1·LN(x) + b1) + b2`), a final layer
//! norm and an untied output projection. Attention runs on `attend`'s fused kernel (causal,
//! `[b, s, h, d]`); the other layers are `crate::nn`'s. This is the inference side — the
//! forward that training also runs (keeping its activations), cached decoding, traces, the
//! embedded `toy-winograd`; the backward and the trainer are `crate::train`'s.
//!
//! Parameters live in one flat vector (so the optimiser, clipping and checkpoints see one
//! array), described by [`TensorSpec`]s in a fixed order. Checkpoints are read by [`file`].

pub mod file;

use std::ops::Range;

use attend::{AttnParams, KvCache, Layout, Mask, Shape};
use serde::{Deserialize, Serialize};

use crate::models::causal::{AttnCapture, CausalLm, Context, Step};
use crate::nn::activations::gelu_tanh_fwd;
use crate::nn::linear::linear_fwd;
use crate::nn::norm::layer_norm_fwd;
use crate::rng::Rng;
use crate::tokenize::vocab::Vocab;
use crate::tokenize::Tokenizer;
use crate::trace::Trace;
use crate::{Error, Result};

/// The shape of a toy model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyConfig {
    /// Width of the residual stream.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block (`dim` must divide by it).
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp: usize,
    /// Longest sequence (learned positions).
    pub ctx: usize,
    /// The tokenizer.
    pub vocab: Vocab,
}

impl ToyConfig {
    /// Checks the shape is one this code can build.
    pub fn validate(&self) -> Result<()> {
        let bad = |w: String| Err(Error::Invalid(w));
        if !(1..=16).contains(&self.layers) {
            return bad(format!("layers {} must be 1..=16", self.layers));
        }
        if self.heads == 0 || self.dim == 0 || !self.dim.is_multiple_of(self.heads) {
            return bad(format!(
                "dim {} must be a positive multiple of heads {}",
                self.dim, self.heads
            ));
        }
        if self.dim > 4096 || self.mlp == 0 || self.mlp > 16384 {
            return bad(format!(
                "dim {} (at most 4096) and mlp {} (1..=16384) are out of range",
                self.dim, self.mlp
            ));
        }
        if !(2..=8192).contains(&self.ctx) {
            return bad(format!("ctx {} must be 2..=8192", self.ctx));
        }
        if self.vocab.is_empty() {
            return bad("the vocabulary is empty".into());
        }
        Ok(())
    }

    /// Number of parameters of this shape.
    pub fn param_count(&self) -> usize {
        layout(self).2
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// One named tensor inside the flat parameter vector.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Its name in checkpoints (`layers.0.attn.wqkv`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where it starts in the flat vector.
    pub offset: usize,
    /// Whether AdamW decays it (matrices and embeddings; not norms or biases).
    pub decay: bool,
}

impl TensorSpec {
    /// Its range in the flat vector.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct LayerSlots {
    pub(crate) ln1_g: Range<usize>,
    pub(crate) ln1_b: Range<usize>,
    pub(crate) wqkv: Range<usize>,
    pub(crate) wo: Range<usize>,
    pub(crate) ln2_g: Range<usize>,
    pub(crate) ln2_b: Range<usize>,
    pub(crate) w1: Range<usize>,
    pub(crate) b1: Range<usize>,
    pub(crate) w2: Range<usize>,
    pub(crate) b2: Range<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct Slots {
    pub(crate) tok: Range<usize>,
    pub(crate) pos: Range<usize>,
    pub(crate) layers: Vec<LayerSlots>,
    pub(crate) lnf_g: Range<usize>,
    pub(crate) lnf_b: Range<usize>,
    pub(crate) head: Range<usize>,
}

fn layout(c: &ToyConfig) -> (Vec<TensorSpec>, Slots, usize) {
    let mut specs = Vec::new();
    let mut at = 0usize;
    let mut add = |name: String, shape: &[usize], decay: bool| {
        let n: usize = shape.iter().product();
        specs.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            offset: at,
            decay,
        });
        at += n;
        at - n..at
    };
    let (d, v, m) = (c.dim, c.vocab.len(), c.mlp);
    let tok = add("tok_emb".into(), &[v, d], true);
    let pos = add("pos_emb".into(), &[c.ctx, d], true);
    let layers = (0..c.layers)
        .map(|l| {
            let p = |s: &str| format!("layers.{l}.{s}");
            LayerSlots {
                ln1_g: add(p("ln1.weight"), &[d], false),
                ln1_b: add(p("ln1.bias"), &[d], false),
                wqkv: add(p("attn.wqkv"), &[3 * d, d], true),
                wo: add(p("attn.wo"), &[d, d], true),
                ln2_g: add(p("ln2.weight"), &[d], false),
                ln2_b: add(p("ln2.bias"), &[d], false),
                w1: add(p("mlp.w1"), &[m, d], true),
                b1: add(p("mlp.b1"), &[m], false),
                w2: add(p("mlp.w2"), &[d, m], true),
                b2: add(p("mlp.b2"), &[d], false),
            }
        })
        .collect();
    let lnf_g = add("ln_f.weight".into(), &[d], false);
    let lnf_b = add("ln_f.bias".into(), &[d], false);
    let head = add("head.weight".into(), &[v, d], true);
    let slots = Slots {
        tok,
        pos,
        layers,
        lnf_g,
        lnf_b,
        head,
    };
    (specs, slots, at)
}

/// `x[i] = tok[ids[i]] + pos[position of i]`, positions from `pos_of(i)`.
fn embed(
    p: &[f32],
    s: &Slots,
    ids: &[u32],
    d: usize,
    x: &mut [f32],
    pos_of: impl Fn(usize) -> usize,
) {
    for (i, (row, &id)) in x.chunks_exact_mut(d).zip(ids).enumerate() {
        let te = &p[s.tok.start + id as usize * d..][..d];
        let pe = &p[s.pos.start + pos_of(i) * d..][..d];
        for ((xv, a), b) in row.iter_mut().zip(te).zip(pe) {
            *xv = a + b;
        }
    }
}

/// Splits `[n × 3d]` rows of `q | k | v` into three `[n × d]` buffers.
fn split_qkv(qkv: &[f32], d: usize, q: &mut Vec<f32>, k: &mut Vec<f32>, v: &mut Vec<f32>) {
    q.clear();
    k.clear();
    v.clear();
    for row in qkv.chunks_exact(3 * d) {
        q.extend_from_slice(&row[..d]);
        k.extend_from_slice(&row[d..2 * d]);
        v.extend_from_slice(&row[2 * d..]);
    }
}

/// A small causal transformer and its parameters.
#[derive(Clone, Debug)]
pub struct ToyModel {
    /// Its shape and tokenizer.
    pub config: ToyConfig,
    /// Every parameter, laid out as [`ToyModel::specs`] says.
    pub params: Vec<f32>,
    specs: Vec<TensorSpec>,
    pub(crate) slots: Slots,
}

/// What one layer's forward keeps for the backward.
#[derive(Default)]
pub(crate) struct LayerActs {
    pub(crate) h1: Vec<f32>,
    pub(crate) xhat1: Vec<f32>,
    pub(crate) rstd1: Vec<f32>,
    pub(crate) q: Vec<f32>,
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    pub(crate) o: Vec<f32>,
    pub(crate) lse: Vec<f32>,
    pub(crate) h2: Vec<f32>,
    pub(crate) xhat2: Vec<f32>,
    pub(crate) rstd2: Vec<f32>,
    pub(crate) u: Vec<f32>,
    pub(crate) g: Vec<f32>,
}

/// A forward pass over `b` sequences of `t` tokens, with what the backward needs. Reused from
/// step to step ([`ToyModel::forward_into`]), its buffers keep their memory: fresh buffers of
/// this size every step cost a fifth of the time in page faults.
#[derive(Default)]
pub struct Activations {
    pub(crate) b: usize,
    pub(crate) t: usize,
    pub(crate) tokens: Vec<u32>,
    pub(crate) layers: Vec<LayerActs>,
    pub(crate) x: Vec<f32>,
    pub(crate) tmp: Vec<f32>,
    pub(crate) qkv: Vec<f32>,
    pub(crate) hf: Vec<f32>,
    pub(crate) xhatf: Vec<f32>,
    pub(crate) rstdf: Vec<f32>,
    /// Logits, `[b·t × vocab]`.
    pub logits: Vec<f32>,
}

/// `v` as `n` zeros, keeping its memory (for buffers that are added into).
pub(crate) fn zeros(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// `v` with `n` elements, contents unspecified (for buffers that are overwritten whole).
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) {
    if v.len() != n {
        zeros(v, n);
    }
}

impl ToyModel {
    /// A fresh model: weights ~ N(0, 0.02) (residual projections scaled by 1/√(2·layers), as
    /// GPT-2), norms at 1, biases at 0; the same for the same `seed`.
    pub fn new(config: ToyConfig, seed: u64) -> Result<ToyModel> {
        config.validate()?;
        let (specs, slots, n) = layout(&config);
        let mut params = vec![0.0f32; n];
        let mut rng = Rng::new(seed);
        let resid = 0.02 / (2.0 * config.layers as f32).sqrt();
        for s in &specs {
            let r = s.range();
            let std = if s.name.ends_with("attn.wo") || s.name.ends_with("mlp.w2") {
                resid
            } else {
                0.02
            };
            if s.name.ends_with(".weight") && s.shape.len() == 1 {
                params[r].fill(1.0);
            } else if s.shape.len() == 2 {
                params[r].iter_mut().for_each(|p| *p = rng.normal() * std);
            }
        }
        Ok(ToyModel {
            config,
            params,
            specs,
            slots,
        })
    }

    /// A model from a configuration and its parameters, which must have the layout's length.
    pub fn from_params(config: ToyConfig, params: Vec<f32>) -> Result<ToyModel> {
        config.validate()?;
        let (specs, slots, n) = layout(&config);
        if params.len() != n {
            return Err(Error::Invalid(format!(
                "{} parameters given, the configuration needs {n}",
                params.len()
            )));
        }
        Ok(ToyModel {
            config,
            params,
            specs,
            slots,
        })
    }

    /// The named tensors, in order.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    pub(crate) fn attn_params(&self, b: usize, t: usize) -> AttnParams<'static> {
        let c = &self.config;
        AttnParams::new(Shape::new(b, c.heads, t, t, c.head_dim()))
            .layout(Layout::Bshd)
            .mask(Mask::causal())
    }

    /// Forward over `b` sequences of `t` tokens each (`tokens` is `[b × t]`; a shorter
    /// sequence may be padded at its end with any token: causal attention keeps padding out of
    /// the earlier positions).
    pub fn forward(&self, tokens: &[u32], b: usize, t: usize) -> Result<Activations> {
        let mut acts = Activations::default();
        self.forward_into(tokens, b, t, &mut acts)?;
        Ok(acts)
    }

    /// [`ToyModel::forward`] into buffers kept from an earlier call.
    pub fn forward_into(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        acts: &mut Activations,
    ) -> Result<()> {
        self.forward_with(tokens, b, t, acts, None)
    }

    /// [`ToyModel::forward`] with head `(layer, head)` ablated: its output zeroed at every
    /// position before the output projection (what its attention contributes removed).
    pub fn forward_ablating(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        head: (usize, usize),
    ) -> Result<Activations> {
        let c = &self.config;
        if head.0 >= c.layers || head.1 >= c.heads {
            return Err(Error::Invalid(format!(
                "head {head:?} is not one of the model's {} layers × {} heads",
                c.layers, c.heads
            )));
        }
        let mut acts = Activations::default();
        self.forward_with(tokens, b, t, &mut acts, Some(head))?;
        Ok(acts)
    }

    fn forward_with(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        acts: &mut Activations,
        ablate: Option<(usize, usize)>,
    ) -> Result<()> {
        let c = &self.config;
        let (d, m, vocab) = (c.dim, c.mlp, c.vocab.len());
        let n = b.checked_mul(t).unwrap_or(0);
        if tokens.len() != n || n == 0 {
            return Err(Error::Invalid(format!(
                "{} tokens given for {b} sequences of {t}",
                tokens.len()
            )));
        }
        if t > c.ctx {
            return Err(Error::Invalid(format!(
                "{t} tokens exceed the model's context of {}",
                c.ctx
            )));
        }
        self.check_ids(tokens)?;
        let p = &self.params;
        let s = &self.slots;
        acts.b = b;
        acts.t = t;
        acts.tokens.clear();
        acts.tokens.extend_from_slice(tokens);
        acts.layers.resize_with(c.layers, LayerActs::default);
        let x = &mut acts.x;
        sized(x, n * d);
        embed(p, s, tokens, d, x, |i| i % t);
        let ap = self.attn_params(b, t);
        let tmp = &mut acts.tmp;
        sized(tmp, n * d);
        let qkv = &mut acts.qkv;
        sized(qkv, n * 3 * d);
        let hd = c.head_dim();
        for (l, (ls, a)) in s.layers.iter().zip(acts.layers.iter_mut()).enumerate() {
            for (v, len) in [
                (&mut a.h1, n * d),
                (&mut a.xhat1, n * d),
                (&mut a.rstd1, n),
                (&mut a.o, n * d),
                (&mut a.lse, b * c.heads * t),
                (&mut a.h2, n * d),
                (&mut a.xhat2, n * d),
                (&mut a.rstd2, n),
                (&mut a.u, n * m),
                (&mut a.g, n * m),
            ] {
                sized(v, len);
            }
            layer_norm_fwd(
                x,
                &p[ls.ln1_g.clone()],
                &p[ls.ln1_b.clone()],
                &mut a.h1,
                &mut a.xhat1,
                &mut a.rstd1,
                d,
            );
            linear_fwd(&a.h1, &p[ls.wqkv.clone()], None, qkv, n, d);
            split_qkv(qkv, d, &mut a.q, &mut a.k, &mut a.v);
            attend::fused::forward_into(&ap, &a.q, &a.k, &a.v, &mut a.o, &mut a.lse)?;
            if let Some((_, h)) = ablate.filter(|&(al, _)| al == l) {
                // [b·t, heads·hd] (BSHD): the head's columns of every row
                a.o.chunks_exact_mut(d)
                    .for_each(|row| row[h * hd..(h + 1) * hd].fill(0.0));
            }
            linear_fwd(&a.o, &p[ls.wo.clone()], None, tmp, n, d);
            x.iter_mut().zip(tmp.iter()).for_each(|(x, t)| *x += t);
            let ln2 = (&mut a.h2[..], &mut a.xhat2[..], &mut a.rstd2[..]);
            self.mlp_residual(ls, x, ln2, &mut a.u, &mut a.g, tmp, n);
        }
        sized(&mut acts.hf, n * d);
        sized(&mut acts.xhatf, n * d);
        sized(&mut acts.rstdf, n);
        layer_norm_fwd(
            x,
            &p[s.lnf_g.clone()],
            &p[s.lnf_b.clone()],
            &mut acts.hf,
            &mut acts.xhatf,
            &mut acts.rstdf,
            d,
        );
        sized(&mut acts.logits, n * vocab);
        linear_fwd(&acts.hf, &p[s.head.clone()], None, &mut acts.logits, n, d);
        Ok(())
    }

    /// Refuses a token id outside the vocabulary.
    fn check_ids(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.config.vocab.len();
        match tokens.iter().find(|&&id| id as usize >= vocab) {
            Some(&bad) => Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// A block's second half, `x += W2·gelu(W1·LN2(x) + b1) + b2` over `n` rows, leaving LN2's
    /// output and statistics in `ln2`, the MLP's input and output activations in `u` and `g`
    /// (what the backward reads), and `W2`'s output in `tmp`.
    #[allow(clippy::too_many_arguments)]
    fn mlp_residual(
        &self,
        ls: &LayerSlots,
        x: &mut [f32],
        ln2: (&mut [f32], &mut [f32], &mut [f32]),
        u: &mut [f32],
        g: &mut [f32],
        tmp: &mut [f32],
        n: usize,
    ) {
        let (p, d, m) = (&self.params, self.config.dim, self.config.mlp);
        let (h, xhat, rstd) = ln2;
        layer_norm_fwd(
            x,
            &p[ls.ln2_g.clone()],
            &p[ls.ln2_b.clone()],
            h,
            xhat,
            rstd,
            d,
        );
        linear_fwd(h, &p[ls.w1.clone()], Some(&p[ls.b1.clone()]), u, n, d);
        gelu_tanh_fwd(u, g);
        linear_fwd(g, &p[ls.w2.clone()], Some(&p[ls.b2.clone()]), tmp, n, m);
        x.iter_mut().zip(tmp.iter()).for_each(|(x, t)| *x += t);
    }

    /// An empty key/value cache for [`ToyModel::decode`].
    pub fn new_cache(&self) -> Result<attend::KvCache> {
        let c = &self.config;
        Ok(attend::KvCache::new(
            c.layers,
            1,
            c.heads,
            c.head_dim(),
            c.head_dim(),
        )?)
    }

    /// Runs `tokens` after the positions already in `cache` (they take positions
    /// `cache.len()..`, which must stay within the context), appending their keys and values.
    /// Returns the logits of the last new token and, with `capture`, the attention of that
    /// position over every stored one, `[layer][head][key]`.
    pub fn decode(
        &self,
        tokens: &[u32],
        cache: &mut attend::KvCache,
        capture: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = &self.config;
        let (d, m, vocab, hd) = (c.dim, c.mlp, c.vocab.len(), c.head_dim());
        let (n, start) = (tokens.len(), cache.len());
        if n == 0 || start + n > c.ctx || cache.n_layers() != c.layers {
            return Err(Error::Invalid(format!(
                "decode: {n} new tokens after {start} cached do not fit the context of {} (or the \
                 cache is not this model's)",
                c.ctx
            )));
        }
        self.check_ids(tokens)?;
        let p = &self.params;
        let s = &self.slots;
        let mut x = vec![0.0f32; n * d];
        embed(p, s, tokens, d, &mut x, |i| start + i);
        let (mut h, mut xhat, mut rstd) = (vec![0.0f32; n * d], vec![0.0f32; n * d], vec![0.0; n]);
        let (mut qkv, mut tmp) = (vec![0.0f32; n * 3 * d], vec![0.0f32; n * d]);
        let (mut u, mut g) = (vec![0.0f32; n * m], vec![0.0f32; n * m]);
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        let mut attention = Vec::new();
        for (l, ls) in s.layers.iter().enumerate() {
            let (g1, b1) = (&p[ls.ln1_g.clone()], &p[ls.ln1_b.clone()]);
            layer_norm_fwd(&x, g1, b1, &mut h, &mut xhat, &mut rstd, d);
            linear_fwd(&h, &p[ls.wqkv.clone()], None, &mut qkv, n, d);
            split_qkv(&qkv, d, &mut q, &mut k, &mut v);
            cache
                .layer_mut(l)?
                .append(&k, &v, n, Layout::Bshd)
                .map_err(|e| crate::Error::from(e).at(|| format!("layer {l}")))?;
            let ap = AttnParams::new(Shape::new(1, c.heads, n, start + n, hd))
                .layout(Layout::Bshd)
                .mask(Mask::causal());
            let lc = cache.layer(l)?;
            let o = lc
                .attend(&ap, &q)
                .map_err(|e| crate::Error::from(e).at(|| format!("layer {l}")))?;
            if capture {
                // [1, heads, n, keys]: the last query row of each head
                let probs = lc.probabilities_from_lse(&ap, &q, &o.lse, None)?;
                let keys = start + n;
                for hh in 0..c.heads {
                    attention.extend_from_slice(&probs[(hh * n + n - 1) * keys..][..keys]);
                }
            }
            linear_fwd(&o.out, &p[ls.wo.clone()], None, &mut tmp, n, d);
            x.iter_mut().zip(&tmp).for_each(|(x, t)| *x += t);
            let ln2 = (&mut h[..], &mut xhat[..], &mut rstd[..]);
            self.mlp_residual(ls, &mut x, ln2, &mut u, &mut g, &mut tmp, n);
            crate::nn::check_finite(&x, || format!("layer {l} output"))?;
        }
        let last = &x[(n - 1) * d..];
        let (mut hf, mut xh, mut rs) = (vec![0.0f32; d], vec![0.0f32; d], [0.0f32]);
        let (gf, bf) = (&p[s.lnf_g.clone()], &p[s.lnf_b.clone()]);
        layer_norm_fwd(last, gf, bf, &mut hf, &mut xh, &mut rs, d);
        let mut logits = vec![0.0f32; vocab];
        linear_fwd(&hf, &p[s.head.clone()], None, &mut logits, 1, d);
        Ok((logits, attention))
    }

    /// The logits of every position of one sequence, `[len × vocab]`.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(self.forward(tokens, 1, tokens.len())?.logits)
    }

    /// Attention probabilities of every layer and head over one sequence (with its tokens'
    /// display text), and the logits of its last position.
    pub fn trace(&self, tokens: &[crate::TokenInfo]) -> Result<(Trace, Vec<f32>)> {
        if tokens.is_empty() || tokens.len() > self.config.ctx {
            return Err(Error::TextLength {
                tokens: tokens.len(),
                max: self.config.ctx,
            });
        }
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        let n = ids.len();
        let acts = self.forward(&ids, 1, n)?;
        let ap = self.attn_params(1, n);
        let c = &self.config;
        let (d, hd) = (c.dim, c.head_dim());
        let mut attention = Vec::with_capacity(c.layers * c.heads * n * n);
        let mut value_norms = Vec::with_capacity(c.layers * c.heads * n);
        for (a, ls) in acts.layers.iter().zip(&self.slots.layers) {
            attention.extend(attend::fused::probabilities_from_lse(
                &ap, &a.q, &a.k, &a.lse, None,
            )?);
            let wo = &self.params[ls.wo.clone()];
            value_norms.extend(crate::trace::aggregate::value_norms::<Error>(
                &a.v,
                n,
                c.heads,
                hd,
                |x| {
                    let mut y = vec![0.0f32; n * d];
                    linear_fwd(x, wo, None, &mut y, n, d);
                    Ok(y)
                },
            )?);
        }
        let vocab = c.vocab.len();
        let last = acts.logits[(n - 1) * vocab..].to_vec();
        let mut trace = Trace::dense(
            tokens.to_vec(),
            (c.layers, c.heads, c.heads),
            true,
            attention,
        )?;
        trace.value_norms = value_norms;
        Ok((trace, last))
    }

    /// Probabilities `[layer][b][head][query][key]` and logits `[b·t × vocab]` of a batch.
    pub fn attention_of(&self, ids: &[u32], b: usize, t: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let acts = self.forward(ids, b, t)?;
        let ap = self.attn_params(b, t);
        let mut attention = Vec::with_capacity(self.config.layers * b * self.config.heads * t * t);
        for a in &acts.layers {
            attention.extend(attend::fused::probabilities_from_lse(
                &ap, &a.q, &a.k, &a.lse, None,
            )?);
        }
        Ok((attention, acts.logits))
    }
}

impl CausalLm for ToyModel {
    fn layers(&self) -> usize {
        self.config.layers
    }

    fn heads(&self) -> usize {
        self.config.heads
    }

    fn context(&self) -> Context {
        Context::Window(self.config.ctx)
    }

    fn tokenizer(&self) -> &dyn Tokenizer {
        &self.config.vocab
    }

    fn is_end(&self, id: u32) -> bool {
        self.config.vocab.eos() == Some(id)
    }

    fn new_cache(&self) -> Result<KvCache> {
        ToyModel::new_cache(self)
    }

    fn explain(&self, tokens: &[crate::TokenInfo]) -> Result<(Trace, Vec<f32>)> {
        self.trace(tokens)
    }

    fn step(&self, tokens: &[u32], cache: &mut KvCache, capture: AttnCapture) -> Result<Step> {
        let (logits, attention) = self.decode(tokens, cache, capture != AttnCapture::None)?;
        Ok(Step { logits, attention })
    }
}

/// A small model with weights large enough that every path carries gradient (for tests).
#[cfg(test)]
pub(crate) fn tiny(layers: usize) -> ToyModel {
    let config = ToyConfig {
        dim: 8,
        layers,
        heads: 2,
        mlp: 12,
        ctx: 6,
        vocab: Vocab::Words {
            words: (0..7).map(|i| format!("w{i}")).collect(),
        },
    };
    let mut m = ToyModel::new(config, 3).unwrap();
    // larger weights than at initialisation, so every path carries gradient
    let mut rng = Rng::new(11);
    m.params.iter_mut().for_each(|p| *p += 0.3 * rng.normal());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ablating a head (its output zeroed before the output projection) is the model whose
    /// output projection ignores that head's columns: checked against that edited model.
    #[test]
    fn an_ablated_head_is_its_columns_of_wo_zeroed() {
        let m = tiny(2);
        let (d, hd) = (m.config.dim, m.config.head_dim());
        let ids = [1, 2, 3, 4, 5];
        for (l, h) in [(0, 1), (1, 0)] {
            let cut = m.forward_ablating(&ids, 1, 5, (l, h)).unwrap().logits;
            let mut edited = m.clone();
            let wo = edited.slots.layers[l].wo.clone();
            for row in edited.params[wo].chunks_exact_mut(d) {
                row[h * hd..(h + 1) * hd].fill(0.0);
            }
            let want = edited.forward(&ids, 1, 5).unwrap().logits;
            for (a, b) in cut.iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} {b}");
            }
            assert!(cut != m.forward(&ids, 1, 5).unwrap().logits);
        }
        assert!(m.forward_ablating(&ids, 1, 5, (2, 0)).is_err());
    }

    /// Padding after a sequence changes nothing before it (causal attention).
    #[test]
    fn padding_does_not_leak_backwards() {
        let m = tiny(1);
        let a = m.logits(&[1, 2, 3]).unwrap();
        let b = m.forward(&[1, 2, 3, 6, 6], 1, 5).unwrap().logits;
        for (x, y) in a.iter().zip(&b[..a.len()]) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    /// Decoding through the cache, in pieces, gives the full forward's logits and attention.
    #[test]
    fn cached_decoding_is_the_full_forward() {
        let m = tiny(2);
        let ids = [1, 4, 2, 6, 0, 3];
        let full = m.logits(&ids).unwrap();
        let toks: Vec<crate::TokenInfo> = ids
            .iter()
            .map(|&id| crate::TokenInfo {
                id,
                text: String::new(),
                start: 0,
                end: 0,
            })
            .collect();
        let (trace, _) = m.trace(&toks).unwrap();
        let mut cache = m.new_cache().unwrap();
        let mut at = 0;
        for piece in [3, 1, 2] {
            let (logits, att) = m.decode(&ids[at..at + piece], &mut cache, true).unwrap();
            at += piece;
            for (a, b) in logits.iter().zip(&full[(at - 1) * 7..][..7]) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b} after {at}");
            }
            for l in 0..2 {
                for h in 0..2 {
                    let row = &trace.row(l, h, at - 1)[..at];
                    let got = &att[(l * 2 + h) * at..][..at];
                    for (a, b) in got.iter().zip(row) {
                        assert!((a - b).abs() < 1e-5);
                    }
                }
            }
        }
        // the context is full
        assert!(m.decode(&[1], &mut cache, false).is_err());
    }

    #[test]
    fn bad_requests_are_errors() {
        let m = tiny(1);
        assert!(m.logits(&[9]).is_err(), "id outside the vocabulary");
        assert!(m.logits(&[1; 7]).is_err(), "longer than the context");
        assert!(m.forward(&[1, 2, 3], 2, 2).is_err(), "wrong count");
        let mut c = m.config.clone();
        c.heads = 3;
        assert!(ToyModel::new(c, 0).is_err(), "dim not a multiple of heads");
        assert!(ToyModel::from_params(m.config.clone(), vec![0.0; 3]).is_err());
    }
}
