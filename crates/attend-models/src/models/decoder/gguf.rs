//! The GGUF plumbing of the decoder: metadata read and checked key by key ([`Meta`]), tensors
//! checked against the shapes the decoder expects ([`Weights`]), linear layers in their stored
//! types with an optional bias ([`Linear`]), activations quantised for their products
//! ([`activations`]), and the token checks of a forward pass.
//!
//! Invariant: every number the file declares is checked (range, divisibility, the tensors it
//! implies) before anything is allocated from it; errors name the file and the key or tensor.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::formats::fields::Fields;
use crate::formats::gguf::{GgufFile, TensorInfo};
use crate::quant::{dequantize_row, Activation, QMatrix};
use crate::{Error, Result};
use attend_kernels::tiled::TiledMatrix;
use attend_kernels::Kern;

/// The largest width, vocabulary or context a file may declare; the tensors must then match
/// it, which bounds everything allocated from it.
pub const MAX_DIM: usize = 1 << 24;

/// The most layers a file may declare.
pub const MAX_LAYERS: usize = 1024;

/// Reads `{arch}.…` metadata, each number checked before use (errors name the file and key).
pub struct Meta<'a> {
    /// The file.
    pub file: &'a GgufFile,
    /// Its `general.architecture`, the prefix of its keys.
    pub arch: &'a str,
}

impl Meta<'_> {
    /// `{arch}.{key}`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }

    /// The checks of this file's fields.
    pub fn fields(&self) -> Fields<'_> {
        Fields::of(&self.file.path)
    }

    /// Whether the file has `{arch}.{key}`.
    pub fn has(&self, key: &str) -> bool {
        self.file.header.get(&self.key(key)).is_some()
    }

    /// An integer in `range`; `default` when absent (`None`: required).
    pub fn count(
        &self,
        key: &str,
        default: Option<usize>,
        range: RangeInclusive<usize>,
    ) -> Result<usize> {
        let k = self.key(key);
        let v = match (self.file.header.get(&k), default) {
            (None, Some(d)) => d,
            (None, None) => return Err(self.fields().bad(&k, "is missing")),
            (Some(v), _) => {
                let n = v.as_u64().ok_or_else(|| {
                    self.fields()
                        .bad(&k, format_args!("is {v:?}, not an integer"))
                })?;
                usize::try_from(n).unwrap_or(usize::MAX)
            }
        };
        self.fields().count(&k, v, range)
    }

    /// An integer in `range` when the file has the key, `None` when it has not.
    pub fn optional_count(&self, key: &str, range: RangeInclusive<usize>) -> Result<Option<usize>> {
        if self.has(key) {
            self.count(key, None, range).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A finite positive real in `range`; `default` when absent.
    pub fn real(&self, key: &str, default: f64, range: RangeInclusive<f64>) -> Result<f32> {
        let k = self.key(key);
        let v = match self.file.header.get(&k) {
            None => default,
            Some(v) => v.as_f64().ok_or_else(|| {
                self.fields()
                    .bad(&k, format_args!("is {v:?}, not a number"))
            })?,
        };
        Ok(self.fields().real(&k, v, range, true)? as f32)
    }

    /// A finite positive real in `range` when the file has the key (0 counts as absent, as
    /// llama.cpp's converter writes it for "off"), `None` otherwise.
    pub fn optional_real(&self, key: &str, range: RangeInclusive<f64>) -> Result<Option<f32>> {
        let zero = self
            .file
            .header
            .get(&self.key(key))
            .and_then(|v| v.as_f64())
            .is_some_and(|v| v == 0.0);
        if !self.has(key) || zero {
            return Ok(None);
        }
        self.real(key, 1.0, range).map(Some)
    }

    /// A string key (`None` when absent); a value that is not a string is an error.
    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        let k = self.key(key);
        match self.file.header.get(&k) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| {
                self.fields()
                    .bad(&k, format_args!("is {v:?}, not a string"))
            }),
        }
    }

    /// `{arch}.{key}` given as one boolean per layer (true = local), or as an integer `n`
    /// (every `n`-th layer global, the others local: Gemma's pattern); `None` when absent.
    pub fn layer_pattern(&self, key: &str, n_layers: usize) -> Result<Option<Vec<bool>>> {
        let k = self.key(key);
        let Some(v) = self.file.header.get(&k) else {
            return Ok(None);
        };
        if let Some(a) = v.as_array() {
            let flags: Option<Vec<bool>> = a.iter().map(|x| x.as_bool()).collect();
            return match flags {
                Some(f) if f.len() == n_layers => Ok(Some(f)),
                _ => Err(self.fields().bad(
                    &k,
                    format_args!("is not {n_layers} booleans (one per layer)"),
                )),
            };
        }
        let n = self.count(key, None, 1..=n_layers.max(1))?;
        Ok(Some(every_nth_global(n_layers, n)))
    }
}

/// Layer `i` is global when `(i + 1) % n == 0`, local otherwise (true = local).
pub fn every_nth_global(n_layers: usize, n: usize) -> Vec<bool> {
    (0..n_layers).map(|i| (i + 1) % n != 0).collect()
}

/// `general.architecture` of a GGUF file ("" when absent).
pub fn architecture(file: &GgufFile) -> String {
    file.header
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string()
}

/// Reads a file's tensors, each checked against the shape the model expects and the types
/// attend multiplies by; errors name the file and the tensor.
pub struct Weights<'a> {
    /// The file.
    pub file: &'a GgufFile,
}

impl Weights<'_> {
    fn bad(&self, what: String) -> Error {
        Error::Format {
            path: self.file.path.clone(),
            what,
        }
    }

    /// Whether the file holds tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.file.header.tensor(name).is_some()
    }

    /// The `rows × cols` matrix `name`.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<TensorInfo> {
        let path = &self.file.path;
        let t = self
            .file
            .header
            .tensor(name)
            .ok_or_else(|| Error::MissingTensor {
                path: path.clone(),
                name: name.into(),
            })?;
        if t.matrix() != Some((rows, cols)) {
            return Err(Error::TensorShape {
                path: path.clone(),
                name: name.into(),
                expected: format!("{rows} × {cols}"),
                got: format!("{:?} (innermost first)", t.dims),
            });
        }
        // the type must be one attend multiplies by
        QMatrix::new(t.ty, rows, cols, self.file.data(t))
            .map_err(|e| self.bad(format!("`{name}`: {e}")))?;
        Ok(t.clone())
    }

    /// The linear layer `{name}.weight` (`rows × cols`), with `{name}.bias` when the file has
    /// one.
    pub fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let info = self.matrix(&format!("{name}.weight"), rows, cols)?;
        self.linear_of(info, &format!("{name}.bias"), 0)
    }

    /// `{name}.weight` of `parts.iter().sum()` rows stored as one tensor (a fused QKV or
    /// gate-and-up projection), split into one linear layer per part (each with its slice of
    /// `{name}.bias` when the file has one). Row ranges of a matrix are whole blocks, so the
    /// parts are views of the file's bytes, not copies.
    pub fn split_linear(&self, name: &str, parts: &[usize], cols: usize) -> Result<Vec<Linear>> {
        let rows: usize = parts.iter().sum();
        let info = self.matrix(&format!("{name}.weight"), rows, cols)?;
        let row_bytes = info.ty.row_bytes(cols);
        let mut out = Vec::with_capacity(parts.len());
        let mut r0 = 0;
        for &n in parts {
            let part = TensorInfo {
                name: format!("{} (rows {r0}..{})", info.name, r0 + n),
                dims: vec![cols as u64, n as u64],
                ty: info.ty,
                start: info.start + r0 * row_bytes,
                len: n * row_bytes,
            };
            out.push(self.linear_of(part, &format!("{name}.bias"), r0)?);
            r0 += n;
        }
        Ok(out)
    }

    /// A linear layer of the matrix `info`, repacked for the tiled kernel where the kernels
    /// tile natively, with rows `r0..` of the bias vector `bias` when the file has it.
    fn linear_of(&self, info: TensorInfo, bias: &str, r0: usize) -> Result<Linear> {
        let (rows, _) = info.matrix().unwrap_or((0, 0));
        let bias = match self.file.header.tensor(bias) {
            None => None,
            Some(t) => {
                let n = t.elements() as usize;
                if t.dims.len() != 1 || n < r0 + rows {
                    return Err(Error::TensorShape {
                        path: self.file.path.clone(),
                        name: bias.into(),
                        expected: format!("a vector of {} values", r0 + rows),
                        got: format!("{:?} (innermost first)", t.dims),
                    });
                }
                let all = self.vector(bias, n)?;
                Some(all[r0..r0 + rows].to_vec())
            }
        };
        let tiled = if Kern::best().tiles_natively() {
            matrix(self.file, &info)?
                .tiled()
                .map_err(|e| self.bad(format!("`{}`: {e}", info.name)))?
        } else {
            None
        };
        Ok(Linear {
            info,
            tiled,
            bias,
            dense: Dense::default(),
        })
    }

    /// The `n`-vector `name`, as `f32`.
    pub fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let t = self.matrix(name, 1, n)?;
        let mut out = vec![0.0; n];
        dequantize_row(t.ty, self.file.data(&t), &mut out)?;
        Ok(out)
    }

    /// The `n`-vector `name` when the file holds it.
    pub fn optional_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A linear layer's weights: the tensor in the file, its repacked form when the kernels have a
/// SIMD build for it (AVX-512 VNNI), which every product of quantised activations takes
/// (prompt processing and decoding; `attend_kernels::tiled`), and its bias.
pub struct Linear {
    info: TensorInfo,
    tiled: Option<TiledMatrix>,
    bias: Option<Vec<f32>>,
    dense: Dense,
}

/// A matrix's weights dequantised to `f32`, made on the first product with exact activations
/// and kept: exact mode then multiplies on the kernels' GEMM instead of dequantising every
/// row again for every product (what the effect sweeps, hundreds of forward passes, need).
/// Exact mode thus holds the model in float32, as transformers does.
#[derive(Default)]
pub struct Dense(std::sync::OnceLock<attend_kernels::PackedMatrix>);

impl Dense {
    /// `out[t × rows + j] = row_j · xs[t]` for exact activations `xs` (`None`, nothing done,
    /// for quantised ones: their products stay in the stored types).
    pub fn matmul(&self, m: &QMatrix<'_>, xs: &[Activation], out: &mut [f32]) -> Result<bool> {
        if xs.is_empty() || !xs.iter().all(Activation::is_exact) {
            return Ok(false);
        }
        let (rows, cols) = (m.rows, m.cols);
        if out.len() != xs.len() * rows || xs.iter().any(|x| x.f.len() != cols) {
            return Err(Error::Invalid(format!(
                "a product of {} activations with a {rows} × {cols} matrix",
                xs.len()
            )));
        }
        let w = match self.0.get() {
            Some(w) => w,
            None => {
                let mut w = vec![0.0f32; rows * cols];
                w.par_chunks_mut(cols)
                    .enumerate()
                    .try_for_each(|(r, row)| m.dequantize_row(r, row))?;
                // packed once for the GEMM (a product of a few rows would otherwise repack
                // the whole matrix each time); two threads racing here made the same values,
                // the first is kept
                let packed = attend_kernels::PackedMatrix::pack(&w, rows, cols)?;
                // (a racing thread's equal matrix may win the cell: either is this one)
                self.0.get_or_init(|| packed)
            }
        };
        let x: Vec<f32> = xs.iter().flat_map(|x| x.f.iter().copied()).collect();
        attend_kernels::gemm::matmul_packed(&x, xs.len(), w, out, false)?;
        Ok(true)
    }
}

impl Linear {
    /// `out[t × rows + j] = row_j · xs[t] (+ bias_j)` (as [`QMatrix::matmul`]).
    pub fn matmul(&self, file: &GgufFile, xs: &[Activation], out: &mut [f32]) -> Result<()> {
        let m = matrix(file, &self.info)?;
        match &self.tiled {
            _ if self.dense.matmul(&m, xs, out)? => {}
            Some(t) if xs.len() >= TILED_MIN_ROWS => m.matmul_tiled(t, xs, out)?,
            _ => m.matmul(xs, out)?,
        }
        if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(b.len()) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        }
        Ok(())
    }

    /// The tensor (for the value-weighted norms: a head's slice of the output projection).
    pub fn info(&self) -> &TensorInfo {
        &self.info
    }
}

/// Activation rows from which a product takes the repacked weights: every product, decoding
/// too. The repacked form reads more bytes than the stored blocks (f32 scales: `Q4_1` 24 bytes
/// per 32 weights instead of 20) but needs about an eighth of the instructions per block
/// (sixteen rows in the lanes of one `vpdpbusd`); the dots of the stored blocks ran at half
/// the memory's bandwidth, bound by their instructions. On an Intel Xeon (bench/README.md),
/// SmolLM2 tg64 went from 132–145 to 158–179 tok/s.
const TILED_MIN_ROWS: usize = 1;

/// Tensor `t` of `file` as a matrix.
pub fn matrix<'a>(file: &'a GgufFile, t: &TensorInfo) -> Result<QMatrix<'a>> {
    let (rows, cols) = t
        .matrix()
        .ok_or_else(|| Error::Invalid(format!("`{}` is not a matrix", t.name)))?;
    QMatrix::new(t.ty, rows, cols, file.data(t))
}

/// The rows of `x` as activations of a product (quantised unless `exact`); a NaN or an
/// infinity is an error naming `at` (the layer and the input).
pub fn activations(
    exact: bool,
    x: &[f32],
    width: usize,
    at: impl FnOnce() -> String,
) -> Result<Vec<Activation>> {
    if exact {
        crate::nn::check_finite(x, at)?;
        return Ok(x.par_chunks(width).map(Activation::exact).collect());
    }
    // the quantiser refuses NaN / inf itself (one pass over x, not two); its refusal is
    // given the layer's name and the index in `x`
    x.par_chunks(width)
        .enumerate()
        .map(|(r, row)| Activation::new(row).map_err(|e| (r, e)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|(r, e)| match e {
            attend_kernels::Error::NonFinite { index, value, .. } => Error::NonFinite {
                at: at(),
                index: r * width + index,
                value,
            },
            other => other.into(),
        })
}

/// Checks the token ids and the context of a forward pass of `n` tokens from `pos0`.
pub fn check_tokens(tokens: &[u32], pos0: usize, context: usize, vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(Error::Invalid("no tokens to run".into()));
    }
    if pos0 + tokens.len() > context {
        return Err(Error::Invalid(format!(
            "{} positions exceed the model's context of {context}",
            pos0 + tokens.len(),
        )));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "token id {t} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// The one `.gguf` file in `dir`.
pub fn single_gguf(dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(crate::error::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Invalid(format!(
            "{} holds no .gguf file",
            dir.display()
        ))),
        n => Err(Error::Invalid(format!(
            "{} holds {n} .gguf files; name one",
            dir.display()
        ))),
    }
}

/// A path, or the one `.gguf` file in a folder.
pub fn gguf_path(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        single_gguf(path)
    } else {
        Ok(path.to_path_buf())
    }
}
