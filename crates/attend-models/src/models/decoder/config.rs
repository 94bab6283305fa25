//! What a decoder is, as data: [`DecoderConfig`], filled by an architecture's file from the
//! GGUF metadata ([`DecoderConfig::read`] reads the keys every architecture shares; the
//! architecture then sets what sets it apart).

use crate::formats::gguf::GgufFile;
use crate::nn::rope::Pairs;
use crate::Result;

use super::gguf::{Meta, Weights, MAX_DIM, MAX_LAYERS};

/// Where the norms sit around attention and the MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norms {
    /// `x += f(norm(x))` (Llama, Qwen, Phi-3).
    Pre,
    /// `x += post_norm(f(pre_norm(x)))` (Gemma 2 and 3: "sandwich" norms).
    Sandwich,
}

/// The MLP's activation: `down(act(gate(h)) · up(h))` when the file has a gate (or a fused
/// gate-and-up projection), `down(act(up(h)))` when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// SiLU (SwiGLU: Llama, Qwen, Phi-3).
    Silu,
    /// GELU, tanh form (GeGLU: Gemma).
    GeluTanh,
}

/// How the MLP's input projections are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnLayout {
    /// `ffn_gate` and `ffn_up`, separate.
    Gated,
    /// One `ffn_up` of twice the width: the gate's rows, then the up projection's (Phi-3).
    FusedGateUp,
    /// `ffn_up` alone, no gate (a plain MLP).
    Plain,
}

/// The defaults an architecture takes where its file is silent (transformers' defaults for
/// that architecture's config class).
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// `rope.freq_base`.
    pub rope_base: f64,
    /// `attention.layer_norm_rms_epsilon`.
    pub eps: f64,
    /// `context_length`.
    pub context: usize,
}

/// A decoder's hyper-parameters and layout, all read from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
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
    /// Query/key head dim (`attention.key_length`, else width ÷ heads).
    pub head_dim: usize,
    /// Value head dim (`attention.value_length`, else the key head dim).
    pub v_head_dim: usize,
    /// Rotated dims per head (`rope.dimension_count`, else the head dim).
    pub rope_dims: usize,
    /// RoPE base of the global layers (`rope.freq_base`).
    pub rope_base: f32,
    /// RoPE base of the local (sliding-window) layers; the global base when the architecture
    /// has no second one.
    pub rope_local_base: f32,
    /// Which elements of a head rotate together.
    pub rope_pairs: Pairs,
    /// What each RoPE frequency is divided by (`rope_freqs.weight`, or a linear scaling
    /// factor); empty: none.
    pub rope_factors: Vec<f32>,
    /// Keys a local layer's query sees, its own included (`attention.sliding_window`); 0 when
    /// no layer is local.
    pub window: usize,
    /// Whether each layer is local (attends through `window`) or global.
    pub local: Vec<bool>,
    /// Scale of the scores (`head_dim^-½` unless the architecture says otherwise).
    pub scale: f32,
    /// Attention logits soft-capped, `c · tanh(s / c)` (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Final logits soft-capped (Gemma 2).
    pub final_softcap: Option<f32>,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// What the token embeddings are multiplied by (√width for Gemma, else 1).
    pub embed_scale: f32,
    /// Where the norms sit.
    pub norms: Norms,
    /// The MLP's activation.
    pub act: Act,
    /// How the MLP's input projections are stored.
    pub ffn: FfnLayout,
    /// Q, K and V stored as one `attn_qkv` tensor (Phi-3).
    pub fused_qkv: bool,
    /// RMS norms on each head's query and key before RoPE (Qwen 3, Gemma 3).
    pub qk_norm: bool,
}

impl DecoderConfig {
    /// Reads the keys every architecture shares, checked: widths, heads (the head dims from
    /// `attention.key_length` / `value_length` when present), layers (the blocks the file
    /// holds must be the ones it declares), RoPE, epsilon, context, vocabulary, the sliding
    /// window (every layer local when the file sets one; architectures with a pattern set
    /// [`DecoderConfig::local`] themselves) and Llama 3's frequency factors. The layout is
    /// Llama's: pre norms, SwiGLU, adjacent RoPE pairs, no soft-caps.
    pub fn read(m: &Meta, d: Defaults) -> Result<DecoderConfig> {
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
        if !m.has("attention.key_length") {
            f.divides(&m.key("embedding_length"), dim, n_heads, "the head count")?;
        }
        let head_dim = m.count("attention.key_length", Some(dim / n_heads), 2..=MAX_DIM)?;
        f.divides(&m.key("attention.key_length"), head_dim, 2, "2")?;
        let v_head_dim = m.count("attention.value_length", Some(head_dim), 1..=MAX_DIM)?;
        let rope_dims = m.count("rope.dimension_count", Some(head_dim), 2..=head_dim)?;
        f.divides(&m.key("rope.dimension_count"), rope_dims, 2, "2")?;
        let n_layers = m.count("block_count", None, 1..=MAX_LAYERS)?;
        // the blocks the file holds must be the blocks it declares
        let present = crate::formats::fields::numbered_blocks(
            m.file.header.tensors.iter().map(|t| t.name.as_str()),
            "blk.",
        );
        if present != n_layers {
            return Err(f.bad(
                &m.key("block_count"),
                format_args!("is {n_layers}, but the file holds {present} blocks of tensors"),
            ));
        }
        let tokens = m
            .file
            .header
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map_or(0, |a| a.len());
        let vocab = m.count("vocab_size", Some(tokens), 1..=MAX_DIM)?;
        if tokens > vocab {
            return Err(f.bad(
                "tokenizer.ggml.tokens",
                format_args!("holds {tokens} tokens, more than the vocabulary of {vocab} rows"),
            ));
        }
        let window = m
            .optional_count("attention.sliding_window", 1..=MAX_DIM)?
            .unwrap_or(0);
        let rope_base = m.real("rope.freq_base", d.rope_base, 1.0..=1e12)?;
        Ok(DecoderConfig {
            arch: m.arch.to_string(),
            n_layers,
            dim,
            ffn_dim: m.count("feed_forward_length", None, 1..=MAX_DIM)?,
            n_heads,
            n_kv_heads,
            head_dim,
            v_head_dim,
            rope_dims,
            rope_base,
            rope_local_base: rope_base,
            rope_pairs: Pairs::Adjacent,
            rope_factors: rope_factors(m, rope_dims)?,
            window,
            local: vec![window > 0; n_layers],
            scale: 1.0 / (head_dim as f32).sqrt(),
            attn_softcap: None,
            final_softcap: None,
            eps: m.real("attention.layer_norm_rms_epsilon", d.eps, 0.0..=0.1)?,
            context_length: m.count("context_length", Some(d.context), 1..=MAX_DIM)?,
            vocab,
            embed_scale: 1.0,
            norms: Norms::Pre,
            act: Act::Silu,
            ffn: FfnLayout::Gated,
            fused_qkv: false,
            qk_norm: false,
        })
    }

    /// Sets the sliding window on the layers `local` marks (and none when the file set no
    /// window).
    pub fn with_local_layers(mut self, local: Vec<bool>) -> DecoderConfig {
        self.local = if self.window > 0 {
            local
        } else {
            vec![false; self.n_layers]
        };
        self
    }
}

/// The RoPE frequency factors: `rope_freqs.weight` (Llama 3's scaling, as llama.cpp's converter
/// writes it), or `rope.scaling.factor` for every frequency when `rope.scaling.type` is
/// `linear`; empty when the file has neither. Other scalings (YaRN, LongRoPE) are refused by
/// name rather than run without them.
fn rope_factors(m: &Meta, rope_dims: usize) -> Result<Vec<f32>> {
    let w = Weights { file: m.file };
    if w.has("rope_freqs.weight") {
        let factors = w.vector("rope_freqs.weight", rope_dims / 2)?;
        if let Some(bad) = factors.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(m.fields().bad(
                "rope_freqs.weight",
                format_args!("holds {bad}, not a positive factor"),
            ));
        }
        return Ok(factors);
    }
    for long in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if w.has(long) {
            return Err(unsupported(
                m.file,
                "LongRoPE (`rope_factors_long` / `rope_factors_short`, Phi-3 128k and Phi-3.5 \
                 files) is not implemented; the 4k-context files of the same models work",
            ));
        }
    }
    match m.string("rope.scaling.type")? {
        None | Some("none") => Ok(vec![]),
        Some("linear") => {
            let factor = m.real("rope.scaling.factor", 1.0, 1e-3..=1e6)?;
            Ok(vec![factor; rope_dims / 2])
        }
        Some(other) => Err(unsupported(
            m.file,
            &format!(
                "RoPE scaling `{other}` (`{}`) is not implemented (none, linear and Llama 3's \
                 frequency factors are)",
                m.key("rope.scaling.type")
            ),
        )),
    }
}

fn unsupported(file: &GgufFile, what: &str) -> crate::Error {
    crate::Error::Format {
        path: file.path.clone(),
        what: what.to_string(),
    }
}
