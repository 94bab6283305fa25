//! # attend-models — real transformers on the attend kernel
//!
//! - [`registry`]: named models, fetched once into a cache (pinned and checksummed), or any
//!   folder given as a path;
//! - [`weights`]: memory-mapped safetensors;
//! - [`ops`]: linear layers (on `attend`'s packed-weight GEMM), layer norm, GELU;
//! - [`bert`]: the BERT encoder, attention on `attend`'s fused kernel;
//! - [`encoder`]: sentence embeddings (tokenize, encode, pool, normalise) and attention traces;
//! - [`trace`]: who attends to whom, `[layer][head][query][key]`, with the tokens;
//! - [`gguf`], [`quant`]: GGUF files and ggml's quantised block formats, with quantised
//!   matrix–vector products (AVX2 where present);
//! - [`llama`], [`gguf_tokenizer`], [`generate`]: Llama-family causal LMs from GGUF (SmolLM2),
//!   their tokenizer and chat template, sampling and generation through `attend`'s KV cache;
//! - [`toy`]: small transformers attend trains itself (backward through every layer, AdamW,
//!   checkpoints), and the built-in Winograd task.
//!
//! The crate never prints and never parses command lines; attention is never reimplemented
//! here — it is `attend::fused`.
#![deny(unsafe_code)]

pub mod bert;
pub mod encoder;
mod error;
pub mod generate;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod llama;
pub mod ops;
pub mod quant;
pub mod registry;
mod simd_q;
mod sys;
pub mod toy;
pub mod trace;
pub mod weights;

pub use encoder::{Embeddings, Pooling, SentenceEncoder, Tokenized};
pub use error::{Error, Result};
pub use trace::{TokenInfo, Trace};
