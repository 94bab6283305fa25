//! The models, each a struct per upstream module with `load` and `forward`: the BERT encoder
//! ([`bert`]) and sentence embeddings around it ([`encoder`]), decoders from GGUF — the Llama
//! family ([`llama`]) and Gemma 3 ([`gemma3`]) — and the small decoders attend trains
//! ([`toy`]). [`load_causal_lm`] opens any causal model attend runs, by name or path;
//! [`load_gguf`] picks the architecture a GGUF file names.
//!
//! Invariant: attention is never computed here — every model calls `attend::fused` (or its
//! KV cache), and the probabilities it shows come from that call's log-sum-exp.

pub mod bert;
pub mod embedded;
pub mod encoder;
pub mod gemma3;
pub mod llama;
pub mod toy;

use std::path::Path;

use crate::formats::checkpoint::ToyFile;
use crate::formats::gguf::GgufFile;
use crate::generate::CausalLm;
use crate::{registry, Error, Result};

/// A model attend trained itself: an embedded one by name (`toy-winograd`), or a checkpoint
/// folder written by training. `None` when `model` is neither.
pub fn load_toy(model: &str) -> Option<Result<toy::ToyModel>> {
    if let Some(f) = embedded::get(model) {
        return Some(f.map(|f| f.model));
    }
    let p = Path::new(model);
    if p.is_dir() && ToyFile::is_toy_dir(p) {
        return Some(ToyFile::load(p).map(|f| f.model));
    }
    None
}

/// Any causal language model attend runs: a toy model (embedded or a checkpoint folder), a
/// known name (fetched on first use, `log` hears about it), a `.gguf` file or a folder
/// holding one.
pub fn load_causal_lm(model: &str, log: &mut dyn FnMut(&str)) -> Result<Box<dyn CausalLm>> {
    if let Some(m) = load_toy(model) {
        return Ok(Box::new(m?));
    }
    let path = registry::resolve(model, log)?;
    let gguf = match llama::gguf_path(&path) {
        Ok(p) => p,
        // a folder that is neither: say what it is not
        Err(Error::Invalid(what)) if path.is_dir() => {
            return Err(Error::Invalid(format!(
                "{what} (and it is not a checkpoint of a model attend trained)"
            )))
        }
        Err(e) => return Err(e),
    };
    load_gguf(&gguf)
}

/// The GGUF architectures attend runs.
pub fn gguf_architectures() -> Vec<&'static str> {
    let mut all = llama::ARCHITECTURES.to_vec();
    all.push(gemma3::ARCHITECTURE);
    all
}

/// A causal model from a GGUF file, by its `general.architecture`; an architecture attend
/// does not read is named, with the ones it does.
pub fn load_gguf(path: &Path) -> Result<Box<dyn CausalLm>> {
    let file = GgufFile::open(path)?;
    let arch = llama::architecture(&file);
    if arch == gemma3::ARCHITECTURE {
        return Ok(Box::new(gemma3::Gemma3Model::from_file(file)?));
    }
    if llama::ARCHITECTURES.contains(&arch.as_str()) {
        return Ok(Box::new(llama::LlamaModel::from_file(file)?));
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        what: format!(
            "architecture `{arch}` is not one attend reads ({})",
            gguf_architectures().join(", ")
        ),
    })
}
