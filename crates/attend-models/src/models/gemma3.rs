//! The Gemma 3 architecture from a GGUF file (`general.architecture = gemma3`; Gemma 3 270M):
//! names follow transformers' `Gemma3ForCausalLM` (`Gemma3Attention`, `Gemma3MLP`,
//! `Gemma3DecoderLayer`). What sets it apart from Llama:
//!
//! - **local and global layers**: five of every six layers attend through a causal sliding
//!   window (`attention.sliding_window` keys, the query's own included); every sixth sees the
//!   whole text. The window is an `attend::Mask` (a band, never a materialised mask), and a
//!   local layer's KV cache forgets what its window can no longer see, so a long generation's
//!   cache grows with the window on five layers of six, not with the text;
//! - two RoPE bases: 10 000 on local layers, the file's `rope.freq_base` on global ones, on
//!   the halves of each head (`rotate_half`; GGUF keeps Gemma's rows unpermuted);
//! - multi-query attention (4 query heads, 1 key/value head of 256 on the 270M), RMS norms on
//!   each head's query and key, the scale `query_pre_attn_scalar^-½`;
//! - norms before *and* after attention and MLP; a GeGLU MLP (tanh GELU); embeddings multiplied
//!   by √hidden; the output tied to the embedding.
//!
//! The GGUF file stores Gemma's norm weights already as `1 + w` (llama.cpp's converter adds
//! the one), so the norms are plain RMS norms here. Keys the file may lack (the layer pattern,
//! the local base, the query scalar) are read when present and otherwise take Gemma 3's
//! defaults, as transformers does.

use std::path::Path;

use attend::{AttnParams, KvCache, Layout, Mask, Shape};

use super::llama::{
    activations, add, check_tokens, gguf_path, matrix, Forward, Linear, Meta, Weights,
};
use crate::formats::gguf::{GgufFile, TensorInfo};
use crate::generate::{AttnCapture, CausalLm, Context, Step};
use crate::nn::activations::gelu_tanh;
use crate::nn::norm::rms_norm;
use crate::nn::rope::{Pairs, Rope, RopeTable};
use crate::quant::{Activation, QMatrix};
use crate::tokenize::gguf::GgufTokenizer;
use crate::tokenize::Tokenizer;
use crate::{Error, Result};

/// The architecture name this module reads.
pub const ARCHITECTURE: &str = "gemma3";

/// Gemma 3's layer pattern when the file does not give one: every sixth layer is global
/// (transformers' `sliding_window_pattern = 6`: layer `i` is global when `(i + 1) % 6 == 0`).
pub const DEFAULT_GLOBAL_EVERY: usize = 6;

/// Gemma 3's RoPE base on local layers when the file does not give one
/// (`rope_local_base_freq`).
pub const DEFAULT_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// The largest width, vocabulary or context a file may declare.
const MAX_DIM: usize = 1 << 24;

/// Hyper-parameters read from the GGUF metadata (`gemma3.…` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    /// Layers (`block_count`).
    pub n_layers: usize,
    /// Model width (`embedding_length`).
    pub dim: usize,
    /// MLP width (`feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Query/key head dim (`attention.key_length`).
    pub head_dim: usize,
    /// Value head dim (`attention.value_length`).
    pub v_head_dim: usize,
    /// RoPE base of the global layers (`rope.freq_base`).
    pub rope_base: f32,
    /// RoPE base of the local layers (`rope.freq_base_swa`, default 10 000).
    pub rope_local_base: f32,
    /// Keys a local layer's query sees, its own included (`attention.sliding_window`).
    pub window: usize,
    /// Whether each layer is local (sliding window) or global.
    pub local: Vec<bool>,
    /// Scale of the scores (`attention.scale`; default `head_dim^-½`, which is
    /// `query_pre_attn_scalar^-½` for every Gemma 3 but the 27B).
    pub scale: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

/// One decoder layer's tensors.
struct Gemma3DecoderLayer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    o: Linear,
    post_attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: Vec<f32>,
}

/// A Gemma 3 causal language model on a memory-mapped GGUF file.
pub struct Gemma3Model {
    /// Its hyper-parameters.
    pub config: Gemma3Config,
    /// The file.
    pub file: GgufFile,
    /// The tokenizer stored in the file.
    pub tokenizer: GgufTokenizer,
    embed: TensorInfo,
    layers: Vec<Gemma3DecoderLayer>,
    norm: Vec<f32>,
    output: TensorInfo,
    /// Multiply by unquantised `f32` activations (weights dequantised row by row) instead of
    /// 8-bit ones: slow, and what the float32 reference computes.
    pub exact: bool,
    /// Attend through the sliding window on local layers (true). Off, every layer sees the
    /// whole text: wrong for this model, and there only to show what the window decides.
    pub windowed: bool,
}

/// Which layers are local: `attention.sliding_window_pattern` when the file has it (an integer
/// `n`: every `n`-th layer is global; or one boolean per layer, true = local), else every
/// [`DEFAULT_GLOBAL_EVERY`]-th layer global.
fn layer_pattern(m: &Meta, n_layers: usize) -> Result<Vec<bool>> {
    let key = m.key("attention.sliding_window_pattern");
    let every = |n: usize| (0..n_layers).map(|i| (i + 1) % n != 0).collect();
    match m.file.header.get(&key) {
        None => Ok(every(DEFAULT_GLOBAL_EVERY)),
        Some(v) => {
            if let Some(a) = v.as_array() {
                let flags: Option<Vec<bool>> = a.iter().map(|x| x.as_bool()).collect();
                match flags {
                    Some(f) if f.len() == n_layers => Ok(f),
                    _ => Err(m.fields().bad(
                        &key,
                        format_args!("is not {n_layers} booleans (one per layer)"),
                    )),
                }
            } else {
                let n = m.count(
                    "attention.sliding_window_pattern",
                    None,
                    1..=n_layers.max(1),
                )?;
                Ok(every(n))
            }
        }
    }
}

impl Gemma3Model {
    /// Opens a GGUF file (or the one `.gguf` file in a folder) and checks every tensor the
    /// forward pass reads.
    pub fn load(path: &Path) -> Result<Gemma3Model> {
        Gemma3Model::from_file(GgufFile::open(&gguf_path(path)?)?)
    }

    /// [`Gemma3Model::load`] of an open file.
    pub fn from_file(file: GgufFile) -> Result<Gemma3Model> {
        let arch = super::llama::architecture(&file);
        if arch != ARCHITECTURE {
            return Err(Error::Format {
                path: file.path.clone(),
                what: format!("architecture `{arch}` is not `{ARCHITECTURE}`"),
            });
        }
        let m = Meta {
            file: &file,
            arch: &arch,
        };
        let f = m.fields();
        let dim = m.count("embedding_length", None, 1..=MAX_DIM)?;
        let n_heads = m.count("attention.head_count", None, 1..=MAX_DIM)?;
        let n_kv_heads = m.count("attention.head_count_kv", Some(n_heads), 1..=n_heads)?;
        f.divides(
            &m.key("attention.head_count"),
            n_heads,
            n_kv_heads,
            "the key/value head count",
        )?;
        let head_dim = m.count("attention.key_length", Some(dim / n_heads), 2..=MAX_DIM)?;
        f.divides(&m.key("attention.key_length"), head_dim, 2, "2")?;
        let v_head_dim = m.count("attention.value_length", Some(head_dim), 1..=MAX_DIM)?;
        let n_layers = m.count("block_count", None, 1..=1024)?;
        let present = crate::formats::fields::numbered_blocks(
            file.header.tensors.iter().map(|t| t.name.as_str()),
            "blk.",
        );
        if present != n_layers {
            return Err(f.bad(
                &m.key("block_count"),
                format_args!("is {n_layers}, but the file holds {present} blocks of tensors"),
            ));
        }
        let tokens = file
            .header
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map_or(0, |a| a.len());
        let context_length = m.count("context_length", Some(32768), 1..=MAX_DIM)?;
        let default_scale = 1.0 / (head_dim as f64).sqrt();
        let config = Gemma3Config {
            n_layers,
            dim,
            ffn_dim: m.count("feed_forward_length", None, 1..=MAX_DIM)?,
            n_heads,
            n_kv_heads,
            head_dim,
            v_head_dim,
            rope_base: m.real("rope.freq_base", 1e6, 1.0..=1e12)?,
            rope_local_base: m.real("rope.freq_base_swa", DEFAULT_LOCAL_ROPE_BASE, 1.0..=1e12)?,
            window: m.count("attention.sliding_window", None, 1..=MAX_DIM)?,
            local: layer_pattern(&m, n_layers)?,
            scale: m.real("attention.scale", default_scale, 1e-6..=1e6)?,
            eps: m.real("attention.layer_norm_rms_epsilon", 1e-6, 0.0..=0.1)?,
            context_length,
            vocab: m.count("vocab_size", Some(tokens), 1..=MAX_DIM)?,
        };
        let c = &config;
        if tokens > c.vocab {
            return Err(f.bad(
                "tokenizer.ggml.tokens",
                format_args!(
                    "holds {tokens} tokens, more than the vocabulary of {} rows",
                    c.vocab
                ),
            ));
        }
        let w = Weights { file: &file };
        let (q_out, kv, v_out) = (
            c.n_heads * c.head_dim,
            c.n_kv_heads * c.head_dim,
            c.n_kv_heads * c.v_head_dim,
        );
        let o_in = c.n_heads * c.v_head_dim;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = |t: &str| format!("blk.{l}.{t}.weight");
            layers.push(Gemma3DecoderLayer {
                attn_norm: w.vector(&p("attn_norm"), c.dim)?,
                q: w.linear(&p("attn_q"), q_out, c.dim)?,
                k: w.linear(&p("attn_k"), kv, c.dim)?,
                v: w.linear(&p("attn_v"), v_out, c.dim)?,
                q_norm: w.vector(&p("attn_q_norm"), c.head_dim)?,
                k_norm: w.vector(&p("attn_k_norm"), c.head_dim)?,
                o: w.linear(&p("attn_output"), c.dim, o_in)?,
                post_attn_norm: w.vector(&p("post_attention_norm"), c.dim)?,
                ffn_norm: w.vector(&p("ffn_norm"), c.dim)?,
                gate: w.linear(&p("ffn_gate"), c.ffn_dim, c.dim)?,
                up: w.linear(&p("ffn_up"), c.ffn_dim, c.dim)?,
                down: w.linear(&p("ffn_down"), c.dim, c.ffn_dim)?,
                post_ffn_norm: w.vector(&p("post_ffw_norm"), c.dim)?,
            });
        }
        let embed = w.matrix("token_embd.weight", c.vocab, c.dim)?;
        let output = if w.has("output.weight") {
            w.matrix("output.weight", c.vocab, c.dim)?
        } else {
            embed.clone()
        };
        let norm = w.vector("output_norm.weight", c.dim)?;
        let tokenizer = GgufTokenizer::from_gguf(&file.header)?;
        Ok(Gemma3Model {
            tokenizer,
            config,
            embed,
            layers,
            norm,
            output,
            file,
            exact: false,
            windowed: true,
        })
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
    fn is_local(&self, l: usize) -> bool {
        self.windowed && self.config.local[l]
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
        let c = &self.config;
        let n = tokens.len();
        let pos0 = cache.len();
        check_tokens(tokens, pos0, c.context_length, c.vocab)?;
        let rope = |base: f32| {
            Rope {
                dims: c.head_dim,
                base,
                pairs: Pairs::Halves,
            }
            .table(pos0, n)
        };
        let (local_rope, global_rope) = (rope(c.rope_local_base), rope(c.rope_base));
        let dim = c.dim;
        // embed_tokens, scaled by √hidden (Gemma3TextScaledWordEmbedding, in float32)
        let embed = self.mat(&self.embed)?;
        let scale = (dim as f32).sqrt();
        let mut x = vec![0.0f32; n * dim]; // (n, dim)
        for (row, &t) in x.chunks_exact_mut(dim).zip(tokens) {
            embed.dequantize_row(t as usize, row)?;
            row.iter_mut().for_each(|v| *v *= scale);
        }
        let mut attention = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            // x += post_attention_layernorm(self_attn(input_layernorm(x)))
            let h = rms_norm(&x, &layer.attn_norm, c.eps);
            let rope = if c.local[l] {
                &local_rope
            } else {
                &global_rope
            };
            let a = self
                .attention(layer, &h, n, rope, cache, l, capture, &mut attention)
                .map_err(|e| e.at(|| format!("layer {l}")))?;
            add(&mut x, &rms_norm(&a, &layer.post_attn_norm, c.eps));
            // x += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
            let h = rms_norm(&x, &layer.ffn_norm, c.eps);
            let m = self.mlp(layer, &h, n, l)?;
            add(&mut x, &rms_norm(&m, &layer.post_ffn_norm, c.eps));
        }
        let rows = if all_logits {
            &x[..]
        } else {
            &x[(n - 1) * dim..]
        };
        let h = rms_norm(rows, &self.norm, c.eps);
        let a = self.acts(&h, dim, || "the final norm".into())?;
        let mut logits = vec![0.0; a.len() * c.vocab]; // (rows, vocab)
        self.mat(&self.output)?.matmul(&a, &mut logits)?;
        Ok(Forward { logits, attention })
    }

    /// `Gemma3Attention`: Q, K, V projections, RMS norms on each head's query and key, RoPE,
    /// K and V appended to layer `l` of the cache, causal MQA on the fused kernel (through the
    /// window on a local layer), the output projection. With [`AttnCapture::LastRow`], the
    /// last position's probabilities over every position (0 where the window does not
    /// reach) are appended to `attention`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Gemma3DecoderLayer,
        h: &[f32],
        n: usize,
        rope: &RopeTable,
        cache: &mut KvCache,
        l: usize,
        capture: AttnCapture,
        attention: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (hd, vd) = (c.head_dim, c.v_head_dim);
        let (q_w, kv_w, v_w) = (c.n_heads * hd, c.n_kv_heads * hd, c.n_kv_heads * vd);
        let a = self.acts(h, c.dim, || format!("layer {l}, attention input"))?;
        let mut q = vec![0.0; n * q_w]; // (n, heads, head_dim)
        let mut k = vec![0.0; n * kv_w]; // (n, kv_heads, head_dim)
        let mut v = vec![0.0; n * v_w]; // (n, kv_heads, v_head_dim)
        layer.q.matmul(&self.file, &a, &mut q)?;
        layer.k.matmul(&self.file, &a, &mut k)?;
        layer.v.matmul(&self.file, &a, &mut v)?;
        let mut q = rms_norm(&q, &layer.q_norm, c.eps);
        let mut k = rms_norm(&k, &layer.k_norm, c.eps);
        rope.apply(&mut q, c.n_heads, hd);
        rope.apply(&mut k, c.n_kv_heads, hd);
        let local = self.is_local(l);
        let lc = cache.layer_mut(l)?;
        let pos0 = lc.end();
        let mask = if local {
            // the first new query sees back to `pos0 + 1 - window`; nothing before it is
            // needed again
            lc.forget_before((pos0 + 1).saturating_sub(c.window));
            Mask::sliding_window(c.window)
        } else {
            Mask::causal()
        };
        lc.append(&k, &v, n, Layout::Bshd)?;
        let keys = lc.len();
        let shape = |s_q| {
            Shape::new(1, c.n_heads, s_q, keys, hd)
                .with_kv_heads(c.n_kv_heads)
                .with_value_dim(vd)
        };
        let p = AttnParams::new(shape(n))
            .layout(Layout::Bshd)
            .mask(mask)
            .scale(c.scale);
        let mut o = vec![0.0; n * c.n_heads * vd]; // (n, heads, v_head_dim)
        let mut lse = vec![0.0; c.n_heads * n]; // (heads, n)
        lc.attend_into(&p, &q, &mut o, &mut lse)?;
        if capture == AttnCapture::LastRow {
            let p1 = AttnParams::new(shape(1))
                .layout(Layout::Bshd)
                .mask(mask)
                .scale(c.scale);
            let last_lse: Vec<f32> = (0..c.n_heads).map(|h| lse[h * n + n - 1]).collect();
            let live = lc.probabilities_from_lse(&p1, &q[(n - 1) * q_w..], &last_lse, None)?;
            // every position's column, the forgotten ones 0
            let (first, end) = (lc.first(), lc.end());
            for row in live.chunks_exact(keys) {
                attention.extend(std::iter::repeat_n(0.0, first));
                attention.extend_from_slice(row);
                debug_assert_eq!(first + row.len(), end);
            }
        }
        let mut out = vec![0.0; n * c.dim]; // (n, dim)
        let a = self.acts(&o, c.n_heads * vd, || {
            format!("layer {l}, attention output")
        })?;
        layer.o.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }

    /// `Gemma3MLP`: `down(gelu_tanh(gate(h)) · up(h))`.
    fn mlp(&self, layer: &Gemma3DecoderLayer, h: &[f32], n: usize, l: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let a = self.acts(h, c.dim, || format!("layer {l}, MLP input"))?;
        let mut g = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
        let mut u = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
        layer.gate.matmul(&self.file, &a, &mut g)?;
        layer.up.matmul(&self.file, &a, &mut u)?;
        for (g, u) in g.iter_mut().zip(&u) {
            *g = gelu_tanh(*g) * u;
        }
        let mut out = vec![0.0; n * c.dim]; // (n, dim)
        let a = self.acts(&g, c.ffn_dim, || format!("layer {l}, MLP hidden state"))?;
        layer.down.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }
}

impl CausalLm for Gemma3Model {
    fn layers(&self) -> usize {
        self.config.n_layers
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

    fn chat(&self, user: &str) -> Option<Result<String>> {
        // a file with a template is an instruction-tuned Gemma; the base model carries none
        self.file
            .header
            .get("tokenizer.chat_template")
            .map(|_| crate::tokenize::gguf::apply_chat_template(&self.tokenizer, user))
    }

    fn set_exact(&mut self, exact: bool) -> bool {
        self.exact = exact;
        true
    }

    fn new_cache(&self) -> Result<KvCache> {
        Gemma3Model::new_cache(self)
    }

    fn step(&self, tokens: &[u32], cache: &mut KvCache, capture: AttnCapture) -> Result<Step> {
        let f = self.forward(tokens, cache, false, capture)?;
        Ok(Step {
            logits: f.logits,
            attention: f.attention,
        })
    }
}
