//! # attend-models — real transformers on the attend kernel
//!
//! Grouped by layer, bottom up:
//! - [`formats`]: safetensors (memory-mapped), GGUF, the checkpoints of trained models;
//! - [`quant`]: ggml types, dequantisation, matrices multiplied in their stored types;
//! - [`nn`]: linear layers, norms, RoPE, activations, logits — one copy of each;
//! - [`tokenize`]: one [`tokenize::Tokenizer`] trait over `tokenizer.json`, GGUF and toy
//!   vocabularies;
//! - [`models`]: BERT and sentence embeddings, Llama-family decoders, the toy decoders;
//! - [`generate`]: one [`generate::CausalLm`] trait, the sampler and one generation loop;
//! - [`trace`]: who attends to whom, `[layer][head][query][key]`, with the tokens;
//! - [`registry`]: named models, fetched once into a cache (pinned and checksummed);
//! - [`rng`]: the one seeded random generator;
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
pub use tokenize::hf::Tokenized;
pub use trace::{GenerationTrace, TokenInfo, Trace};
