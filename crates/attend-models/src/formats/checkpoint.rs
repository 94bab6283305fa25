//! The file helpers of the checkpoints attend writes (the models it trains: see
//! `models::toy::file`): float32 tensors in safetensors, each read checked (shape, type,
//! finite values), the FNV-1a record of a save's files, and whole-or-nothing writes.
//!
//! Invariant: files are written to a temporary name and renamed; nothing here knows a model.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

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

/// Writes `bytes` to `path` whole or not at all ([`super::output::write_output`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    super::output::write_output(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_whole_or_absent() {
        let dir = std::env::temp_dir().join(format!("attend-ck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let partial = || {
            std::fs::read_dir(&dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .contains(".partial")
                })
                .count()
        };
        let p = dir.join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(partial(), 0);
        // a folder in the way: an error, and nothing left behind
        let q = dir.join("sub");
        std::fs::create_dir_all(q.join("inner")).unwrap();
        assert!(write_atomic(&q, b"x").is_err());
        assert_eq!(partial(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
