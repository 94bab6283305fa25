//! safetensors weights, memory-mapped: tensors are borrowed from the map when aligned (always,
//! for files written by the usual tools) and copied once otherwise. Every name, type, shape and
//! offset is checked against the file before use (the `safetensors` crate validates the header
//! and offsets); a bad file is an error naming the file and the problem.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A weights file.
pub struct Weights {
    path: PathBuf,
    map: memmap2::Mmap,
    /// name → (shape, byte range in the map)
    index: HashMap<String, (Vec<usize>, Dtype, std::ops::Range<usize>)>,
}

impl Weights {
    /// Opens and indexes a `.safetensors` file.
    pub fn open(path: &Path) -> Result<Weights> {
        let map = super::mmap::map(path)?;
        let bad = |what: String| Error::Format {
            path: path.to_path_buf(),
            what,
        };
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
        let base = map.as_ptr() as usize;
        let mut index = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let start = data.as_ptr() as usize - base;
            index.insert(
                name,
                (
                    view.shape().to_vec(),
                    view.dtype(),
                    start..start + data.len(),
                ),
            );
        }
        Ok(Weights {
            path: path.to_path_buf(),
            map,
            index,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of every tensor.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// An f32 tensor of exactly `shape` (F32 borrowed from the map; F16/BF16 converted).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>> {
        let (got, dtype, range) = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        if got != shape {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                name: name.into(),
                expected: format!("{shape:?}"),
                got: format!("{got:?}"),
            });
        }
        let bytes = &self.map[range.clone()];
        let half = |f: fn([u8; 2]) -> f32| -> Cow<'_, [f32]> {
            Cow::Owned(bytes.chunks_exact(2).map(|c| f([c[0], c[1]])).collect())
        };
        match dtype {
            Dtype::F32 => Ok(match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            }),
            Dtype::F16 => Ok(half(|b| half::f16::from_le_bytes(b).to_f32())),
            Dtype::BF16 => Ok(half(|b| half::bf16::from_le_bytes(b).to_f32())),
            other => Err(Error::TensorShape {
                path: self.path.clone(),
                name: name.into(),
                expected: "F32, F16 or BF16".into(),
                got: format!("{other:?}"),
            }),
        }
    }
}
