//! Training the toy models: the backward pass of every layer ([`layers`], [`backward`]; the
//! forwards are `crate::nn`'s and attention's is `attend::backward`), AdamW and its schedule
//! ([`optim`]), the trainer with its batches, evaluation and resumable checkpoints
//! ([`trainer`]), and the built-in task in which an adjective decides what "it" refers to
//! ([`winograd`]).
//!
//! A step is deterministic for a seed: data come from a generator seeded by `(seed, step)`,
//! every sum runs in a fixed order, and the matrix products split work over rows and columns
//! only, so the thread count does not change the result either.
//!
//! Invariant: inference never imports this module.

pub mod backward;
pub mod config;
pub mod layers;
pub mod optim;
pub mod session;
pub mod trainer;
pub mod winograd;

pub use config::{EvalPoint, TaskSpec, TrainConfig, TrainState};
pub use trainer::{Checkpoint, Trainer};
