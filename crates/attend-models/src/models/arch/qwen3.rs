//! Qwen 3 (`qwen3`): Qwen 2's block without the projection biases and with RMS norms on each
//! head's query and key before RoPE (`attn_q_norm`, `attn_k_norm`); its head dim is
//! `attention.key_length` (128 on Qwen3-0.6B, whose width ÷ heads is 64).

use super::Arch;
use crate::models::decoder::gguf::Meta;
use crate::models::decoder::{DecoderConfig, Defaults};
use crate::nn::rope::Pairs;
use crate::tokenize::gguf::SpmStyle;
use crate::Result;

/// transformers' `Qwen3Config` defaults.
const DEFAULTS: Defaults = Defaults {
    rope_base: 10_000.0,
    eps: 1e-6,
    context: 32_768,
};

fn config(m: &Meta) -> Result<DecoderConfig> {
    let mut c = DecoderConfig::read(m, DEFAULTS)?;
    c.rope_pairs = Pairs::Halves;
    c.qk_norm = true;
    Ok(c)
}

/// The Qwen 3 architecture.
pub const ARCH: Arch = Arch {
    names: &["qwen3"],
    config,
    spm: SpmStyle::Llama,
};
