//! AdamW (decoupled weight decay), a warm-up + cosine learning-rate schedule, and clipping by
//! the global gradient norm. Sums run in a fixed order, so a step is deterministic.

use serde::{Deserialize, Serialize};

use crate::models::toy::TensorSpec;

/// Optimiser settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warm-up from 0.
    pub warmup: usize,
    /// Steps of the whole schedule (the cosine ends here).
    pub steps: usize,
    /// AdamW's β₁.
    pub beta1: f32,
    /// AdamW's β₂.
    pub beta2: f32,
    /// AdamW's ε.
    pub eps: f32,
    /// Decoupled weight decay of matrices and embeddings.
    pub weight_decay: f32,
    /// Largest global gradient norm (larger gradients are scaled down to it; 0: no clipping).
    pub clip: f32,
}

impl OptimConfig {
    /// Learning rate at `step` (0-based): linear warm-up to `lr`, then cosine to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup {
            return self.lr * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.steps.saturating_sub(self.warmup).max(1);
        let frac = ((step - self.warmup) as f32 / span as f32).min(1.0);
        let cos = 0.5 * (1.0 + (std::f32::consts::PI * frac).cos());
        self.min_lr + (self.lr - self.min_lr) * cos
    }
}

/// AdamW's moments and step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// First moments, one per parameter.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Updates made so far.
    pub t: u64,
}

/// The global L2 norm of `grads` (summed in f64, in order).
pub fn global_norm(grads: &[f32]) -> f32 {
    grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32
}

impl AdamW {
    /// Zero moments for `n` parameters.
    pub fn new(n: usize) -> AdamW {
        AdamW {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update at learning rate `lr`: clips `grads` to `cfg.clip` (in place) and moves
    /// `params`. Returns the gradient norm before clipping.
    pub fn step(
        &mut self,
        cfg: &OptimConfig,
        lr: f32,
        specs: &[TensorSpec],
        params: &mut [f32],
        grads: &mut [f32],
    ) -> f32 {
        let norm = global_norm(grads);
        if cfg.clip > 0.0 && norm > cfg.clip {
            let s = cfg.clip / norm;
            grads.iter_mut().for_each(|g| *g *= s);
        }
        self.t += 1;
        let bc1 = 1.0 - (cfg.beta1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (cfg.beta2 as f64).powi(self.t as i32);
        let (bc1, bc2) = (bc1 as f32, bc2 as f32);
        for spec in specs {
            let r = spec.range();
            let decay = if spec.decay {
                1.0 - lr * cfg.weight_decay
            } else {
                1.0
            };
            let it = params[r.clone()]
                .iter_mut()
                .zip(&grads[r.clone()])
                .zip(self.m[r.clone()].iter_mut().zip(&mut self.v[r]));
            for ((p, &g), (m, v)) in it {
                *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * g;
                *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * g * g;
                let mh = *m / bc1;
                let vh = *v / bc2;
                *p = *p * decay - lr * mh / (vh.sqrt() + cfg.eps);
            }
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OptimConfig {
        OptimConfig {
            lr: 1e-2,
            min_lr: 1e-3,
            warmup: 10,
            steps: 110,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            clip: 1.0,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let c = cfg();
        assert!((c.lr_at(0) - 1e-3).abs() < 1e-9);
        assert!((c.lr_at(9) - 1e-2).abs() < 1e-9);
        assert!((c.lr_at(60) - (1e-3 + 9e-3 * 0.5)).abs() < 1e-6);
        assert!((c.lr_at(110) - 1e-3).abs() < 1e-9);
        assert!((c.lr_at(500) - 1e-3).abs() < 1e-9);
    }

    #[test]
    fn one_update_by_hand_with_clipping_and_decay() {
        let specs = vec![
            TensorSpec {
                name: "w".into(),
                shape: vec![2],
                offset: 0,
                decay: true,
            },
            TensorSpec {
                name: "b".into(),
                shape: vec![1],
                offset: 2,
                decay: false,
            },
        ];
        let c = cfg();
        let mut p = vec![1.0f32, -2.0, 0.5];
        let mut g = vec![3.0f32, 0.0, 4.0]; // norm 5: clipped to 1 → (0.6, 0, 0.8)
        let mut opt = AdamW::new(3);
        let norm = opt.step(&c, 0.1, &specs, &mut p, &mut g);
        assert_eq!(norm, 5.0);
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[2] - 0.8).abs() < 1e-6);
        // first step: m̂ = g, v̂ = g², so the move is lr·sign(g) (ε aside)
        assert!(
            (p[0] - (1.0 * (1.0 - 0.1 * 0.1) - 0.1)).abs() < 1e-6,
            "{}",
            p[0]
        );
        assert!((p[1] - (-2.0 * (1.0 - 0.1 * 0.1))).abs() < 1e-6, "{}", p[1]);
        assert!(
            (p[2] - (0.5 - 0.1)).abs() < 1e-6,
            "no decay on biases: {}",
            p[2]
        );
    }
}
