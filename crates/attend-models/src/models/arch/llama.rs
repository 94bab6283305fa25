//! Llama (`llama`; also Mistral, whose files llama.cpp writes as `llama`, and SmolLM): the
//! decoder as [`DecoderConfig::read`] describes it — pre RMS norms, SwiGLU, GQA, RoPE on
//! adjacent pairs (llama.cpp's converter permutes the rows of `W_q` and `W_k` so that
//! transformers' `rotate_half` halves become adjacent pairs), Llama 3's frequency factors
//! (`rope_freqs.weight`), and a sliding window on every layer when the file sets one
//! (Mistral 7B v0.1).

use super::Arch;
use crate::models::decoder::gguf::Meta;
use crate::models::decoder::{DecoderConfig, Defaults};
use crate::tokenize::gguf::SpmStyle;
use crate::Result;

/// transformers' `LlamaConfig` defaults where the file is silent (a context of 2048: the
/// longest a Llama-family file without the key was trained for).
const DEFAULTS: Defaults = Defaults {
    rope_base: 10_000.0,
    eps: 1e-5,
    context: 2048,
};

fn config(m: &Meta) -> Result<DecoderConfig> {
    DecoderConfig::read(m, DEFAULTS)
}

/// The Llama architecture.
pub const ARCH: Arch = Arch {
    names: &["llama", "mistral", "smollm"],
    config,
    spm: SpmStyle::Llama,
};
