//! The decoder architectures attend reads, as data: each file maps one architecture's GGUF
//! metadata onto a [`DecoderConfig`] (what sets it apart from Llama, in its `//!`), and
//! [`ARCHITECTURES`] lists them. That one table decides which files load ([`load`]), what an
//! unknown architecture's error names ([`names`]) and how a SentencePiece vocabulary is read
//! ([`Arch::spm`]).
//!
//! Adding an architecture: a file here with an `ARCH` constant — its names, the defaults of
//! transformers' config class for keys a file may lack, and `adapt`, which takes the
//! configuration [`DecoderConfig::read`] read (Llama's layout) and sets what differs — and a
//! row in [`ARCHITECTURES`]; then a tiny model of it in `scripts/tiny_decoders.py` for the
//! golden test.

pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;

use crate::formats::gguf::GgufFile;
use crate::models::decoder::gguf::{architecture, Meta};
use crate::models::decoder::{Decoder, DecoderConfig, Defaults};
use crate::tokenize::gguf::{GgufTokenizer, SpmStyle};
use crate::{Error, Result};

/// One architecture: the `general.architecture` names it reads, how its metadata becomes a
/// [`DecoderConfig`], and how its SentencePiece vocabularies are read.
pub struct Arch {
    /// `general.architecture` values.
    pub names: &'static [&'static str],
    /// What keys the file lacks default to (transformers' config class's values).
    pub defaults: Defaults,
    /// What sets the architecture apart: the configuration [`DecoderConfig::read`] read from
    /// the shared keys, changed (and more keys read, every one checked).
    pub adapt: fn(&Meta, DecoderConfig) -> Result<DecoderConfig>,
    /// How a `tokenizer.ggml.model = "llama"` vocabulary is read.
    pub spm: SpmStyle,
}

impl Arch {
    /// The file's metadata as a decoder's configuration.
    pub fn config(&self, m: &Meta) -> Result<DecoderConfig> {
        (self.adapt)(m, DecoderConfig::read(m, self.defaults)?)
    }
}

/// Every architecture attend reads.
pub const ARCHITECTURES: &[&Arch] = &[
    &llama::ARCH,
    &qwen2::ARCH,
    &qwen3::ARCH,
    &phi3::ARCH,
    &gemma2::ARCH,
    &gemma3::ARCH,
];

/// The architecture `name` (a `general.architecture` value).
pub fn find(name: &str) -> Option<&'static Arch> {
    ARCHITECTURES
        .iter()
        .copied()
        .find(|a| a.names.contains(&name))
}

/// Every `general.architecture` value attend reads.
pub fn names() -> Vec<&'static str> {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.names.iter().copied())
        .collect()
}

/// The architecture of `file`, or an error naming it and the ones attend reads.
fn of(file: &GgufFile) -> Result<&'static Arch> {
    let name = architecture(file);
    find(&name).ok_or_else(|| Error::Format {
        path: file.path.clone(),
        what: format!(
            "architecture `{name}` is not one attend reads ({})",
            names().join(", ")
        ),
    })
}

/// The configuration of `file` as its architecture reads it.
pub fn config(file: &GgufFile) -> Result<DecoderConfig> {
    let arch = architecture(file);
    of(file)?.config(&Meta { file, arch: &arch })
}

/// The tokenizer stored in `file`, read as its architecture reads it.
pub fn tokenizer(file: &GgufFile) -> Result<GgufTokenizer> {
    GgufTokenizer::from_gguf(&file.header, of(file)?.spm)
}

/// The decoder in `file`, by its `general.architecture`.
pub fn load(file: GgufFile) -> Result<Decoder> {
    let config = config(&file)?;
    let spm = of(&file)?.spm;
    Decoder::new(file, config, spm)
}
