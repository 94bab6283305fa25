//! Phi-3 (`phi3`): Q, K and V stored as one `attn_qkv` tensor and the MLP's gate and up
//! projections as one `ffn_up` of twice the width (the gate's rows first), RoPE on halves,
//! a sliding window on every layer when the file sets one, and Phi-3's SentencePiece reading
//! (a `▁` before the text). LongRoPE files (`rope_factors_long`: Phi-3 128k, Phi-3.5) are
//! refused by name.

use super::Arch;
use crate::models::decoder::{DecoderConfig, Defaults, FfnLayout};
use crate::nn::rope::Pairs;
use crate::tokenize::gguf::SpmStyle;

/// The Phi-3 architecture.
pub const ARCH: Arch = Arch {
    names: &["phi3"],
    // transformers' `Phi3Config`
    defaults: Defaults {
        rope_base: 10_000.0,
        eps: 1e-5,
        context: 4096,
    },
    adapt: |_, c| {
        Ok(DecoderConfig {
            rope_pairs: Pairs::Halves,
            fused_qkv: true,
            ffn: FfnLayout::FusedGateUp,
            ..c
        })
    },
    spm: SpmStyle::Phi3,
};
