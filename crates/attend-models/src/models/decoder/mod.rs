//! The one GGUF decoder: every decoder-only architecture attend reads is this code plus data
//! ([`DecoderConfig`], which an architecture's file in `models::arch` fills from the file's
//! metadata). Names follow transformers' decoders (`…DecoderLayer`, `…Attention`, `…MLP`).
//!
//! One block, for every architecture:
//!
//! ```text
//! h = norm(x)                                   attn_norm
//! q, k, v = h·W_q (+b), h·W_k (+b), h·W_v (+b)  attn_q/k/v, or one fused attn_qkv
//! q, k = rms_norm per head (q/k norms), RoPE    optional norms; pairs adjacent or halves,
//!                                               per-layer base, frequency factors
//! o = attention(q, k, v)                        causal, or a sliding window on local layers;
//!                                               GQA/MQA; soft-cap; on attend's fused kernel
//! x += post_norm?(o·W_o)                        post norm: Gemma's sandwich
//! h = norm(x)                                   ffn_norm
//! x += post_norm?(down(act(gate(h)) · up(h)))   SiLU or tanh-GELU; gate and up separate or
//!                                               fused; or a plain down(act(up(h)))
//! ```
//!
//! then the final norm, the output projection (tied to the embedding when the file has no
//! `output.weight`) and an optional final soft-cap. Embeddings may be scaled (Gemma: √width).
//!
//! Weights stay in the memory-mapped file in their stored types; every product is a quantised
//! weight row dotted with quantised activations ([`crate::quant`]), or with float32 ones when
//! [`Decoder::exact`] is set (what transformers computes on the dequantised file). Nothing is
//! dequantised ahead of time except the norms' and biases' few thousand `f32`s.
//!
//! Invariant: this module knows no architecture by name; `models::arch` maps each onto a
//! [`DecoderConfig`].

pub mod config;
pub mod effect;
pub mod gguf;

use std::ops::Range;

use attend::{AttnParams, KvCache, Layout, Mask, Shape};

pub use config::{Act, DecoderConfig, Defaults, FfnLayout, Norms};
use gguf::{activations, check_tokens, matrix, Dense, Linear, Weights};

use crate::formats::gguf::{GgufFile, TensorInfo};
use crate::models::causal::{AttnCapture, CausalLm, Context, Step};
use crate::nn::activations::{gelu_tanh, silu};
use crate::nn::norm::rms_norm;
use crate::nn::rope::{Rope, RopeTable};
use crate::quant::{Activation, QMatrix};
use crate::tokenize::gguf::{GgufTokenizer, SpmStyle};
use crate::tokenize::{TokenInfo, Tokenizer};
use crate::trace::Trace;
use crate::Result;
use attend_kernels::gemm::sgemm_strided;

/// One decoder layer's tensors.
struct DecoderLayer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Linear,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    post_ffn_norm: Option<Vec<f32>>,
}

/// A decoder-only causal language model on a memory-mapped GGUF file.
pub struct Decoder {
    /// Its hyper-parameters and layout.
    pub config: DecoderConfig,
    /// The file (metadata: tokenizer, chat template).
    pub file: GgufFile,
    /// The tokenizer stored in the file.
    pub tokenizer: GgufTokenizer,
    embed: TensorInfo,
    layers: Vec<DecoderLayer>,
    norm: Vec<f32>,
    output: TensorInfo,
    /// The output projection in `f32`, once exact mode has used it.
    output_dense: Dense,
    /// Multiply by unquantised `f32` activations (dequantising each weight row on the fly)
    /// instead of 8-bit ones: slow, and equal to the float32 reference implementations.
    pub exact: bool,
    /// Attend through the sliding window on local layers (true). Off, every layer sees the
    /// whole text: wrong for a windowed model, and there only to show what the window decides.
    pub windowed: bool,
    /// Set from another thread, stops the pass running now at its next layer with
    /// [`crate::Error::Interrupted`] (a server whose client went away); cleared by whoever
    /// starts the next run.
    pub interrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a forward pass returns.
pub struct Forward {
    /// Logits of the positions asked for, `[rows, vocab]`.
    pub logits: Vec<f32>,
    /// With [`AttnCapture::LastRow`]: `[layer][head][key]` flattened, keys = every position
    /// from 0 (0 where a local layer's window does not reach).
    pub attention: Vec<f32>,
    /// With [`AttnCapture::All`]: every row of every layer and head.
    pub rows: AllRows,
}

/// Every row of a forward pass, compact (what [`crate::Trace::from_spans`] takes): each
/// position's row only over the keys it can see.
#[derive(Clone, Debug, Default)]
pub struct AllRows {
    /// `[layer][query]`: the keys `lo..hi` (absolute positions) the query sees.
    pub spans: Vec<(usize, usize)>,
    /// `[layer][head][query][lo..hi]`.
    pub data: Vec<f32>,
    /// `[layer][head][key]`: `‖f_h(x_k)‖`, key `k`'s value vector through head `h`'s slice
    /// of the output projection (Kobayashi et al. 2020), from the weights the model ran.
    pub value_norms: Vec<f32>,
}

/// An intervention on a forward pass (what [`effect`] sweeps); the default changes nothing.
#[derive(Clone, Debug, Default)]
pub struct Edit {
    /// Knocked-out positions (strictly increasing, absolute): in [`Edit::layers`], no query
    /// after one of them — and at or after [`Edit::from`] — reads its key. A query still reads
    /// its own position and everything before it.
    pub knockout: Vec<usize>,
    /// The first query position the knockout applies to (0: every later position; the
    /// predicting positions only: Geva et al.'s variant).
    pub from: usize,
    /// The layers the knockout applies in (all when `None`).
    pub layers: Option<Range<usize>>,
    /// A head whose output is replaced before the output projection.
    pub head: Option<HeadEdit>,
    /// Local layers keep every position in the cache (nothing forgotten behind the window,
    /// which the mask still applies), so that the cache can be truncated back to any prefix.
    pub keep_cache: bool,
}

/// One head's output replaced at every position, before the output projection.
#[derive(Clone, Debug)]
pub struct HeadEdit {
    /// Its layer.
    pub layer: usize,
    /// Its query head.
    pub head: usize,
    /// What replaces it: zeros (`None`), or this `v_head_dim` vector (its mean over a text:
    /// mean ablation).
    pub value: Option<Vec<f32>>,
}

/// What a forward pass records for the interventions that follow it.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// `[layer]`: the residual stream entering the layer, `(n, dim)`.
    pub inputs: Vec<Vec<f32>>,
    /// `[layer][head][v_head_dim]`: each head's output before the output projection, averaged
    /// over the positions run.
    pub head_means: Vec<f32>,
}

/// What one pass through layers is asked for.
struct Pass<'a> {
    capture: AttnCapture,
    edit: &'a Edit,
    /// The knocked-out keys hidden from this pass's queries (a subset of `edit.knockout`).
    hidden: &'a [usize],
    record: Option<&'a mut Record>,
    /// Several sequences at once (the rows of each after the other, one cache each), each with
    /// its own head edit in place of `edit.head`; empty: one sequence.
    batch: &'a [HeadEdit],
}

impl Decoder {
    /// Loads the tensors `config` describes from `file` (each checked against its shape and
    /// the types attend multiplies by), then the file's tokenizer (a SentencePiece vocabulary
    /// read in `spm` style).
    pub fn new(file: GgufFile, config: DecoderConfig, spm: SpmStyle) -> Result<Decoder> {
        let c = &config;
        let w = Weights { file: &file };
        let (q_out, kv_out, v_out) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.n_kv_heads * c.v_head_dim,
        );
        let sandwich = c.norms == Norms::Sandwich;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |t: &str| format!("blk.{l}.{t}");
            let vector = |t: &str, n| w.vector(&p(t), n);
            // (in the order of the forward pass, so that a file's first bad tensor is named)
            let attn_norm = vector("attn_norm.weight", c.dim)?;
            let (q, k, v) = if c.fused_qkv {
                let mut parts = w.split_linear(&p("attn_qkv"), &[q_out, kv_out, v_out], c.dim)?;
                let v = parts.pop();
                let k = parts.pop();
                let q = parts.pop();
                match (q, k, v) {
                    (Some(q), Some(k), Some(v)) => (q, k, v),
                    _ => unreachable!("three parts asked for"),
                }
            } else {
                (
                    w.linear(&p("attn_q"), q_out, c.dim)?,
                    w.linear(&p("attn_k"), kv_out, c.dim)?,
                    w.linear(&p("attn_v"), v_out, c.dim)?,
                )
            };
            let (gate, up) = match c.ffn {
                FfnLayout::Gated => (
                    Some(w.linear(&p("ffn_gate"), c.ffn_dim, c.dim)?),
                    w.linear(&p("ffn_up"), c.ffn_dim, c.dim)?,
                ),
                FfnLayout::FusedGateUp => {
                    let mut parts = w.split_linear(&p("ffn_up"), &[c.ffn_dim, c.ffn_dim], c.dim)?;
                    let (Some(up), Some(gate)) = (parts.pop(), parts.pop()) else {
                        return Err(crate::Error::Invalid(format!(
                            "{}: the fused gate/up tensor did not split in two",
                            p("ffn_up")
                        )));
                    };
                    (Some(gate), up)
                }
                FfnLayout::Plain => (None, w.linear(&p("ffn_up"), c.ffn_dim, c.dim)?),
            };
            layers.push(DecoderLayer {
                attn_norm,
                q,
                k,
                v,
                q_norm: c
                    .qk_norm
                    .then(|| vector("attn_q_norm.weight", c.head_dim))
                    .transpose()?,
                k_norm: c
                    .qk_norm
                    .then(|| vector("attn_k_norm.weight", c.head_dim))
                    .transpose()?,
                o: w.linear(&p("attn_output"), c.dim, c.n_heads * c.v_head_dim)?,
                post_attn_norm: sandwich
                    .then(|| vector("post_attention_norm.weight", c.dim))
                    .transpose()?,
                ffn_norm: vector("ffn_norm.weight", c.dim)?,
                gate,
                up,
                down: w.linear(&p("ffn_down"), c.dim, c.ffn_dim)?,
                post_ffn_norm: sandwich
                    .then(|| vector("post_ffw_norm.weight", c.dim))
                    .transpose()?,
            });
        }
        let embed = w.matrix("token_embd.weight", c.vocab, c.dim)?;
        let output = if w.has("output.weight") {
            w.matrix("output.weight", c.vocab, c.dim)?
        } else {
            embed.clone()
        };
        let norm = w.vector("output_norm.weight", c.dim)?;
        let tokenizer = GgufTokenizer::from_gguf(&file.header, spm)?;
        Ok(Decoder {
            tokenizer,
            config,
            embed,
            layers,
            norm,
            output,
            output_dense: Dense::default(),
            file,
            exact: false,
            windowed: true,
            interrupt: Default::default(),
        })
    }

    /// The bytes of weights one token's pass streams: every matrix of the file but the token
    /// embedding, of which a token reads one row (and which the head reads whole when the
    /// file has no `output.weight`).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let matrices: usize = (self.file.header.tensors.iter())
            .filter(|t| t.dims.len() >= 2 && t.name != self.embed.name)
            .map(|t| t.len)
            .sum();
        let head = if self.output.name == self.embed.name {
            self.output.len
        } else {
            0
        };
        (matrices + head) as u64
    }

    fn mat(&self, t: &TensorInfo) -> Result<QMatrix<'_>> {
        matrix(&self.file, t)
    }

    fn acts(
        &self,
        x: &[f32],
        width: usize,
        at: impl FnOnce() -> String,
    ) -> Result<Vec<Activation>> {
        activations(self.exact, x, width, at)
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> Result<KvCache> {
        let c = &self.config;
        Ok(KvCache::new(
            c.n_layers,
            1,
            c.n_kv_heads,
            c.head_dim,
            c.v_head_dim,
        )?)
    }

    /// Whether layer `l` attends through the window (and its cache forgets behind it).
    pub fn is_local(&self, l: usize) -> bool {
        self.windowed && self.config.local[l]
    }

    /// The RoPE tables of positions `pos0..pos0 + n`: global, and local where the local
    /// layers have a base of their own.
    fn ropes(&self, pos0: usize, n: usize) -> (RopeTable, Option<RopeTable>) {
        let c = &self.config;
        let rope = |base: f32| {
            Rope {
                dims: c.rope_dims,
                base,
                pairs: c.rope_pairs,
                factors: c.rope_factors.clone(),
            }
            .table(pos0, n)
        };
        let local = (c.rope_local_base != c.rope_base && c.local.iter().any(|&l| l))
            .then(|| rope(c.rope_local_base));
        (rope(c.rope_base), local)
    }

    /// Runs `tokens` at positions `cache.len()..`, appending their keys and values to `cache`
    /// (local layers first forget what the window no longer sees). Returns the logits of the
    /// last position, or of every position with `all_logits`.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
        capture: AttnCapture,
    ) -> Result<Forward> {
        let pos0 = cache.len();
        let mut x = self.embed_tokens(tokens, pos0)?;
        let pass = Pass {
            capture,
            edit: &Edit::default(),
            hidden: &[],
            record: None,
            batch: &[],
        };
        let (attention, rows) =
            self.layers_pass(&mut x, 0, pos0, std::slice::from_mut(cache), pass)?;
        let n = tokens.len();
        let logits = self.logits(&x, if all_logits { n } else { 1 })?;
        Ok(Forward {
            logits,
            attention,
            rows,
        })
    }

    /// Runs `tokens` at positions `cache.len()..` under `edit`, recording into `record` when
    /// given; returns the logits of the last `logit_rows` positions, `[rows, vocab]`. A
    /// knockout splits the run where the set of hidden keys changes (after each knocked-out
    /// position, and at [`Edit::from`]), so that every call to the kernel hides one key list
    /// from all its queries.
    pub fn forward_edited(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logit_rows: usize,
        edit: &Edit,
        mut record: Option<&mut Record>,
    ) -> Result<Vec<f32>> {
        let pos0 = cache.len();
        let n = tokens.len();
        let mut cuts: Vec<usize> = edit
            .knockout
            .iter()
            .map(|&j| j + 1)
            .chain([edit.from])
            .filter(|&c| c > pos0 && c < pos0 + n)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let dim = self.config.dim;
        let mut x_all = Vec::with_capacity(n * dim);
        let mut start = pos0;
        for end in cuts.into_iter().chain([pos0 + n]) {
            let hidden: Vec<usize> = if start >= edit.from {
                edit.knockout
                    .iter()
                    .copied()
                    .filter(|&j| j < start)
                    .collect()
            } else {
                Vec::new()
            };
            let mut x = self.embed_tokens(&tokens[start - pos0..end - pos0], start)?;
            let pass = Pass {
                capture: AttnCapture::None,
                edit,
                hidden: &hidden,
                record: record.as_deref_mut(),
                batch: &[],
            };
            self.layers_pass(&mut x, 0, start, std::slice::from_mut(cache), pass)?;
            x_all.extend_from_slice(&x);
            start = end;
        }
        self.logits(&x_all, logit_rows.min(n))
    }

    /// Runs the residual stream `x` — `(n, dim)` at positions `0..n`, entering layer `layer`
    /// (as [`Record::inputs`] holds it) — through layers `layer..` under `edit`, with `cache`
    /// empty (it is reset); the logits of the last `logit_rows` positions. Layers before
    /// `layer` are not run: what an edit from `layer` on cannot change is not recomputed.
    pub fn forward_from(
        &self,
        mut x: Vec<f32>,
        layer: usize,
        cache: &mut KvCache,
        logit_rows: usize,
        edit: &Edit,
    ) -> Result<Vec<f32>> {
        let n = x.len() / self.config.dim;
        if x.len() != n * self.config.dim || n == 0 || layer >= self.config.n_layers {
            return Err(crate::Error::Invalid(format!(
                "a residual stream of {} floats entering layer {layer} does not fit this model \
                 ({} layers of width {})",
                x.len(),
                self.config.n_layers,
                self.config.dim
            )));
        }
        cache.reset();
        let pass = Pass {
            capture: AttnCapture::None,
            edit,
            hidden: &[],
            record: None,
            batch: &[],
        };
        self.layers_pass(&mut x, layer, 0, std::slice::from_mut(cache), pass)?;
        self.logits(&x, logit_rows.min(n))
    }

    /// [`Decoder::forward_from`] for several head edits at once: the residual stream `x`
    /// entering `layer` run once per edit of `heads`, all as one batch (each linear layer
    /// multiplies every sequence's rows together; each sequence attends within itself, over
    /// its own cache of `caches`, grown to one per edit and reset); the logits of each run's
    /// last `logit_rows` positions, `[edit][rows × vocab]`.
    pub fn forward_from_heads(
        &self,
        x: &[f32],
        layer: usize,
        caches: &mut Vec<KvCache>,
        logit_rows: usize,
        heads: &[HeadEdit],
    ) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let n = x.len() / c.dim;
        if x.len() != n * c.dim || n == 0 || layer >= c.n_layers {
            return Err(crate::Error::Invalid(format!(
                "a residual stream of {} floats entering layer {layer} does not fit this model \
                 ({} layers of width {})",
                x.len(),
                c.n_layers,
                c.dim
            )));
        }
        if heads.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = heads
            .iter()
            .find(|e| e.layer < layer || e.layer >= c.n_layers)
        {
            return Err(crate::Error::Invalid(format!(
                "head {} of layer {} is not in the layers {layer}..{} this run covers",
                e.head, e.layer, c.n_layers
            )));
        }
        while caches.len() < heads.len() {
            caches.push(self.new_cache()?);
        }
        let caches = &mut caches[..heads.len()];
        caches.iter_mut().for_each(KvCache::reset);
        let mut xs = Vec::with_capacity(x.len() * heads.len());
        for _ in heads {
            xs.extend_from_slice(x);
        }
        let pass = Pass {
            capture: AttnCapture::None,
            edit: &Edit::default(),
            hidden: &[],
            record: None,
            batch: heads,
        };
        self.layers_pass(&mut xs, layer, 0, caches, pass)?;
        // the last rows of every run, through the output projection together
        let rows = logit_rows.min(n);
        let mut last = Vec::with_capacity(heads.len() * rows * c.dim);
        for run in xs.chunks_exact(n * c.dim) {
            last.extend_from_slice(&run[(n - rows) * c.dim..]);
        }
        let logits = self.logits(&last, heads.len() * rows)?;
        Ok(logits
            .chunks_exact(rows * c.vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The embeddings of `tokens` at positions `pos0..` (× √width for Gemma, in float32 as
    /// transformers does), `(n, dim)`, the tokens and positions checked first.
    fn embed_tokens(&self, tokens: &[u32], pos0: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        check_tokens(tokens, pos0, c.context_length, c.vocab)?;
        let embed = self.mat(&self.embed)?;
        let mut x = vec![0.0f32; tokens.len() * c.dim]; // (n, dim)
        for (row, &t) in x.chunks_exact_mut(c.dim).zip(tokens) {
            embed.dequantize_row(t as usize, row)?;
            if c.embed_scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= c.embed_scale);
            }
        }
        Ok(x)
    }

    /// Layers `first..` over `x` (positions `pos0..`), in place; the attention captured.
    fn layers_pass(
        &self,
        x: &mut [f32],
        first: usize,
        pos0: usize,
        caches: &mut [KvCache],
        mut pass: Pass<'_>,
    ) -> Result<(Vec<f32>, AllRows)> {
        let c = &self.config;
        let n = x.len() / c.dim;
        let seqs = caches.len();
        if seqs == 0 {
            return Err(crate::Error::Invalid("a pass needs a cache".into()));
        }
        if seqs > 1
            && (pass.batch.len() != seqs
                || pass.record.is_some()
                || pass.capture != AttnCapture::None
                || !n.is_multiple_of(seqs))
        {
            return Err(crate::Error::Invalid(
                "a batch of sequences runs head edits only, one per sequence".into(),
            ));
        }
        let (global_rope, local_rope) = self.ropes(pos0, n / seqs);
        let mut attention = Vec::new();
        let mut all = AllRows::default();
        for (l, layer) in self.layers.iter().enumerate().skip(first) {
            if self.interrupt.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(crate::Error::Interrupted);
            }
            let rope = match &local_rope {
                Some(r) if c.local[l] => r,
                _ => &global_rope,
            };
            if let Some(r) = pass.record.as_deref_mut() {
                r.inputs.push(x.to_vec());
            }
            // x += [post_attention_norm](self_attn(input_layernorm(x)))
            let h = rms_norm(x, &layer.attn_norm, c.eps);
            let captured = Captured {
                what: pass.capture,
                last: &mut attention,
                all: &mut all,
            };
            let a = self
                .attention(layer, &h, rope, caches, l, captured, &mut pass)
                .map_err(|e| e.at(|| format!("layer {l}")))?;
            residual(x, &a, layer.post_attn_norm.as_deref(), c.eps);
            // x += [post_feedforward_norm](mlp(pre_feedforward_norm(x)))
            let h = rms_norm(x, &layer.ffn_norm, c.eps);
            let m = self.mlp(layer, &h, n, l)?;
            residual(x, &m, layer.post_ffn_norm.as_deref(), c.eps);
        }
        Ok((attention, all))
    }

    /// The logits of the last `rows` rows of the residual stream `x`: final norm, output
    /// projection, final soft-cap; `[rows, vocab]`.
    fn logits(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let dim = c.dim;
        let n = x.len() / dim;
        let h = rms_norm(&x[(n - rows.min(n)) * dim..], &self.norm, c.eps);
        let a = self.acts(&h, dim, || "the final norm".into())?;
        let mut logits = vec![0.0; a.len() * c.vocab]; // (rows, vocab)
        let out = self.mat(&self.output)?;
        if !self.output_dense.matmul(&out, &a, &mut logits)? {
            out.matmul(&a, &mut logits)?;
        }
        if let Some(cap) = c.final_softcap {
            logits
                .iter_mut()
                .for_each(|v| *v = cap * crate::nn::activations::tanh(*v / cap));
        }
        Ok(logits)
    }

    /// The attention of layer `l`: Q, K, V projections (with their biases), the per-head
    /// q/k norms, RoPE, K and V appended to layer `l` of the cache, causal attention over
    /// every cached position (through the window on a local layer, soft-capped where the
    /// model caps) on the fused kernel, the output projection. With
    /// [`AttnCapture::LastRow`], the last position's probabilities over every position (0
    /// where the window does not reach) are appended to `captured.last`; with
    /// [`AttnCapture::All`], every position's, over the keys it sees, to `captured.all`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &DecoderLayer,
        h: &[f32],
        rope: &RopeTable,
        caches: &mut [KvCache],
        l: usize,
        captured: Captured<'_>,
        pass: &mut Pass<'_>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = h.len() / c.dim; // (n, dim)
        let (hd, vd) = (c.head_dim, c.v_head_dim);
        let (q_w, kv_w, v_w) = (c.n_heads * hd, c.n_kv_heads * hd, c.n_kv_heads * vd);
        let a = self.acts(h, c.dim, || format!("layer {l}, attention input"))?;
        let mut q = vec![0.0; n * q_w]; // (n, heads, head_dim)
        let mut k = vec![0.0; n * kv_w]; // (n, kv_heads, head_dim)
        let mut v = vec![0.0; n * v_w]; // (n, kv_heads, v_head_dim)
        layer.q.matmul(&self.file, &a, &mut q)?;
        layer.k.matmul(&self.file, &a, &mut k)?;
        layer.v.matmul(&self.file, &a, &mut v)?;
        if let Some(w) = &layer.q_norm {
            q = rms_norm(&q, w, c.eps);
        }
        if let Some(w) = &layer.k_norm {
            k = rms_norm(&k, w, c.eps);
        }
        // each sequence of a batch at the same positions
        let total = n;
        let seqs = caches.len().max(1);
        let n = total / seqs;
        for (qs, ks) in q
            .chunks_exact_mut(n * q_w)
            .zip(k.chunks_exact_mut(n * kv_w))
        {
            rope.apply(qs, c.n_heads, hd);
            rope.apply(ks, c.n_kv_heads, hd);
        }
        let local = self.is_local(l);
        let mut o_all = vec![0.0; total * c.n_heads * vd]; // (n, heads, v_head_dim) per sequence
        for (s, cache) in caches.iter_mut().enumerate() {
            let (q, k, v) = (
                &q[s * n * q_w..(s + 1) * n * q_w],
                &k[s * n * kv_w..(s + 1) * n * kv_w],
                &v[s * n * v_w..(s + 1) * n * v_w],
            );
            let o = &mut o_all[s * n * c.n_heads * vd..(s + 1) * n * c.n_heads * vd];
            let lc = cache.layer_mut(l)?;
            let pos0 = lc.end();
            let band = if local {
                // the first new query sees back to `pos0 + 1 - window`; nothing before it is
                // needed again
                if !pass.edit.keep_cache {
                    lc.forget_before((pos0 + 1).saturating_sub(c.window));
                }
                Mask::sliding_window(c.window)
            } else {
                Mask::causal()
            };
            lc.append(k, v, n, Layout::Bshd)?;
            let keys = lc.len();
            // knocked-out keys, as indices of the live keys, where this layer knocks out
            let knocks = pass.edit.layers.as_ref().is_none_or(|r| r.contains(&l));
            let first_live = lc.first();
            let hidden: Vec<usize> = if knocks {
                pass.hidden
                    .iter()
                    .filter(|&&j| j >= first_live)
                    .map(|&j| j - first_live)
                    .collect()
            } else {
                Vec::new()
            };
            let mask = if hidden.is_empty() {
                band
            } else {
                band.with_hidden_keys(&hidden)
            };
            let params = |s_q| {
                let p = AttnParams::new(
                    Shape::new(1, c.n_heads, s_q, keys, hd)
                        .with_kv_heads(c.n_kv_heads)
                        .with_value_dim(vd),
                )
                .layout(Layout::Bshd)
                .mask(mask)
                .scale(c.scale);
                match c.attn_softcap {
                    Some(cap) => p.softcap(cap),
                    None => p,
                }
            };
            let mut lse = vec![0.0; c.n_heads * n]; // (heads, n)
            lc.attend_into(&params(n), q, o, &mut lse)?;
            if let Some(r) = pass.record.as_deref_mut() {
                // each head's output averaged over the positions (for mean ablation)
                let mut means = vec![0.0f64; c.n_heads * vd];
                for row in o.chunks_exact(c.n_heads * vd) {
                    means.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64);
                }
                r.head_means
                    .extend(means.into_iter().map(|m| (m / n as f64) as f32));
            }
            let head = match pass.batch.get(s) {
                Some(e) => Some(e),
                None => pass.edit.head.as_ref(),
            };
            if let Some(e) = head.filter(|e| e.layer == l) {
                if e.head >= c.n_heads || e.value.as_ref().is_some_and(|v| v.len() != vd) {
                    return Err(crate::Error::Invalid(format!(
                    "head {} of layer {l} cannot be ablated: the layer has {} heads of {vd} values",
                    e.head, c.n_heads
                )));
                }
                for row in o.chunks_exact_mut(c.n_heads * vd) {
                    let slot = &mut row[e.head * vd..(e.head + 1) * vd];
                    match &e.value {
                        Some(v) => slot.copy_from_slice(v),
                        None => slot.fill(0.0),
                    }
                }
            }
            match captured.what {
                AttnCapture::None => {}
                AttnCapture::LastRow => {
                    let last_lse: Vec<f32> = (0..c.n_heads).map(|h| lse[h * n + n - 1]).collect();
                    let live = lc.probabilities_from_lse(
                        &params(1),
                        &q[(n - 1) * q_w..],
                        &last_lse,
                        None,
                    )?;
                    // every position's column, the forgotten ones 0
                    let first = lc.first();
                    for row in live.chunks_exact(keys) {
                        captured.last.extend(std::iter::repeat_n(0.0, first));
                        captured.last.extend_from_slice(row);
                    }
                }
                AttnCapture::All => {
                    // every query's probabilities over the live keys, from the same log-sum-exp,
                    // kept only over the keys each query sees (its causal span, or its window)
                    let probs = lc.probabilities_from_lse(&params(n), q, &lse, None)?;
                    let (first, all) = (lc.first(), &mut *captured.all);
                    let spans: Vec<(usize, usize)> = (0..n)
                        .map(|i| {
                            let p = pos0 + i;
                            let lo = if local {
                                (p + 1).saturating_sub(c.window)
                            } else {
                                0
                            };
                            (lo.max(first), p + 1)
                        })
                        .collect();
                    for head in probs.chunks_exact(n * keys) {
                        for (row, &(lo, hi)) in head.chunks_exact(keys).zip(&spans) {
                            all.data.extend_from_slice(&row[lo - first..hi - first]);
                        }
                    }
                    all.spans.extend(spans);
                    all.value_norms.extend(self.value_norms(layer, v, n)?);
                }
            }
        }
        let (n, o) = (total, o_all);
        let mut out = vec![0.0; n * c.dim]; // (n, dim)
        let a = self.acts(&o, c.n_heads * vd, || {
            format!("layer {l}, attention output")
        })?;
        layer.o.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }

    /// `‖f_h(x_j)‖` for every query head `h` and token `j` of one layer, `[head][token]`: the
    /// value vector `v_j` of the head's key/value head through the head's slice of the output
    /// projection (dequantised: the weights the model ran), without the projection's bias.
    fn value_norms(&self, layer: &DecoderLayer, v: &[f32], n: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let (vd, width) = (c.v_head_dim, c.n_heads * c.v_head_dim);
        let o = matrix(&self.file, layer.o.info())?;
        let mut w = vec![0.0f32; c.dim * width]; // (dim, heads · v_head_dim)
        for (r, row) in w.chunks_exact_mut(width).enumerate() {
            o.dequantize_row(r, row)?;
        }
        let group = c.n_heads / c.n_kv_heads;
        let mut out = Vec::with_capacity(c.n_heads * n);
        let mut y = vec![0.0f32; n * c.dim]; // (n, dim)
        for h in 0..c.n_heads {
            let kv = h / group;
            // y[j][r] = Σ_d v[j][kv][d] · w[r][h·vd + d]
            sgemm_strided(
                (n, c.dim, vd),
                &v[kv * vd..],
                (c.n_kv_heads * vd, 1),
                &w[h * vd..],
                (1, width),
                &mut y,
                false,
            );
            out.extend(y.chunks_exact(c.dim).map(|r| {
                r.iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>()
                    .sqrt() as f32
            }));
        }
        Ok(out)
    }

    /// The attention of every layer × head × query × key of `tokens`, from position 0, and
    /// the last position's logits: one forward pass capturing every row.
    pub fn explain_tokens(&self, tokens: &[TokenInfo]) -> Result<(Trace, Vec<f32>)> {
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        let mut cache = self.new_cache()?;
        let f = self.forward(&ids, &mut cache, false, AttnCapture::All)?;
        let c = &self.config;
        let mut trace = Trace::from_spans(
            tokens.to_vec(),
            (c.n_layers, c.n_heads, c.n_kv_heads),
            true,
            f.rows.spans,
            f.rows.data,
        )?;
        trace.value_norms = f.rows.value_norms;
        Ok((trace, f.logits))
    }

    /// The MLP: `down(act(gate(h)) · up(h))`, or `down(act(up(h)))` without a gate.
    fn mlp(&self, layer: &DecoderLayer, h: &[f32], n: usize, l: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let a = self.acts(h, c.dim, || format!("layer {l}, MLP input"))?;
        let mut u = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
        layer.up.matmul(&self.file, &a, &mut u)?;
        let g = match &layer.gate {
            Some(gate) => {
                let mut g = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
                gate.matmul(&self.file, &a, &mut g)?;
                Some(g)
            }
            None => None,
        };
        // (each activation a function item of its own, so that the loop inlines it)
        match c.act {
            Act::Silu => activate(&mut u, g.as_deref(), silu),
            Act::GeluTanh => activate(&mut u, g.as_deref(), gelu_tanh),
        }
        let mut out = vec![0.0; n * c.dim]; // (n, dim)
        let a = self.acts(&u, c.ffn_dim, || format!("layer {l}, MLP hidden state"))?;
        layer.down.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }
}

/// Where a forward pass puts the attention it captures.
struct Captured<'a> {
    what: AttnCapture,
    last: &'a mut Vec<f32>,
    all: &'a mut AllRows,
}

/// `u = act(g) · u` with a gate, `u = act(u)` without.
fn activate(u: &mut [f32], gate: Option<&[f32]>, act: impl Fn(f32) -> f32) {
    match gate {
        Some(g) => u.iter_mut().zip(g).for_each(|(u, &g)| *u *= act(g)),
        None => u.iter_mut().for_each(|u| *u = act(*u)),
    }
}

/// `x += y`, or `x += rms_norm(y, post)` where the block has a post norm.
fn residual(x: &mut [f32], y: &[f32], post: Option<&[f32]>, eps: f32) {
    let normed;
    let y = match post {
        Some(w) => {
            normed = rms_norm(y, w, eps);
            &normed[..]
        }
        None => y,
    };
    for (xv, yv) in x.iter_mut().zip(y) {
        *xv += yv;
    }
}

impl CausalLm for Decoder {
    fn layers(&self) -> usize {
        self.config.n_layers
    }

    fn has_interventions(&self) -> bool {
        true
    }

    fn heads(&self) -> usize {
        self.config.n_heads
    }

    fn kv_heads(&self) -> usize {
        self.config.n_kv_heads
    }

    fn context(&self) -> Context {
        Context::Limit(self.config.context_length)
    }

    fn tokenizer(&self) -> &dyn Tokenizer {
        &self.tokenizer
    }

    fn is_end(&self, id: u32) -> bool {
        self.tokenizer.stop_ids.contains(&id)
    }

    fn weight_bytes_per_token(&self) -> Option<u64> {
        Some(Decoder::weight_bytes_per_token(self))
    }

    fn interrupt(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        Some(self.interrupt.clone())
    }

    fn chat(&self, user: &str) -> Option<Result<(String, Vec<TokenInfo>)>> {
        // a file with a template is an instruction-tuned model; a base model carries none
        self.tokenizer
            .chat_template
            .as_ref()
            .map(|_| self.tokenizer.encode_chat(user))
    }

    fn set_exact(&mut self, exact: bool) -> bool {
        self.exact = exact;
        true
    }

    fn new_cache(&self) -> Result<KvCache> {
        Decoder::new_cache(self)
    }

    fn explain(&self, tokens: &[TokenInfo]) -> Result<(Trace, Vec<f32>)> {
        self.explain_tokens(tokens)
    }

    fn effect(
        &self,
        prompt: &[TokenInfo],
        target: &[u32],
        spec: &crate::trace::effect::EffectSpec,
    ) -> Result<crate::trace::effect::Effect> {
        Decoder::effect(self, prompt, target, spec)
    }

    fn step(&self, tokens: &[u32], cache: &mut KvCache, capture: AttnCapture) -> Result<Step> {
        let f = self.forward(tokens, cache, false, capture)?;
        Ok(Step {
            logits: f.logits,
            attention: f.attention,
        })
    }
}
