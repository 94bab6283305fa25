//! Gemma 3 (`gemma3`; Gemma 3 270M): Gemma 2's layout ([`super::gemma2`]: sandwich norms,
//! GeGLU, √width embeddings, RoPE on halves) with
//!
//! - **local and global layers**: five of every six attend through a causal sliding window
//!   (`attention.sliding_window` keys, the query's own included; the pattern from
//!   `attention.sliding_window_pattern` when the file has it); every sixth sees the whole
//!   text. A local layer's KV cache forgets what its window can no longer see, so a long
//!   generation's cache grows with the window on five layers of six, not with the text;
//! - two RoPE bases: 10 000 on local layers (`rope.freq_base_swa`), the file's
//!   `rope.freq_base` on global ones;
//! - RMS norms on each head's query and key; no soft-caps.
//!
//! Keys the file may lack (the layer pattern, the local base, the query scalar) take Gemma 3's
//! defaults, as transformers does.

use super::Arch;
use crate::models::decoder::gguf::every_nth_global;
use crate::models::decoder::{DecoderConfig, Defaults};
use crate::tokenize::gguf::SpmStyle;

/// Gemma 3's layer pattern when the file does not give one: every sixth layer is global
/// (transformers' `sliding_window_pattern = 6`: layer `i` is global when `(i + 1) % 6 == 0`).
pub const DEFAULT_GLOBAL_EVERY: usize = 6;

/// Gemma 3's RoPE base on local layers when the file does not give one
/// (`rope_local_base_freq`).
pub const DEFAULT_LOCAL_ROPE_BASE: f64 = 10_000.0;

/// The Gemma 3 architecture.
pub const ARCH: Arch = Arch {
    names: &["gemma3"],
    // transformers' `Gemma3TextConfig`
    defaults: Defaults {
        rope_base: 1e6,
        eps: 1e-6,
        context: 131_072,
    },
    adapt: |m, c| {
        // the window is required: every Gemma 3 has local layers
        m.count("attention.sliding_window", None, 1..=usize::MAX)?;
        let pattern = m
            .layer_pattern("attention.sliding_window_pattern", c.n_layers)?
            .unwrap_or_else(|| every_nth_global(c.n_layers, DEFAULT_GLOBAL_EVERY));
        Ok(DecoderConfig {
            rope_local_base: m.real("rope.freq_base_swa", DEFAULT_LOCAL_ROPE_BASE, 1.0..=1e12)?,
            qk_norm: true,
            ..super::gemma2::gemma_layout(m, c.with_local_layers(pattern))?
        })
    },
    spm: SpmStyle::Gemma,
};
