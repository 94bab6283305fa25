//! Files: safetensors (memory-mapped), GGUF (header, metadata, tensor infos), and the
//! checkpoints of the models attend trains; and the one writer of attend's outputs.
//!
//! Invariant: every count, length and offset read from a file is checked against the bytes
//! present before it is used; a bad file is an [`crate::Error`] naming the file.

pub mod checkpoint;
pub mod fields;
pub mod gguf;
pub(crate) mod mmap;
pub mod output;
pub mod safetensors;
