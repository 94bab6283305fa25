//! Checkpoints of the models attend trains: a folder with `config.json` (`"architecture":
//! "attend-toy"`, the model's shape and tokenizer, and whatever else the trainer keeps there),
//! `model.safetensors` (every parameter, float32, named as [`ToyModel::specs`]) and, to resume
//! training, `optimizer.safetensors`. This module reads what inference needs — the model — and
//! holds the file helpers the trainer writes with; the training state itself is the trainer's
//! (`crate::train`).
//!
//! Invariant: a configuration is validated, and checked against the size of its weights file,
//! before anything is allocated from it; files are written to a temporary name and renamed.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::models::toy::{ToyConfig, ToyModel};
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
        std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["architecture"] == ARCHITECTURE)
    }

    /// Reads `config.json` and `model.safetensors` of the folder `dir`.
    pub fn load(dir: &Path) -> Result<ToyFile> {
        let cfg_path = dir.join("config.json");
        let config = std::fs::read(&cfg_path).map_err(io(&cfg_path))?;
        let st_path = dir.join("model.safetensors");
        let weights = std::fs::read(&st_path).map_err(io(&st_path))?;
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

/// A safetensors file of float32 tensors `(name, shape, values)`.
pub fn f32_tensors<'a>(
    items: impl IntoIterator<Item = (String, Vec<usize>, &'a [f32])>,
) -> Result<Vec<u8>> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = items
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = owned
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Invalid(format!("safetensors: {e}")))?;
    safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::Invalid(format!("safetensors: {e}")))
}

/// Float32 tensor `name` of exactly `shape`, every value finite (`path` names the file).
pub fn read_f32(st: &SafeTensors, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| Error::MissingTensor {
        path: path.into(),
        name: name.into(),
    })?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(Error::TensorShape {
            path: path.into(),
            name: name.into(),
            expected: format!("F32 {shape:?}"),
            got: format!("{:?} {:?}", t.dtype(), t.shape()),
        });
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Format {
            path: path.into(),
            what: format!("tensor `{name}` holds a non-finite value at {i}"),
        });
    }
    Ok(v)
}

/// FNV-1a of some bytes, as hex.
pub fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Refuses `name` when `config.json` recorded another hash for it: the folder mixes files of
/// two saves (one interrupted between its renames).
pub fn check_recorded(
    files: &Option<std::collections::BTreeMap<String, String>>,
    name: &str,
    bytes: &[u8],
    dir: &Path,
) -> Result<()> {
    let Some(want) = files.as_ref().and_then(|f| f.get(name)) else {
        return Ok(());
    };
    let got = fnv_hex(bytes);
    if &got != want {
        return Err(Error::Format {
            path: dir.join(name),
            what: format!(
                "is not the file config.json was saved with (FNV-1a {got}, recorded {want}): \
                 the checkpoint mixes two saves, as an interrupted save leaves it; use an \
                 earlier copy or train again"
            ),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all: a temporary name in the same folder
/// (`.NAME.partial`), renamed into place; removed again on any failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("out"),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let done = std::fs::write(&tmp, bytes)
        .map_err(io(&tmp))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(io(path)));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
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
            notes: serde_json::json!("n"),
        })
        .unwrap()
    }

    #[test]
    fn a_model_reads_back_bit_for_bit() {
        let m = tiny();
        let w = ToyFile::weights_bytes(&m).unwrap();
        let f = ToyFile::from_bytes(&config_bytes(&m, ARCHITECTURE), &w, Path::new("d")).unwrap();
        assert_eq!(f.model.params, m.params);
        assert_eq!(f.model.config, m.config);
        assert_eq!(f.training, Some(serde_json::json!({"anything": 1})));
        assert_eq!(f.notes, serde_json::json!("n"));
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

    #[test]
    fn writes_are_whole_or_absent() {
        let dir = std::env::temp_dir().join(format!("attend-ck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(!dir.join(".x.json.partial").exists());
        // a folder in the way: an error, and the old file untouched
        let q = dir.join("sub");
        std::fs::create_dir_all(q.join("inner")).unwrap();
        assert!(write_atomic(&q, b"x").is_err());
        assert!(!dir.join(".sub.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
