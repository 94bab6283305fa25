//! Qwen 3 (`qwen3`): Qwen 2's block without the projection biases and with RMS norms on each
//! head's query and key before RoPE (`attn_q_norm`, `attn_k_norm`); its head dim is
//! `attention.key_length` (128 on Qwen3-0.6B, whose width ÷ heads is 64).

use super::Arch;
use crate::models::decoder::DecoderConfig;
use crate::nn::rope::Pairs;
use crate::tokenize::gguf::SpmStyle;

/// The Qwen 3 architecture.
pub const ARCH: Arch = Arch {
    names: &["qwen3"],
    defaults: super::qwen2::QWEN_DEFAULTS,
    adapt: |_, c| {
        Ok(DecoderConfig {
            rope_pairs: Pairs::Halves,
            qk_norm: true,
            ..c
        })
    },
    spm: SpmStyle::Llama,
};
