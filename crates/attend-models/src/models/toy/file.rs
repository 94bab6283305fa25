//! Checkpoints of the models attend trains: a folder with `config.json` (`"architecture":
//! "attend-toy"`, the model's shape and tokenizer, and whatever else the trainer keeps there),
//! `model.safetensors` (every parameter, float32, named as [`ToyModel::specs`]) and, to resume
//! training, `optimizer.safetensors`. This module reads what inference needs — the model —
//! with the helpers of `crate::formats::checkpoint`; the training state itself is the
//! trainer's (`crate::train`).
//!
//! Invariant: a configuration is validated, and checked against the size of its weights file,
//! before anything is allocated from it.

use std::path::Path;

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{ToyConfig, ToyModel};
use crate::formats::checkpoint::{check_recorded, f32_tensors, read_f32};
use crate::{Error, Result};

/// The `architecture` of a toy model's `config.json`.
pub const ARCHITECTURE: &str = "attend-toy";

/// `config.json` of a checkpoint.
#[derive(Serialize, Deserialize)]
pub struct ConfigFile {
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// The model's shape and tokenizer.
    pub model: ToyConfig,
    /// The training state, as the trainer wrote it (absent for a model saved without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
    /// FNV-1a hashes of the other files of the checkpoint as it was saved (absent in
    /// checkpoints of attend before 0.1): a file that does not match was left by another save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<std::collections::BTreeMap<String, String>>,
    /// Anything else (final evaluation, how it was made).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub notes: serde_json::Value,
}

/// A checkpoint as inference reads it.
#[derive(Clone, Debug)]
pub struct ToyFile {
    /// The model.
    pub model: ToyModel,
    /// `config.json`'s `training`, unread (the trainer's).
    pub training: Option<serde_json::Value>,
    /// `config.json`'s `notes`.
    pub notes: serde_json::Value,
    /// `config.json`'s record of the other files' hashes.
    pub files: Option<std::collections::BTreeMap<String, String>>,
}

impl ToyFile {
    /// Whether `dir` holds a toy model's `config.json`.
    pub fn is_toy_dir(dir: &Path) -> bool {
        crate::formats::read_regular(&dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["architecture"] == ARCHITECTURE)
    }

    /// Reads `config.json` and `model.safetensors` of the folder `dir`.
    pub fn load(dir: &Path) -> Result<ToyFile> {
        let cfg_path = dir.join("config.json");
        let config = crate::formats::read_regular(&cfg_path)?;
        let st_path = dir.join("model.safetensors");
        let weights = crate::formats::read_regular(&st_path)?;
        Self::from_bytes(&config, &weights, dir)
    }

    /// A checkpoint from the bytes of its files (`dir` names them in errors).
    pub fn from_bytes(config: &[u8], weights: &[u8], dir: &Path) -> Result<ToyFile> {
        let cfg_path = dir.join("config.json");
        let file: ConfigFile = serde_json::from_slice(config).map_err(|e| Error::Format {
            path: cfg_path.clone(),
            what: format!("not a toy model's configuration: {e}"),
        })?;
        if file.architecture != ARCHITECTURE {
            return Err(Error::Format {
                path: cfg_path,
                what: format!(
                    "architecture `{}` is not `{ARCHITECTURE}`",
                    file.architecture
                ),
            });
        }
        file.model.validate().map_err(|e| Error::Format {
            path: cfg_path.clone(),
            what: e.to_string(),
        })?;
        // the training front ends add their records to the notes by name
        if !(file.notes.is_object() || file.notes.is_null()) {
            return Err(Error::Format {
                path: cfg_path,
                what: "`notes` is not an object".into(),
            });
        }
        let st_path = dir.join("model.safetensors");
        check_recorded(&file.files, "model.safetensors", weights, dir)?;
        // a configuration larger than its weights is refused before anything is allocated
        let need = file.model.param_count();
        if need.saturating_mul(4) > weights.len() {
            return Err(Error::Format {
                path: st_path,
                what: format!(
                    "the configuration needs {need} parameters ({} bytes); the file has {} bytes",
                    need.saturating_mul(4),
                    weights.len()
                ),
            });
        }
        let st = SafeTensors::deserialize(weights).map_err(|e| Error::Format {
            path: st_path.clone(),
            what: format!("not a valid safetensors file: {e}"),
        })?;
        let mut model = ToyModel::new(file.model.clone(), 0)?;
        let specs = model.specs().to_vec();
        for s in &specs {
            let v = read_f32(&st, &s.name, &s.shape, &st_path)?;
            model.params[s.range()].copy_from_slice(&v);
        }
        if st.len() != specs.len() {
            return Err(Error::Format {
                path: st_path,
                what: format!(
                    "{} tensors, the configuration has {}",
                    st.len(),
                    specs.len()
                ),
            });
        }
        Ok(ToyFile {
            model,
            training: file.training,
            notes: file.notes,
            files: file.files,
        })
    }

    /// The model's `model.safetensors` bytes.
    pub fn weights_bytes(model: &ToyModel) -> Result<Vec<u8>> {
        f32_tensors(
            model
                .specs()
                .iter()
                .map(|s| (s.name.clone(), s.shape.clone(), &model.params[s.range()])),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::toy::ToyConfig;
    use crate::tokenize::vocab::Vocab;

    fn tiny() -> ToyModel {
        let config = ToyConfig {
            dim: 8,
            layers: 1,
            heads: 2,
            mlp: 12,
            ctx: 6,
            vocab: Vocab::Bytes,
        };
        ToyModel::new(config, 5).unwrap()
    }

    fn config_bytes(m: &ToyModel, arch: &str) -> Vec<u8> {
        serde_json::to_vec(&ConfigFile {
            architecture: arch.into(),
            model: m.config.clone(),
            training: Some(serde_json::json!({"anything": 1})),
            files: None,
            notes: serde_json::json!({"n": 1}),
        })
        .unwrap()
    }

    /// `notes` the training front ends could not add to (a number, a list) is refused.
    #[test]
    fn notes_that_are_not_an_object_are_refused() {
        let m = tiny();
        let w = ToyFile::weights_bytes(&m).unwrap();
        for notes in [
            serde_json::json!(1),
            serde_json::json!([1]),
            serde_json::json!("n"),
        ] {
            let mut cfg: serde_json::Value =
                serde_json::from_slice(&config_bytes(&m, ARCHITECTURE)).unwrap();
            cfg["notes"] = notes;
            let cfg = serde_json::to_vec(&cfg).unwrap();
            let e = ToyFile::from_bytes(&cfg, &w, Path::new("d")).unwrap_err();
            assert!(e.to_string().contains("`notes` is not an object"), "{e}");
        }
    }

    #[test]
    fn a_model_reads_back_bit_for_bit() {
        let m = tiny();
        let w = ToyFile::weights_bytes(&m).unwrap();
        let f = ToyFile::from_bytes(&config_bytes(&m, ARCHITECTURE), &w, Path::new("d")).unwrap();
        assert_eq!(f.model.params, m.params);
        assert_eq!(f.model.config, m.config);
        assert_eq!(f.training, Some(serde_json::json!({"anything": 1})));
        assert_eq!(f.notes, serde_json::json!({"n": 1}));
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let m = tiny();
        let w = ToyFile::weights_bytes(&m).unwrap();
        let dir = Path::new("ck");
        let cfg = config_bytes(&m, ARCHITECTURE);
        let err = |c: &[u8], w: &[u8]| ToyFile::from_bytes(c, w, dir).unwrap_err().to_string();
        assert!(err(&config_bytes(&m, "bert"), &w).contains("config.json"));
        assert!(err(b"{", &w).contains("config.json"));
        assert!(err(&cfg, &w[..w.len() / 2]).contains("model.safetensors"));
        assert!(err(&cfg, &w[..7]).contains("model.safetensors"));
        // a NaN parameter
        let mut bad = m.clone();
        bad.params[3] = f32::NAN;
        let wb = ToyFile::weights_bytes(&bad).unwrap();
        assert!(err(&cfg, &wb).contains("non-finite"));
        // a configuration larger than the weights is refused before allocating
        let mut big = m.config.clone();
        big.dim = 4096;
        big.heads = 1;
        let cb = serde_json::to_vec(&serde_json::json!({
            "architecture": ARCHITECTURE, "model": big}))
        .unwrap();
        assert!(err(&cb, &w).contains("needs"));
    }
}
