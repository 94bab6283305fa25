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

use std::path::Path;

use crate::error::{io, Error, Result};

/// Checks that `path` is a regular file (following links) before anything opens it: a FIFO
/// would block the open, a device (`/dev/zero`) would read without end, a folder is no file.
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(meta);
    }
    let what = if meta.is_dir() {
        "is a folder, not a file"
    } else {
        "is not a regular file (a FIFO, a socket or a device): a model is read from files"
    };
    Err(Error::Format {
        path: path.to_path_buf(),
        what: what.into(),
    })
}

/// Reads a regular file whole ([`check_regular`] first).
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    check_regular(path)?;
    std::fs::read(path).map_err(io(path))
}

/// Reads a regular UTF-8 file whole ([`check_regular`] first).
pub fn read_regular_text(path: &Path) -> Result<String> {
    check_regular(path)?;
    std::fs::read_to_string(path).map_err(io(path))
}
