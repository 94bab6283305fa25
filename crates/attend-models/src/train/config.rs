//! The settings and state of a training run, as `config.json` keeps them under `training`.

use serde::{Deserialize, Serialize};

use super::optim::OptimConfig;

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
