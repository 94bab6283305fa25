//! The settings and state of a training run, as `config.json` keeps them under `training`.

use serde::{Deserialize, Serialize};

use super::optim::OptimConfig;
use crate::models::toy::ToyConfig;

/// What a model is trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TaskSpec {
    /// The built-in Winograd-style task ([`super::winograd`]).
    Winograd,
    /// A text file, byte by byte; the last tenth is held out.
    Text {
        /// The file as it was named.
        file: String,
        /// Its length in bytes (a resumed run checks it is the same text).
        bytes: usize,
        /// FNV-1a hash of its bytes, hex.
        hash: String,
    },
}

/// The settings of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The task.
    pub task: TaskSpec,
    /// Seed of the initial weights and of every batch.
    pub seed: u64,
    /// Sequences per step.
    pub batch: usize,
    /// Optimiser and schedule (`optim.steps` is the length of the run).
    pub optim: OptimConfig,
}

/// A held-out measurement during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// After this many steps.
    pub step: usize,
    /// Held-out loss (nats per scored token).
    pub loss: f32,
    /// Held-out referent accuracy (Winograd only).
    pub accuracy: Option<f32>,
}

/// Where a run stands; saved in `config.json` under `training`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The run's settings.
    pub config: TrainConfig,
    /// Steps done.
    pub step: usize,
    /// Training loss of every step.
    pub losses: Vec<f32>,
    /// Held-out measurements.
    pub evals: Vec<EvalPoint>,
    /// Tokens scored per step, on average.
    pub tokens_per_step: f64,
}

/// The most steps a run may have.
pub const MAX_STEPS: usize = 10_000_000;
/// The most activation memory one step may take (an estimate; see [`TrainConfig::validate`]).
pub const MAX_STEP_BYTES: u64 = 4 << 30;

fn range_err(field: &str, v: impl std::fmt::Display, want: &str) -> String {
    format!("`{field}` is {v}; it must be {want}")
}

impl TrainConfig {
    /// Checks every setting (counts, finite rates in range) and that one step of `model` at
    /// this batch fits in [`MAX_STEP_BYTES`] of activations, before anything is allocated.
    /// The message names the field (`batch`, `optim.lr`, ...).
    pub fn validate(&self, model: &ToyConfig) -> Result<(), String> {
        let o = &self.optim;
        if !(1..=MAX_STEPS).contains(&o.steps) {
            return Err(range_err(
                "optim.steps",
                o.steps,
                &format!("1 to {MAX_STEPS}"),
            ));
        }
        if o.warmup > o.steps {
            return Err(range_err("optim.warmup", o.warmup, "at most optim.steps"));
        }
        let real = |field: &str, v: f32, lo: f32, hi: f32, open_lo: bool| {
            let ok = v.is_finite() && v <= hi && if open_lo { v > lo } else { v >= lo };
            if ok {
                Ok(())
            } else {
                let lo_s = if open_lo { "above" } else { "from" };
                Err(range_err(
                    field,
                    v,
                    &format!("a finite number {lo_s} {lo} to {hi}"),
                ))
            }
        };
        real("optim.lr", o.lr, 0.0, 10.0, true)?;
        real("optim.min_lr", o.min_lr, 0.0, o.lr, false)?;
        real("optim.beta1", o.beta1, 0.0, 0.999_999, false)?;
        real("optim.beta2", o.beta2, 0.0, 0.999_999_9, false)?;
        real("optim.eps", o.eps, 0.0, 1.0, true)?;
        real("optim.weight_decay", o.weight_decay, 0.0, 10.0, false)?;
        real("optim.clip", o.clip, 0.0, 1e6, false)?;
        if self.batch == 0 {
            return Err(range_err("batch", 0, "at least 1"));
        }
        let bytes = step_bytes(model, self.batch);
        if bytes > MAX_STEP_BYTES {
            return Err(format!(
                "`batch` is {}: one step of this model would take about {} MiB of activations \
                 (the limit is {} MiB); use a smaller batch",
                self.batch,
                bytes >> 20,
                MAX_STEP_BYTES >> 20
            ));
        }
        Ok(())
    }
}

/// An estimate of the activation memory of one training step: per token and layer, the
/// saved norms, projections, attention output and MLP states; per token, the logits and their
/// gradient; per sequence and head, the attention's log-sum-exp.
pub fn step_bytes(m: &ToyConfig, batch: usize) -> u64 {
    let (d, h, l, mlp, v) = (
        m.dim as u64,
        m.heads as u64,
        m.layers as u64,
        m.mlp as u64,
        m.vocab.len() as u64,
    );
    let tokens = (batch as u64).saturating_mul(m.ctx as u64);
    let per_token = l
        .saturating_mul(12 * d + 3 * mlp + 2 * h)
        .saturating_add(2 * v + 4 * d);
    tokens.saturating_mul(per_token).saturating_mul(4)
}

impl TrainState {
    /// Checks the state against its own settings: the step within the schedule, one loss per
    /// step done, evaluations at steps done, finite numbers.
    pub fn validate(&self, model: &ToyConfig) -> Result<(), String> {
        self.config.validate(model)?;
        if self.step > self.config.optim.steps {
            return Err(range_err("step", self.step, "at most optim.steps"));
        }
        if self.losses.len() != self.step {
            return Err(format!(
                "`losses` has {} entries for {} steps done",
                self.losses.len(),
                self.step
            ));
        }
        if let Some(p) = self.evals.iter().find(|p| p.step > self.step) {
            return Err(range_err("evals.step", p.step, "at most step"));
        }
        if !self.tokens_per_step.is_finite() || self.tokens_per_step < 0.0 {
            return Err(range_err(
                "tokens_per_step",
                self.tokens_per_step,
                "finite and ≥ 0",
            ));
        }
        Ok(())
    }
}
