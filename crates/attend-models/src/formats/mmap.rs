//! The model crate's only `unsafe`: memory-mapping a weights file read-only.
//!
//! Invariant: nothing else in `attend-models` is `unsafe`; every kernel it runs lives in
//! `attend-kernels`.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use crate::error::{io, Result};

/// Maps `path` read-only.
pub(crate) fn map(path: &Path) -> Result<memmap2::Mmap> {
    super::check_regular(path)?;
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only and private to this process; the model files live in
    // attend's cache (or a folder the user named), which attend never writes while a model is
    // loaded. A file truncated by another process under us would fault — the documented risk
    // of every memory-mapped reader (safetensors, llama.cpp, candle).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}
