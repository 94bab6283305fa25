//! Next-token generation, one loop for every causal model: the prompt in one batched causal
//! forward, then one token at a time through the KV cache; greedy or sampled (temperature,
//! top-k, top-p, seeded); stops at an end token or after `max_tokens`. A model is anything
//! that implements [`CausalLm`] (Llama-family GGUF files, the toy models attend trains).
//!
//! Invariant: this module knows no model; models implement [`CausalLm`] (`models::causal`,
//! re-exported here) and this loop drives any of them.

use std::time::Instant;

pub use crate::models::causal::{AttnCapture, CausalLm, Context, Step};
use crate::nn::logits::{argmax, logprob, ranked, softmax};
use crate::rng::Rng;
use crate::{Error, Result};

/// Refuses a prompt of `prompt` tokens plus `max_tokens` more on a model with a hard limit.
pub fn check_context(lm: &dyn CausalLm, prompt: usize, max_tokens: usize) -> Result<()> {
    if let Context::Limit(context) = lm.context() {
        if prompt.checked_add(max_tokens).is_none_or(|n| n > context) {
            return Err(Error::ContextExceeded {
                prompt,
                max_tokens,
                context,
            });
        }
    }
    Ok(())
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0: greedy (the most likely token); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (1: all).
    pub top_p: f32,
    /// Seed of the random draws.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A seeded sampler ([`Rng`] draws: the same seed, the same choices).
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler; an error for a negative or non-finite temperature or `top_p` outside (0, 1].
    pub fn new(cfg: SamplerConfig) -> Result<Sampler> {
        if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature {} must be 0 (greedy) or positive",
                cfg.temperature
            )));
        }
        if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top-p {} must be in (0, 1]",
                cfg.top_p
            )));
        }
        Ok(Sampler {
            rng: Rng::new(cfg.seed),
            cfg,
        })
    }

    /// Chooses a token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return argmax(logits) as u32;
        }
        let mut idx = ranked(logits);
        if self.cfg.top_k > 0 {
            idx.truncate(self.cfg.top_k);
        }
        let t = self.cfg.temperature;
        let scaled: Vec<f32> = idx.iter().map(|&i| logits[i as usize] / t).collect();
        let mut p: Vec<f64> = softmax(&scaled).into_iter().map(f64::from).collect();
        if self.cfg.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = p
                .iter()
                .position(|&v| {
                    acc += v;
                    acc >= self.cfg.top_p as f64
                })
                .map_or(p.len(), |i| i + 1);
            p.truncate(keep);
            idx.truncate(keep);
            let total: f64 = p.iter().sum();
            p.iter_mut().for_each(|v| *v /= total);
        }
        let r = self.rng.uniform_f64();
        let mut acc = 0.0;
        for (&i, &v) in idx.iter().zip(&p) {
            acc += v;
            if r < acc {
                return i;
            }
        }
        idx.last().copied().unwrap_or(0)
    }
}

/// One generated token.
#[derive(Clone, Debug)]
pub struct GenToken {
    /// Its id.
    pub id: u32,
    /// Its log-probability under the model (temperature 1, before top-k / top-p).
    pub logprob: f32,
    /// With attention capture: the attention of the position that predicted this token over
    /// every earlier position, `[layer][head][key]` flattened (keys: prompt + generated so far).
    pub attention: Vec<f32>,
}

/// Timings of a generation.
#[derive(Clone, Debug, Default)]
pub struct GenStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seconds spent on the prompt.
    pub prompt_secs: f64,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Seconds spent generating (after the prompt).
    pub gen_secs: f64,
    /// Whether it stopped at an end token.
    pub stopped_at_eos: bool,
}

/// Generates up to `max_tokens` tokens after `prompt`, calling `on_token` for each as it is
/// made (return `false` to stop). With `capture`, each token carries the attention of the
/// position that predicted it over every earlier position of the text (0 for positions a
/// [`Context::Window`] model no longer sees).
pub fn generate(
    lm: &dyn CausalLm,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    capture: bool,
    on_token: &mut dyn FnMut(&GenToken) -> bool,
) -> Result<GenStats> {
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    check_context(lm, prompt.len(), max_tokens)?;
    let window = match lm.context() {
        Context::Window(w) => Some(w),
        Context::Limit(_) => None,
    };
    let cap = if capture {
        AttnCapture::LastRow
    } else {
        AttnCapture::None
    };
    let lh = lm.layers() * lm.heads();
    let mut seq = prompt.to_vec();
    // a window model starts from the last `window` tokens of a longer prompt
    let mut start = window.map_or(0, |w| seq.len().saturating_sub(w));
    let mut cache = lm.new_cache()?;
    let t0 = Instant::now();
    let mut step = lm.step(&seq[start..], &mut cache, cap)?;
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        prompt_secs: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let t1 = Instant::now();
    for _ in 0..max_tokens {
        let id = sampler.sample(&step.logits);
        let attention = if !capture || start == 0 {
            std::mem::take(&mut step.attention)
        } else {
            // the window's rows, placed at its positions in the whole text
            let keys = seq.len() - start;
            let mut rows = vec![0.0f32; lh * seq.len()];
            for (r, src) in step.attention.chunks_exact(keys).enumerate().take(lh) {
                rows[r * seq.len() + start..][..keys].copy_from_slice(src);
            }
            rows
        };
        let g = GenToken {
            id,
            logprob: logprob(&step.logits, id),
            attention,
        };
        stats.gen_tokens += 1;
        let go_on = on_token(&g);
        if lm.is_end(id) {
            stats.stopped_at_eos = true;
            break;
        }
        if !go_on || stats.gen_tokens == max_tokens {
            break;
        }
        seq.push(id);
        step = match window {
            Some(w) if cache.len() >= w => {
                start = seq.len() - (w / 2).max(1);
                cache.reset();
                lm.step(&seq[start..], &mut cache, cap)?
            }
            _ => lm.step(&[id], &mut cache, cap)?,
        };
    }
    stats.gen_secs = t1.elapsed().as_secs_f64();
    Ok(stats)
}

/// The [`crate::GenerationTrace`] of a generation as [`generate`] reported it (attention
/// captured): the prompt's tokens, then each generated token spelled by `lm`'s tokenizer,
/// byte offsets continuing the prompt's (so that words can be told apart).
pub fn generation_trace(
    lm: &dyn CausalLm,
    prompt: Vec<crate::TokenInfo>,
    generated: &[GenToken],
) -> Result<crate::GenerationTrace> {
    let tok = lm.tokenizer();
    let mut at = prompt.iter().map(|t| t.end).max().unwrap_or(0);
    let rows = generated
        .iter()
        .map(|g| {
            let len = tok.token_bytes(g.id).len();
            let info = crate::TokenInfo {
                id: g.id,
                text: tok.display(g.id),
                start: at,
                end: at + len,
            };
            at += len;
            (info, g.attention.as_slice())
        })
        .collect();
    crate::GenerationTrace::new(prompt, rows, (lm.layers(), lm.heads(), lm.kv_heads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_sampling_is_seeded() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let mut s = Sampler::new(SamplerConfig::default()).unwrap();
        assert_eq!(s.sample(&logits), 1);
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                temperature: 1.0,
                seed,
                ..Default::default()
            })
            .unwrap();
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top-k 1 is greedy whatever the temperature
        let mut s = Sampler::new(SamplerConfig {
            temperature: 5.0,
            top_k: 1,
            ..Default::default()
        })
        .unwrap();
        assert!((0..20).all(|_| s.sample(&logits) == 1));
        // top-p 0.5 keeps only the top token here (p(1) ≈ 0.47 < 0.5 → tokens 1 and 2)
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        })
        .unwrap();
        assert!((0..50).all(|_| matches!(s.sample(&logits), 1 | 2)));
        // frequencies follow the softmax
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&logits) == 1).count() as f64 / n as f64;
        let p1 = logprob(&logits, 1).exp() as f64;
        assert!((ones - p1).abs() < 0.02, "{ones} vs {p1}");
        assert!(Sampler::new(SamplerConfig {
            temperature: -1.0,
            ..Default::default()
        })
        .is_err());
        assert!(Sampler::new(SamplerConfig {
            top_p: 0.0,
            ..Default::default()
        })
        .is_err());
    }
}
