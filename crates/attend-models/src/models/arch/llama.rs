//! Llama (`llama`; also Mistral, whose files llama.cpp writes as `llama`, and SmolLM): the
//! decoder as [`DecoderConfig::read`] describes it — pre RMS norms, SwiGLU, GQA, RoPE on
//! adjacent pairs (llama.cpp's converter permutes the rows of `W_q` and `W_k` so that
//! transformers' `rotate_half` halves become adjacent pairs), Llama 3's frequency factors
//! (`rope_freqs.weight`), and a sliding window on every layer when the file sets one
//! (Mistral 7B v0.1).

use super::Arch;
use crate::models::decoder::Defaults;
use crate::tokenize::gguf::SpmStyle;

/// The Llama architecture: the shared reading as it is.
pub const ARCH: Arch = Arch {
    names: &["llama", "mistral", "smollm"],
    // transformers' `LlamaConfig`
    defaults: Defaults {
        rope_base: 10_000.0,
        eps: 1e-6,
        context: 2048,
    },
    adapt: |_, c| Ok(c),
    spm: SpmStyle::Llama,
};
