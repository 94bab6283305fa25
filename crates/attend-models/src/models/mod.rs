//! The models, each a struct per upstream module with `load` and `forward`: the BERT encoder
//! ([`bert`]) and sentence embeddings around it ([`encoder`]), the one GGUF decoder
//! ([`decoder`]) with the architectures it reads as data ([`arch`]), and the small decoders
//! attend trains ([`toy`]); what every causal model offers ([`causal`]).
//!
//! [`open`] is the one place that decides what a model argument is — a known name, an
//! embedded toy model, a BERT folder, a GGUF file or a folder holding one, a checkpoint of a
//! model attend trained; the CLI, `serve` and Python call it and look at no extension or
//! registry family themselves.
//!
//! Invariant: attention is never computed here — every model calls `attend::fused` (or its
//! KV cache), and the probabilities it shows come from that call's log-sum-exp.

pub mod arch;
pub mod bert;
pub mod causal;
pub mod decoder;
pub mod embedded;
pub mod encoder;
pub mod toy;

use std::path::{Path, PathBuf};

use crate::formats::gguf::GgufFile;
use crate::nn::linear::Precision;
use crate::{registry, Error, Result, SentenceEncoder};
use causal::CausalLm;
use decoder::Decoder;
use toy::file::ToyFile;

/// What kind of model an argument names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A BERT-family sentence encoder (embeds and explains).
    Encoder,
    /// A decoder read from GGUF (generates).
    Causal,
    /// A small decoder attend trained (generates and explains).
    Toy,
}

impl Kind {
    /// `encoder`, `causal` or `toy`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Encoder => "encoder",
            Kind::Causal => "causal",
            Kind::Toy => "toy",
        }
    }
}

/// What a model argument names, once decided: a known name (not yet fetched, perhaps) or a
/// path on disk, and its kind.
#[derive(Clone, Debug)]
pub enum Source {
    /// A model compiled into attend (`toy-winograd`).
    Embedded(&'static str),
    /// A name of the registry (fetched on first use).
    Known(&'static registry::ModelInfo),
    /// A file or folder.
    Path(PathBuf),
}

/// A model, loaded.
pub enum Model {
    /// A sentence encoder.
    Encoder(Box<SentenceEncoder>),
    /// A GGUF decoder.
    Causal(Box<Decoder>),
    /// A model attend trained.
    Toy(Box<toy::ToyModel>),
}

impl Model {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Model::Encoder(_) => Kind::Encoder,
            Model::Causal(_) => Kind::Causal,
            Model::Toy(_) => Kind::Toy,
        }
    }

    /// The model as a causal language model (`None` for an encoder).
    pub fn into_causal(self) -> Option<Box<dyn CausalLm>> {
        match self {
            Model::Encoder(_) => None,
            Model::Causal(m) => Some(m),
            Model::Toy(m) => Some(m),
        }
    }
}

/// Whether an argument is written as a path (a separator, a leading `.` or `~`, or an
/// extension) rather than a name: `minilm` is a name even when the working folder holds a
/// folder called `minilm`; `./minilm` is that folder.
pub fn looks_like_path(arg: &str) -> bool {
    arg.contains('/')
        || arg.contains(std::path::MAIN_SEPARATOR)
        || arg.starts_with('.')
        || arg.starts_with('~')
        || Path::new(arg).extension().is_some()
}

/// Decides what `arg` names without loading or fetching anything: an embedded or registry
/// name (unless `arg` is written as a path), else an existing path — a toy checkpoint folder,
/// a BERT folder (`config.json` and `model.safetensors`), a `.gguf` file (or any file that
/// starts with GGUF's magic), a folder holding one `.gguf`. Anything else is an error that
/// says what was looked for.
pub fn identify(arg: &str) -> Result<(Kind, Source)> {
    if !looks_like_path(arg) {
        if let Some(&name) = embedded::NAMES.iter().find(|&&n| n == arg) {
            return Ok((Kind::Toy, Source::Embedded(name)));
        }
        if let Some(m) = registry::info(arg) {
            let kind = if m.family == "bert" {
                Kind::Encoder
            } else {
                Kind::Causal
            };
            return Ok((kind, Source::Known(m)));
        }
    }
    let p = Path::new(arg);
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !looks_like_path(arg) => {
            return Err(Error::UnknownModel {
                name: arg.into(),
                known: known_names().join(", "),
            })
        }
        Err(e) => return Err(crate::error::io(p)(e)),
    };
    let path = Source::Path(p.to_path_buf());
    if meta.is_dir() {
        if ToyFile::is_toy_dir(p) {
            return Ok((Kind::Toy, path));
        }
        if p.join("config.json").is_file() && p.join("model.safetensors").is_file() {
            return Ok((Kind::Encoder, path));
        }
        return match decoder::gguf::single_gguf(p) {
            Ok(_) => Ok((Kind::Causal, path)),
            // several .gguf files: say so
            Err(Error::Invalid(what)) if what.contains("name one") => Err(Error::Invalid(what)),
            Err(_) => {
                let config = p.join("config.json");
                let why = match std::fs::metadata(&config) {
                    Err(e) => format!("no config.json ({e})"),
                    Ok(_) => "a config.json but no model.safetensors".into(),
                };
                Err(Error::Format {
                    path: p.to_path_buf(),
                    what: format!(
                        "holds no model attend reads: {why}, no .gguf file, and no checkpoint \
                         of `attend train`"
                    ),
                })
            }
        };
    }
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a regular file or a folder (a model is read from one)",
            p.display()
        )));
    }
    if p.extension().is_some_and(|e| e == "gguf") || starts_with_gguf_magic(p) {
        return Ok((Kind::Causal, path));
    }
    Err(Error::Invalid(format!(
        "{} is not a model attend reads: give a .gguf file, a BERT folder (config.json and \
         model.safetensors), a checkpoint folder of `attend train`, or a name ({})",
        p.display(),
        known_names().join(", ")
    )))
}

fn starts_with_gguf_magic(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == b"GGUF")
}

/// Every model name attend knows: the registry's, then the embedded ones.
pub fn known_names() -> Vec<&'static str> {
    registry::KNOWN
        .iter()
        .map(|m| m.name)
        .chain(embedded::NAMES.iter().copied())
        .collect()
}

/// Opens what `arg` names ([`identify`]), fetching a known model on first use (`log` hears
/// about it).
pub fn open(arg: &str, log: &mut dyn FnMut(&str)) -> Result<Model> {
    open_with(arg, Precision::Float32, log)
}

/// [`open`] with a sentence encoder's linear layers at `precision`. [`Precision::Int8`] is
/// for sentence encoders only: a decoder's GGUF weights are quantised as the file stores them,
/// and a toy model is small enough to stay exact; asking for it there is an error, said before
/// anything is fetched.
pub fn open_with(arg: &str, precision: Precision, log: &mut dyn FnMut(&str)) -> Result<Model> {
    let (kind, source) = identify(arg)?;
    if precision == Precision::Int8 && kind != Kind::Encoder {
        return Err(Error::Invalid(format!(
            "int8 is for sentence encoders; `{arg}` is a {} whose weights are {}",
            match kind {
                Kind::Toy => "toy model",
                _ => "decoder",
            },
            match kind {
                Kind::Toy => "kept exact (f32)",
                _ => "used as its GGUF file stores them (quantised there, or not)",
            }
        )));
    }
    let path = match source {
        Source::Embedded(name) => match embedded::get(name) {
            Some(f) => return Ok(Model::Toy(Box::new(f?.model))),
            None => unreachable!("an embedded name"),
        },
        Source::Known(m) => registry::fetch(m, log)?,
        Source::Path(p) => p,
    };
    Ok(match kind {
        Kind::Toy => Model::Toy(Box::new(ToyFile::load(&path)?.model)),
        Kind::Encoder => Model::Encoder(Box::new(SentenceEncoder::load_with(&path, precision)?)),
        Kind::Causal => Model::Causal(Box::new(load_decoder(&path)?)),
    })
}

/// A model attend trained itself: an embedded one by name (`toy-winograd`), or a checkpoint
/// folder written by training. `None` when `model` is neither.
pub fn load_toy(model: &str) -> Option<Result<toy::ToyModel>> {
    match identify(model) {
        Ok((Kind::Toy, _)) => Some(open(model, &mut |_| {}).and_then(|m| match m {
            Model::Toy(t) => Ok(*t),
            // the folder changed between the two looks
            _ => Err(Error::Invalid(format!(
                "`{model}` changed while it was read: it is no longer a toy model"
            ))),
        })),
        _ => None,
    }
}

/// Any causal language model attend runs: a toy model (embedded or a checkpoint folder), a
/// known name (fetched on first use, `log` hears about it), a `.gguf` file or a folder
/// holding one. An encoder is an error that says so.
pub fn load_causal_lm(model: &str, log: &mut dyn FnMut(&str)) -> Result<Box<dyn CausalLm>> {
    open(model, log)?.into_causal().ok_or_else(|| {
        Error::Invalid(format!(
            "`{model}` is a sentence encoder, not a causal language model"
        ))
    })
}

/// The GGUF architectures attend runs.
pub fn gguf_architectures() -> Vec<&'static str> {
    arch::names()
}

/// The decoder in a GGUF file (or the one `.gguf` file in a folder), by its
/// `general.architecture`; an architecture attend does not read is named, with the ones it
/// does.
pub fn load_decoder(path: &Path) -> Result<Decoder> {
    arch::load(GgufFile::open(&decoder::gguf::gguf_path(path)?)?)
}

/// [`load_decoder`] as a [`CausalLm`].
pub fn load_gguf(path: &Path) -> Result<Box<dyn CausalLm>> {
    Ok(Box::new(load_decoder(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Int8 is for sentence encoders: on a toy model, or on a decoder's GGUF that does not
    /// exist yet, it is refused before anything is read or fetched.
    #[test]
    fn int8_is_refused_on_other_models_up_front() {
        let e = open_with("toy-winograd", Precision::Int8, &mut |_| {}).err();
        assert!(
            matches!(&e, Some(Error::Invalid(m)) if m.contains("int8 is for sentence encoders")),
            "{e:?}"
        );
        let mut heard = false;
        let e = open_with("smollm2", Precision::Int8, &mut |_| heard = true).err();
        assert!(
            matches!(&e, Some(Error::Invalid(m)) if m.contains("decoder")),
            "{e:?}"
        );
        assert!(!heard, "a fetch was started");
        assert!(open_with("toy-winograd", Precision::Float32, &mut |_| {}).is_ok());
    }
}
