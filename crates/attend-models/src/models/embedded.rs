//! Models compiled into the binary: `toy-winograd`, trained by `attend train winograd` with
//! its defaults (see its `config.json`, `notes.made_with`).

use crate::models::toy::file::ToyFile;

/// The names of the embedded models.
pub const NAMES: &[&str] = &["toy-winograd"];

const WINOGRAD_CONFIG: &[u8] = include_bytes!("../../models/toy-winograd/config.json");
const WINOGRAD_WEIGHTS: &[u8] = include_bytes!("../../models/toy-winograd/model.safetensors");

/// An embedded model by name (`None` for other names).
pub fn get(name: &str) -> Option<crate::Result<ToyFile>> {
    match name {
        "toy-winograd" => Some(ToyFile::from_bytes(
            WINOGRAD_CONFIG,
            WINOGRAD_WEIGHTS,
            std::path::Path::new("<embedded>/toy-winograd"),
        )),
        _ => None,
    }
}
