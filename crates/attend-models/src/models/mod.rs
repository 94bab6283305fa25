//! The models, each a struct per upstream module with `load` and `forward`: the BERT encoder
//! ([`bert`]) and sentence embeddings around it ([`encoder`]), Llama-family decoders from GGUF
//! ([`llama`]), and the small decoders attend trains ([`toy`]). [`load_causal_lm`] opens any
//! causal model attend runs, by name or path.
//!
//! Invariant: attention is never computed here — every model calls `attend::fused` (or its
//! KV cache), and the probabilities it shows come from that call's log-sum-exp.

pub mod bert;
pub mod embedded;
pub mod encoder;
pub mod llama;
pub mod toy;

use std::path::Path;

use crate::formats::checkpoint::ToyFile;
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
    let m = llama::LlamaModel::load(&path).map_err(|e| match e {
        // a folder that is neither: say what it is not
        Error::Invalid(what) if path.is_dir() => Error::Invalid(format!(
            "{what} (and it is not a checkpoint of a model attend trained)"
        )),
        other => other,
    })?;
    Ok(Box::new(m))
}
