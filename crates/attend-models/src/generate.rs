//! Next-token generation: the prompt in one batched causal forward, then one token at a time
//! through the KV cache; greedy or sampled (temperature, top-k, top-p, seeded); stops at an
//! end token or after `max_tokens`.

use std::time::Instant;

use crate::gguf_tokenizer::GgufTokenizer;
use crate::llama::{AttnCapture, LlamaModel};
use crate::{Error, Result};

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

/// A seeded sampler (xoshiro256** random numbers, deterministic for a seed).
pub struct Sampler {
    cfg: SamplerConfig,
    s: [u64; 4],
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
        // splitmix64 to seed the state
        let mut z = cfg.seed;
        let mut s = [0u64; 4];
        for v in &mut s {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = x ^ (x >> 31);
        }
        Ok(Sampler { cfg, s })
    }

    fn next_f64(&mut self) -> f64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        (result >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Chooses a token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.cfg.temperature == 0.0 {
            return argmax();
        }
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if self.cfg.top_k > 0 {
            idx.truncate(self.cfg.top_k);
        }
        let t = self.cfg.temperature as f64;
        let max = logits[idx[0] as usize] as f64;
        let mut p: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i as usize] as f64 - max) / t).exp())
            .collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|v| *v /= total);
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
        let r = self.next_f64();
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

/// `log softmax(logits)[id]`.
pub fn logprob(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (logits[id as usize] - max) - sum.ln() as f32
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
/// made (return `false` to stop). With `capture`, each token carries the attention that
/// predicted it.
pub fn generate(
    model: &LlamaModel,
    tok: &GgufTokenizer,
    prompt: &[u32],
    max_tokens: usize,
    sampler: &mut Sampler,
    capture: bool,
    on_token: &mut dyn FnMut(&GenToken) -> bool,
) -> Result<GenStats> {
    let ctx = model.config.context_length;
    if prompt.is_empty() {
        return Err(Error::Invalid(
            "the prompt has no tokens (and the model adds no BOS)".into(),
        ));
    }
    if prompt.len() + max_tokens > ctx {
        return Err(Error::Invalid(format!(
            "the prompt's {} tokens plus --max-tokens {max_tokens} exceed the context length of {ctx}",
            prompt.len()
        )));
    }
    let cap = if capture {
        AttnCapture::LastRow
    } else {
        AttnCapture::None
    };
    let mut cache = model.new_cache()?;
    let t0 = Instant::now();
    let mut f = model.forward(prompt, &mut cache, false, cap)?;
    let mut stats = GenStats {
        prompt_tokens: prompt.len(),
        prompt_secs: t0.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let t1 = Instant::now();
    for _ in 0..max_tokens {
        let id = sampler.sample(&f.logits);
        let g = GenToken {
            id,
            logprob: logprob(&f.logits, id),
            attention: std::mem::take(&mut f.attention),
        };
        stats.gen_tokens += 1;
        let go_on = on_token(&g);
        if tok.stop_ids.contains(&id) {
            stats.stopped_at_eos = true;
            break;
        }
        if !go_on || stats.gen_tokens == max_tokens {
            break;
        }
        f = model.forward(&[id], &mut cache, false, cap)?;
    }
    stats.gen_secs = t1.elapsed().as_secs_f64();
    Ok(stats)
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
