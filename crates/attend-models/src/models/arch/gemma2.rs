//! Gemma 2 (`gemma2`): sandwich norms (RMS norms before *and* after attention and MLP), a
//! GeGLU MLP (tanh GELU), embeddings × √width, RoPE on halves, a sliding window on every
//! other layer (layer `i` local when `i` is even), the attention logits soft-capped
//! (`attn_logit_softcapping`, 50) and the final logits too (`final_logit_softcapping`, 30),
//! scores scaled by `attention.scale` when the file gives it (else `head_dim^-½`, which is
//! `query_pre_attn_scalar^-½` for Gemma 2 2B and 9B). The file stores the norms' weights as
//! `1 + w` already (llama.cpp's converter adds the one), so they are plain RMS norms here.

use super::Arch;
use crate::models::decoder::gguf::Meta;
use crate::models::decoder::{Act, DecoderConfig, Defaults, Norms};
use crate::nn::rope::Pairs;
use crate::tokenize::gguf::SpmStyle;
use crate::Result;

/// The soft-caps when the file does not give them (transformers' defaults).
pub const DEFAULT_ATTN_SOFTCAP: f64 = 50.0;
/// See [`DEFAULT_ATTN_SOFTCAP`].
pub const DEFAULT_FINAL_SOFTCAP: f64 = 30.0;

/// The Gemma 2 architecture.
pub const ARCH: Arch = Arch {
    names: &["gemma2"],
    // transformers' `Gemma2Config`
    defaults: Defaults {
        rope_base: 10_000.0,
        eps: 1e-6,
        context: 8192,
    },
    adapt: |m, c| {
        let local = (0..c.n_layers).map(|i| i % 2 == 0).collect();
        Ok(DecoderConfig {
            attn_softcap: Some(m.real(
                "attn_logit_softcapping",
                DEFAULT_ATTN_SOFTCAP,
                1e-3..=1e6,
            )?),
            final_softcap: Some(m.real(
                "final_logit_softcapping",
                DEFAULT_FINAL_SOFTCAP,
                1e-3..=1e6,
            )?),
            ..gemma_layout(m, c.with_local_layers(local))?
        })
    },
    spm: SpmStyle::Gemma,
};

/// What Gemma 2 and 3 share: sandwich norms, GeGLU, √width embeddings, RoPE on halves, the
/// score scale from `attention.scale` when present.
pub(super) fn gemma_layout(m: &Meta, c: DecoderConfig) -> Result<DecoderConfig> {
    Ok(DecoderConfig {
        norms: Norms::Sandwich,
        act: Act::GeluTanh,
        embed_scale: (c.dim as f32).sqrt(),
        rope_pairs: Pairs::Halves,
        scale: m.real("attention.scale", c.scale as f64, 1e-6..=1e6)?,
        ..c
    })
}
