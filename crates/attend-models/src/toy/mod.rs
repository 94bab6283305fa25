//! Small decoder-only transformers that attend trains itself, on its own kernel.
//!
//! - [`model`]: the transformer (pre-norm, learned positions, causal attention on
//!   `attend::fused`, its backward on `attend::backward`);
//! - [`layers`]: linear, layer norm, GELU and softmax cross-entropy as forward/backward pairs;
//! - [`optim`]: AdamW, warm-up + cosine schedule, gradient clipping;
//! - [`vocab`]: byte- or word-level tokenizers;
//! - [`winograd`]: the built-in task in which an adjective decides what "it" refers to;
//! - [`train`]: the training loop, evaluation and checkpoints (safetensors + JSON).
//!
//! A step is deterministic for a seed: data come from a generator seeded by `(seed, step)`,
//! every sum runs in a fixed order, and the matrix products split work over rows and columns
//! only, so the thread count does not change the result either.

pub mod layers;
pub mod model;
pub mod optim;
pub mod train;
pub mod vocab;
pub mod winograd;

pub use model::{ToyConfig, ToyModel};
pub use train::{Checkpoint, TrainConfig, Trainer};
pub use vocab::Vocab;

/// A small seeded generator (SplitMix64): the same numbers for the same seed everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_F491_4F6C_DD1D)
    }

    /// A generator for step `step` of a run seeded with `seed`.
    pub fn for_step(seed: u64, step: u64) -> Rng {
        let mut r = Rng::new(seed);
        r.0 ^= step.wrapping_mul(0xD1B5_4A32_D192_ED03);
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Generates up to `max_tokens` tokens after `prompt` (as [`crate::generate::generate`] does
/// for Llama models), stopping at the vocabulary's end token: the prompt in one pass, then one
/// token at a time through a KV cache. Learned positions end at `ctx`: when the cache is full,
/// the last `ctx / 2` tokens are run again from position 0 and generation goes on from there.
/// With `capture`, each token carries the attention of the position that predicted it,
/// `[layer][head][key]` over every earlier token (0 for tokens no longer in the window).
pub fn generate(
    model: &ToyModel,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut crate::generate::Sampler,
    capture: bool,
    on_token: &mut dyn FnMut(&crate::generate::GenToken) -> bool,
) -> crate::Result<crate::generate::GenStats> {
    use crate::generate::{logprob, GenStats, GenToken};
    if prompt.is_empty() {
        return Err(crate::Error::Invalid("the prompt has no tokens".into()));
    }
    let c = &model.config;
    let lh = c.layers * c.heads;
    let eos = c.vocab.eos();
    let mut seq = prompt.to_vec();
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let mut cache = model.new_cache()?;
    let mut start = seq.len().saturating_sub(c.ctx);
    let (mut logits, mut att) = model.decode(&seq[start..], &mut cache, capture)?;
    stats.prompt_secs = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    for _ in 0..max_tokens {
        let id = sampler.sample(&logits);
        let attention = if capture {
            // the window's rows, placed at its positions in the whole text
            let keys = seq.len() - start;
            let mut rows = vec![0.0f32; lh * seq.len()];
            for (r, src) in att.chunks_exact(keys).enumerate().take(lh) {
                rows[r * seq.len() + start..][..keys].copy_from_slice(src);
            }
            rows
        } else {
            Vec::new()
        };
        let g = GenToken {
            id,
            logprob: logprob(&logits, id),
            attention,
        };
        stats.gen_tokens += 1;
        let go_on = on_token(&g);
        if Some(id) == eos {
            stats.stopped_at_eos = true;
            break;
        }
        if !go_on || stats.gen_tokens == max_tokens {
            break;
        }
        seq.push(id);
        (logits, att) = if cache.len() < c.ctx {
            model.decode(&[id], &mut cache, capture)?
        } else {
            start = seq.len() - (c.ctx / 2).max(1);
            cache.reset();
            model.decode(&seq[start..], &mut cache, capture)?
        };
    }
    stats.gen_secs = t1.elapsed().as_secs_f64();
    Ok(stats)
}

/// Models compiled into the binary: `toy-winograd`, trained by `attend train winograd` with
/// its defaults (see its `config.json`, `notes.made_with`).
pub mod embedded {
    use super::Checkpoint;

    /// The names of the embedded models.
    pub const NAMES: &[&str] = &["toy-winograd"];

    const WINOGRAD_CONFIG: &[u8] = include_bytes!("../../models/toy-winograd/config.json");
    const WINOGRAD_WEIGHTS: &[u8] = include_bytes!("../../models/toy-winograd/model.safetensors");

    /// An embedded model by name (`None` for other names).
    pub fn get(name: &str) -> Option<crate::Result<Checkpoint>> {
        match name {
            "toy-winograd" => Some(Checkpoint::from_bytes(
                WINOGRAD_CONFIG,
                WINOGRAD_WEIGHTS,
                None,
                std::path::Path::new("<embedded>/toy-winograd"),
            )),
            _ => None,
        }
    }
}
