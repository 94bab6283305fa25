//! Qwen 2 and 2.5 (`qwen2`): Llama's block with biases on the Q, K and V projections (the
//! decoder adds any `….bias` the file holds), RoPE on halves (NeoX style: the converter keeps
//! transformers' row order), a byte-level BPE split by Qwen 2's pre-tokenizer
//! (`tokenizer.ggml.pre = qwen2`).

use super::Arch;
use crate::models::decoder::{DecoderConfig, Defaults};
use crate::nn::rope::Pairs;
use crate::tokenize::gguf::SpmStyle;

/// transformers' `Qwen2Config` (and `Qwen3Config`) defaults.
pub(super) const QWEN_DEFAULTS: Defaults = Defaults {
    rope_base: 10_000.0,
    eps: 1e-6,
    context: 32_768,
};

/// The Qwen 2 architecture.
pub const ARCH: Arch = Arch {
    names: &["qwen2"],
    defaults: QWEN_DEFAULTS,
    adapt: |_, c| {
        Ok(DecoderConfig {
            rope_pairs: Pairs::Halves,
            ..c
        })
    },
    spm: SpmStyle::Llama,
};
