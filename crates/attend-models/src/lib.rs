//! # attend-models — real transformers on the attend kernel
//!
//! Grouped by layer, bottom up; a module imports only from the layers below it (and
//! `error`), which `scripts/module_cycles.py --layers` checks in CI:
//! - [`rng`]: the one seeded random generator;
//! - [`quant`]: ggml types, dequantisation, matrices multiplied in their stored types;
//! - [`formats`]: safetensors (memory-mapped), GGUF (its tensors typed by `quant`'s ggml
//!   types), the file helpers of checkpoints;
//! - [`nn`]: linear layers, norms, RoPE, activations, logits — one copy of each;
//! - [`tokenize`]: one [`tokenize::Tokenizer`] trait (and [`TokenInfo`]) over `tokenizer.json`,
//!   GGUF and toy vocabularies;
//! - [`trace`]: who attends to whom, `[layer][head][query][key]`, with the tokens, and what
//!   is computed next to it;
//! - [`registry`]: named models, fetched once into a cache (pinned and checksummed);
//! - [`models`]: BERT and sentence embeddings, the one GGUF decoder and its architectures,
//!   the toy decoders and their checkpoints, the [`models::causal::CausalLm`] trait they
//!   implement, and [`models::open`], which decides what a model argument is;
//! - [`generate`]: the sampler and the one generation loop;
//! - [`train`]: backward passes, AdamW, the trainer and the Winograd task (inference does
//!   not use it).
//!
//! The crate never prints and never parses command lines; attention is never reimplemented
//! here — it is `attend::fused`; every kernel is `attend-kernels`'.
#![deny(unsafe_code)]

mod error;
pub mod formats;
pub mod generate;
pub mod models;
pub mod nn;
pub mod quant;
pub mod registry;
pub mod rng;
pub mod tokenize;
pub mod trace;
pub mod train;

pub use error::{Error, Result};
pub use models::encoder::{Embeddings, Pooling, SentenceEncoder};
pub use nn::linear::Precision;
pub use tokenize::hf::Tokenized;
pub use trace::{GenerationTrace, TokenInfo, Trace};
