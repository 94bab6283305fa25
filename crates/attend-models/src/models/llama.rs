//! The Llama architecture from a GGUF file (SmolLM2 and the like): token embedding, RMSNorm,
//! rotary positions, grouped-query attention on attend's fused kernel with a KV cache, SwiGLU
//! MLP, tied output embedding when the file has no `output.weight`. Names follow transformers'
//! `LlamaForCausalLM` (`LlamaAttention`, `LlamaMLP`, `LlamaRMSNorm`).
//!
//! Weights stay in the memory-mapped file in their stored types; every matrix–vector product is
//! a quantised weight row dotted with quantised activations ([`crate::quant`]). Nothing is
//! dequantised ahead of time except the norms' few thousand `f32`s.
//!
//! RoPE pairs adjacent elements, as GGUF files store `W_q` and `W_k` (see `crate::nn::rope`).

use std::ops::RangeInclusive;
use std::path::Path;

use attend::{AttnParams, KvCache, Layout, Mask, Shape};
use rayon::prelude::*;

use crate::formats::fields::Fields;
use crate::formats::gguf::{GgufFile, TensorInfo};
use crate::generate::{AttnCapture, CausalLm, Context, Step};
use crate::nn::activations::silu_mul;
use crate::nn::norm::rms_norm;
use crate::nn::rope::{Pairs, Rope, RopeTable};
use crate::quant::{dequantize_row, Activation, QMatrix};
use crate::tokenize::gguf::{apply_chat_template, GgufTokenizer};
use crate::tokenize::Tokenizer;
use crate::{Error, Result};
use attend_kernels::tiled::TiledMatrix;
use attend_kernels::Kern;

/// Hyper-parameters read from the GGUF metadata (`{arch}.…` keys).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// `general.architecture`.
    pub arch: String,
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
    /// Head dim.
    pub head_dim: usize,
    /// Rotated dims per head (`rope.dimension_count`, default the head dim).
    pub rope_dims: usize,
    /// RoPE base frequency (`rope.freq_base`, default 10000).
    pub rope_base: f32,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab: usize,
}

/// One decoder layer's tensors.
struct LlamaDecoderLayer {
    attn_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A Llama-family causal language model on a memory-mapped GGUF file.
pub struct LlamaModel {
    /// Its hyper-parameters.
    pub config: LlamaConfig,
    /// The file (metadata: tokenizer, chat template).
    pub file: GgufFile,
    /// The tokenizer stored in the file.
    pub tokenizer: GgufTokenizer,
    embed: TensorInfo,
    layers: Vec<LlamaDecoderLayer>,
    norm: Vec<f32>,
    output: TensorInfo,
    /// Multiply by unquantised `f32` activations (dequantising each weight row on the fly)
    /// instead of 8-bit ones: slow, and equal to the float32 reference implementations.
    pub exact: bool,
}

/// What a forward pass returns.
pub struct Forward {
    /// Logits of the positions asked for, `[rows, vocab]`.
    pub logits: Vec<f32>,
    /// With [`AttnCapture::LastRow`]: `[layer][head][key]` flattened, keys = every stored
    /// position.
    pub attention: Vec<f32>,
}

/// The one `.gguf` file in `dir`.
pub fn single_gguf(dir: &Path) -> Result<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(crate::error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Invalid(format!(
            "{} holds no .gguf file",
            dir.display()
        ))),
        n => Err(Error::Invalid(format!(
            "{} holds {n} .gguf files; name one",
            dir.display()
        ))),
    }
}

/// The largest width, vocabulary or context a file may declare; the tensors must then match
/// it, which bounds everything allocated from it.
const MAX_DIM: usize = 1 << 24;

/// Reads `{arch}.…` metadata, each number checked before use (errors name the file and key).
pub(crate) struct Meta<'a> {
    pub(crate) file: &'a GgufFile,
    pub(crate) arch: &'a str,
}

impl Meta<'_> {
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }
    pub(crate) fn fields(&self) -> Fields<'_> {
        Fields::of(&self.file.path)
    }
    /// An integer in `range`; `default` when absent (`None`: required).
    pub(crate) fn count(
        &self,
        key: &str,
        default: Option<usize>,
        range: RangeInclusive<usize>,
    ) -> Result<usize> {
        let k = self.key(key);
        let v = match (self.file.header.get(&k), default) {
            (None, Some(d)) => d,
            (None, None) => return Err(self.fields().bad(&k, "is missing")),
            (Some(v), _) => {
                let n = v.as_u64().ok_or_else(|| {
                    self.fields()
                        .bad(&k, format_args!("is {v:?}, not an integer"))
                })?;
                usize::try_from(n).unwrap_or(usize::MAX)
            }
        };
        self.fields().count(&k, v, range)
    }
    /// A finite positive real in `range`; `default` when absent.
    pub(crate) fn real(&self, key: &str, default: f64, range: RangeInclusive<f64>) -> Result<f32> {
        let k = self.key(key);
        let v = match self.file.header.get(&k) {
            None => default,
            Some(v) => v.as_f64().ok_or_else(|| {
                self.fields()
                    .bad(&k, format_args!("is {v:?}, not a number"))
            })?,
        };
        Ok(self.fields().real(&k, v, range, true)? as f32)
    }
}

/// `general.architecture` of a GGUF file ("" when absent).
pub(crate) fn architecture(file: &GgufFile) -> String {
    file.header
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// The GGUF architectures [`LlamaModel`] reads.
pub const ARCHITECTURES: &[&str] = &["llama", "mistral", "granite", "smollm"];

/// Reads a file's tensors, each checked against the shape the model expects and the types
/// attend multiplies by; errors name the file and the tensor.
pub(crate) struct Weights<'a> {
    pub(crate) file: &'a GgufFile,
}

impl Weights<'_> {
    fn bad(&self, what: String) -> Error {
        Error::Format {
            path: self.file.path.clone(),
            what,
        }
    }

    /// Whether the file holds tensor `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.file.header.tensor(name).is_some()
    }

    /// The `rows × cols` matrix `name`.
    pub(crate) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<TensorInfo> {
        let path = &self.file.path;
        let t = self
            .file
            .header
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor {
                path: path.clone(),
                name: name.into(),
            })?;
        if t.matrix() != Some((rows, cols)) {
            return Err(Error::TensorShape {
                path: path.clone(),
                name: name.into(),
                expected: format!("{rows} × {cols}"),
                got: format!("{:?} (innermost first)", t.dims),
            });
        }
        // the type must be one attend multiplies by
        QMatrix::new(t.ty, rows, cols, self.file.data(t))
            .map_err(|e| self.bad(format!("`{name}`: {e}")))?;
        Ok(t.clone())
    }

    /// The `rows × cols` matrix `name` of a linear layer, repacked for prompt processing
    /// where the kernels gain by it ([`Linear`]).
    pub(crate) fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let info = self.matrix(name, rows, cols)?;
        let tiled = if Kern::best().tiles_natively() {
            matrix(self.file, &info)?
                .tiled()
                .map_err(|e| self.bad(format!("`{name}`: {e}")))?
        } else {
            None
        };
        Ok(Linear { info, tiled })
    }

    /// The `n`-vector `name`, as `f32`.
    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.matrix(name, 1, n)?;
        let mut out = vec![0.0; n];
        dequantize_row(t.ty, self.file.data(&t), &mut out)?;
        Ok(out)
    }
}

/// A linear layer's weights: the tensor in the file, and its repacked form when the kernels
/// have a SIMD build for it (AVX-512 VNNI), which products of many quantised activation
/// rows take (prompt processing; `attend_kernels::tiled`).
pub(crate) struct Linear {
    info: TensorInfo,
    tiled: Option<TiledMatrix>,
}

impl Linear {
    /// `out[t × rows + j] = row_j · xs[t]` (as [`QMatrix::matmul`]).
    pub(crate) fn matmul(&self, file: &GgufFile, xs: &[Activation], out: &mut [f32]) -> Result<()> {
        let m = matrix(file, &self.info)?;
        match &self.tiled {
            Some(t) if xs.len() >= TILED_MIN_ROWS => m.matmul_tiled(t, xs, out),
            _ => m.matmul(xs, out),
        }
    }
}

/// Activation rows from which a product takes the repacked weights (below, the stored
/// blocks: decoding reads fewer bytes from them).
const TILED_MIN_ROWS: usize = 2;

/// Tensor `t` of `file` as a matrix.
pub(crate) fn matrix<'a>(file: &'a GgufFile, t: &TensorInfo) -> Result<QMatrix<'a>> {
    let (rows, cols) = t
        .matrix()
        .ok_or_else(|| Error::Invalid(format!("`{}` is not a matrix", t.name)))?;
    QMatrix::new(t.ty, rows, cols, file.data(t))
}

/// The rows of `x` as activations of a product (quantised unless `exact`); a NaN or an
/// infinity is an error naming `at` (the layer and the input).
pub(crate) fn activations(
    exact: bool,
    x: &[f32],
    width: usize,
    at: impl FnOnce() -> String,
) -> Result<Vec<Activation>> {
    if exact {
        crate::nn::check_finite(x, at)?;
        return Ok(x.par_chunks(width).map(Activation::exact).collect());
    }
    // the quantiser refuses NaN / inf itself (one pass over x, not two); its refusal is
    // given the layer's name and the index in `x`
    x.par_chunks(width)
        .enumerate()
        .map(|(r, row)| Activation::new(row).map_err(|e| (r, e)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|(r, e)| match e {
            attend_kernels::Error::NonFinite { index, value, .. } => Error::NonFinite {
                at: at(),
                index: r * width + index,
                value,
            },
            other => other.into(),
        })
}

/// Checks the token ids and the context of a forward pass of `n` tokens from `pos0`.
pub(crate) fn check_tokens(
    tokens: &[u32],
    pos0: usize,
    context: usize,
    vocab: usize,
) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Invalid("no tokens to run".into()));
    }
    if pos0 + tokens.len() > context {
        return Err(Error::Invalid(format!(
            "{} positions exceed the model's context of {context}",
            pos0 + tokens.len(),
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "token id {t} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// A path, or the one `.gguf` file in a folder.
pub(crate) fn gguf_path(path: &Path) -> Result<std::path::PathBuf> {
    if path.is_dir() {
        single_gguf(path)
    } else {
        Ok(path.to_path_buf())
    }
}

impl LlamaModel {
    /// Opens a GGUF file (or the one `.gguf` file in a folder) and checks every tensor the
    /// forward pass reads.
    pub fn load(path: &Path) -> Result<LlamaModel> {
        LlamaModel::from_file(GgufFile::open(&gguf_path(path)?)?)
    }

    /// [`LlamaModel::load`] of an open file.
    pub fn from_file(file: GgufFile) -> Result<LlamaModel> {
        let path = file.path.clone();
        let arch = architecture(&file);
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(Error::Format {
                path,
                what: format!(
                    "architecture `{arch}` is not a llama-family one ({})",
                    ARCHITECTURES.join(", ")
                ),
            });
        }
        let m = Meta {
            file: &file,
            arch: &arch,
        };
        let f = m.fields();
        let dim = m.count("embedding_length", None, 1..=MAX_DIM)?;
        let n_heads = m.count("attention.head_count", None, 1..=dim)?;
        f.divides(&m.key("embedding_length"), dim, n_heads, "the head count")?;
        let n_kv_heads = m.count("attention.head_count_kv", Some(n_heads), 1..=n_heads)?;
        f.divides(
            &m.key("attention.head_count"),
            n_heads,
            n_kv_heads,
            "the key/value head count",
        )?;
        let head_dim = dim / n_heads;
        let rope_dims = m.count("rope.dimension_count", Some(head_dim), 2..=head_dim)?;
        f.divides(&m.key("rope.dimension_count"), rope_dims, 2, "2")?;
        let n_layers = m.count("block_count", None, 1..=1024)?;
        // the blocks the file holds must be the blocks it declares
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
        let config = LlamaConfig {
            n_layers,
            dim,
            ffn_dim: m.count("feed_forward_length", None, 1..=MAX_DIM)?,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dims,
            rope_base: m.real("rope.freq_base", 10000.0, 1.0..=1e12)?,
            eps: m.real("attention.layer_norm_rms_epsilon", 1e-5, 0.0..=0.1)?,
            context_length: m.count("context_length", Some(2048), 1..=MAX_DIM)?,
            vocab: m.count("vocab_size", Some(tokens), 1..=MAX_DIM)?,
            arch: arch.clone(),
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
        let kv = c.n_kv_heads * c.head_dim;
        let w = Weights { file: &file };
        let tensor = |name: &str, rows, cols| w.matrix(name, rows, cols);
        let linear = |name: &str, rows, cols| w.linear(name, rows, cols);
        let vector = |name: &str, n| w.vector(name, n);
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let p = format!("blk.{l}.");
            layers.push(LlamaDecoderLayer {
                attn_norm: vector(&format!("{p}attn_norm.weight"), c.dim)?,
                q: linear(&format!("{p}attn_q.weight"), c.dim, c.dim)?,
                k: linear(&format!("{p}attn_k.weight"), kv, c.dim)?,
                v: linear(&format!("{p}attn_v.weight"), kv, c.dim)?,
                o: linear(&format!("{p}attn_output.weight"), c.dim, c.dim)?,
                ffn_norm: vector(&format!("{p}ffn_norm.weight"), c.dim)?,
                gate: linear(&format!("{p}ffn_gate.weight"), c.ffn_dim, c.dim)?,
                up: linear(&format!("{p}ffn_up.weight"), c.ffn_dim, c.dim)?,
                down: linear(&format!("{p}ffn_down.weight"), c.dim, c.ffn_dim)?,
            });
        }
        let embed = tensor("token_embd.weight", c.vocab, c.dim)?;
        let output = if w.has("output.weight") {
            tensor("output.weight", c.vocab, c.dim)?
        } else {
            embed.clone()
        };
        let norm = vector("output_norm.weight", c.dim)?;
        let tokenizer = GgufTokenizer::from_gguf(&file.header)?;
        Ok(LlamaModel {
            tokenizer,
            config,
            embed,
            layers,
            norm,
            output,
            file,
            exact: false,
        })
    }

    fn mat(&self, t: &TensorInfo) -> Result<QMatrix<'_>> {
        matrix(&self.file, t)
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> Result<KvCache> {
        let c = &self.config;
        Ok(KvCache::new(
            c.n_layers,
            1,
            c.n_kv_heads,
            c.head_dim,
            c.head_dim,
        )?)
    }

    fn rope(&self) -> Rope {
        Rope {
            dims: self.config.rope_dims,
            base: self.config.rope_base,
            pairs: Pairs::Adjacent,
        }
    }

    fn acts(
        &self,
        x: &[f32],
        width: usize,
        at: impl FnOnce() -> String,
    ) -> Result<Vec<Activation>> {
        activations(self.exact, x, width, at)
    }

    /// Runs `tokens` at positions `cache.len()..`, appending their keys and values to `cache`.
    /// Returns the logits of the last position, or of every position with `all_logits`.
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
        let rope = self.rope().table(pos0, n);
        let dim = c.dim;
        // embed_tokens
        let embed = self.mat(&self.embed)?;
        let mut x = vec![0.0f32; n * dim]; // (n, dim)
        for (row, &t) in x.chunks_exact_mut(dim).zip(tokens) {
            embed.dequantize_row(t as usize, row)?;
        }
        let mut attention = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            // x += self_attn(input_layernorm(x)); x += mlp(post_attention_layernorm(x))
            let h = rms_norm(&x, &layer.attn_norm, c.eps);
            let a = self
                .attention(layer, &h, n, &rope, cache, l, capture, &mut attention)
                .map_err(|e| e.at(|| format!("layer {l}")))?;
            add(&mut x, &a);
            let h = rms_norm(&x, &layer.ffn_norm, c.eps);
            let m = self.mlp(layer, &h, n, l)?;
            add(&mut x, &m);
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

    /// `LlamaAttention`: Q, K, V projections, RoPE on Q and K, K and V appended to layer `l` of
    /// the cache, causal GQA over every cached position on the fused kernel, the output
    /// projection. With [`AttnCapture::LastRow`], the last position's probabilities (from the
    /// same call's log-sum-exp) are appended to `attention`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &LlamaDecoderLayer,
        h: &[f32],
        n: usize,
        rope: &RopeTable,
        cache: &mut KvCache,
        l: usize,
        capture: AttnCapture,
        attention: &mut Vec<f32>,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (dim, hd) = (c.dim, c.head_dim);
        let kv = c.n_kv_heads * hd;
        let a = self.acts(h, dim, || format!("layer {l}, attention input"))?;
        let mut q = vec![0.0; n * dim]; // (n, heads, head_dim)
        let mut k = vec![0.0; n * kv]; // (n, kv_heads, head_dim)
        let mut v = vec![0.0; n * kv]; // (n, kv_heads, head_dim)
        layer.q.matmul(&self.file, &a, &mut q)?;
        layer.k.matmul(&self.file, &a, &mut k)?;
        layer.v.matmul(&self.file, &a, &mut v)?;
        rope.apply(&mut q, c.n_heads, hd);
        rope.apply(&mut k, c.n_kv_heads, hd);
        let lc = cache.layer_mut(l)?;
        let pos0 = lc.len();
        lc.append(&k, &v, n, Layout::Bshd)?;
        let keys = pos0 + n;
        let p = AttnParams::new(Shape::new(1, c.n_heads, n, keys, hd).with_kv_heads(c.n_kv_heads))
            .layout(Layout::Bshd)
            .mask(Mask::causal());
        let mut o = vec![0.0; n * dim]; // (n, heads, head_dim)
        let mut lse = vec![0.0; c.n_heads * n]; // (heads, n)
        lc.attend_into(&p, &q, &mut o, &mut lse)?;
        if capture == AttnCapture::LastRow {
            let p1 =
                AttnParams::new(Shape::new(1, c.n_heads, 1, keys, hd).with_kv_heads(c.n_kv_heads))
                    .layout(Layout::Bshd)
                    .mask(Mask::causal());
            let last_lse: Vec<f32> = (0..c.n_heads).map(|h| lse[h * n + n - 1]).collect();
            attention.extend(lc.probabilities_from_lse(
                &p1,
                &q[(n - 1) * dim..],
                &last_lse,
                None,
            )?);
        }
        let mut out = vec![0.0; n * dim]; // (n, dim)
        let a = self.acts(&o, dim, || format!("layer {l}, attention output"))?;
        layer.o.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }

    /// `LlamaMLP`: `down(silu(gate(h)) · up(h))`.
    fn mlp(&self, layer: &LlamaDecoderLayer, h: &[f32], n: usize, l: usize) -> Result<Vec<f32>> {
        let c = &self.config;
        let a = self.acts(h, c.dim, || format!("layer {l}, MLP input"))?;
        let mut g = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
        let mut u = vec![0.0; n * c.ffn_dim]; // (n, ffn_dim)
        layer.gate.matmul(&self.file, &a, &mut g)?;
        layer.up.matmul(&self.file, &a, &mut u)?;
        silu_mul(&mut g, &u);
        let mut out = vec![0.0; n * c.dim]; // (n, dim)
        let a = self.acts(&g, c.ffn_dim, || format!("layer {l}, MLP hidden state"))?;
        layer.down.matmul(&self.file, &a, &mut out)?;
        Ok(out)
    }
}

/// `x += y`.
pub(crate) fn add(x: &mut [f32], y: &[f32]) {
    for (xv, yv) in x.iter_mut().zip(y) {
        *xv += yv;
    }
}

impl CausalLm for LlamaModel {
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
        Some(apply_chat_template(&self.tokenizer, user))
    }

    fn set_exact(&mut self, exact: bool) -> bool {
        self.exact = exact;
        true
    }

    fn new_cache(&self) -> Result<KvCache> {
        LlamaModel::new_cache(self)
    }

    fn step(&self, tokens: &[u32], cache: &mut KvCache, capture: AttnCapture) -> Result<Step> {
        let f = self.forward(tokens, cache, false, capture)?;
        Ok(Step {
            logits: f.logits,
            attention: f.attention,
        })
    }
}
