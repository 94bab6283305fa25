//! GGUF files (versions 2 and 3): header, metadata, tensor infos, tensor data memory-mapped.
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count; metadata as (string key, `u32` type, value); tensor infos as (string name, `u32`
//! dims, `u64` × dims sizes — innermost first —, `u32` ggml type, `u64` offset into the data
//! section); padding to `general.alignment` (32 by default); the data section. A string is a
//! `u64` length and UTF-8 bytes.
//!
//! Every count, length and offset is checked against the bytes that remain and a documented cap
//! before anything is allocated or read, so a malformed file is a [`GgufError`] naming the byte
//! offset and the problem — never a panic, an out-of-bounds read or a huge allocation. Parsing
//! works on any byte slice ([`Gguf::parse`]), so tests and the fuzzer need no files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::quant::GgmlType;

/// Longest string accepted (keys, token texts, chat templates): 16 MiB.
pub const MAX_STRING: u64 = 16 << 20;
/// Most elements accepted in one metadata array (a vocabulary of 4 M tokens).
pub const MAX_ARRAY: u64 = 1 << 22;
/// Nesting depth of arrays accepted.
pub const MAX_DEPTH: usize = 2;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Most tensors / metadata entries accepted.
pub const MAX_ENTRIES: u64 = 1 << 20;

/// What is wrong with a GGUF file, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at byte {offset}: {what}")]
pub struct GgufError {
    /// Byte offset in the file where the problem was found.
    pub offset: u64,
    /// The problem.
    pub what: String,
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
    /// An array (all elements of one type).
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// The string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    /// The elements, if it is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Sizes, innermost (contiguous) first, as GGUF stores them.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Start of its data, from the start of the file.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl TensorInfo {
    /// Elements in all.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Rows × columns for a matrix (`dims = [cols, rows]`); a vector is one row.
    pub fn matrix(&self) -> Option<(usize, usize)> {
        match self.dims[..] {
            [c] => Some((1, c as usize)),
            [c, r] => Some((r as usize, c as usize)),
            _ => None,
        }
    }
}

/// A parsed GGUF header: version, metadata, tensor infos (data offsets resolved and checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section.
    pub alignment: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, what: impl Into<String>) -> Result<T, GgufError> {
        Err(GgufError {
            offset: self.pos as u64,
            what: what.into(),
        })
    }
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if (n as u64) > self.remaining() {
            return self.err(format!(
                "the file ends inside {what} ({n} bytes needed, {} left)",
                self.remaining()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(GgufError {
                offset: at as u64,
                what: format!("{what}: a string of {len} bytes exceeds the cap of {MAX_STRING}"),
            });
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError {
            offset: at as u64,
            what: format!("{what}: not UTF-8 ({e})"),
        })
    }
    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => {
                let b = self.array::<1>(what)?[0];
                if b > 1 {
                    return Err(GgufError {
                        offset: self.pos as u64 - 1,
                        what: format!("{what}: a bool must be 0 or 1, not {b}"),
                    });
                }
                Value::Bool(b == 1)
            }
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return self.err(format!("{what}: arrays nested deeper than {MAX_DEPTH}"));
                }
                let at = self.pos;
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // every element takes at least one byte: a count beyond the bytes left is a lie
                if n > MAX_ARRAY || n > self.remaining() {
                    return Err(GgufError {
                        offset: at as u64,
                        what: format!(
                            "{what}: an array of {n} elements (cap {MAX_ARRAY}, {} bytes left)",
                            self.remaining()
                        ),
                    });
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(ety, depth + 1, what)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => {
                return Err(GgufError {
                    offset: self.pos as u64 - 4,
                    what: format!("{what}: unknown value type {t}"),
                })
            }
        })
    }
}

impl Gguf {
    /// Parses the header of a GGUF file held in `bytes` (the whole file: tensor data ranges are
    /// checked against its length).
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c.array::<4>("the magic number")?;
        if &magic != b"GGUF" {
            return Err(GgufError {
                offset: 0,
                what: format!("not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"),
            });
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError {
                offset: 4,
                what: format!("GGUF version {version} is not supported (2 and 3 are)"),
            });
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_kv = c.u64("the metadata count")?;
        for (what, n, at) in [("tensors", n_tensors, 8), ("metadata entries", n_kv, 16)] {
            // a tensor info or a metadata entry takes at least 8 + 4 bytes
            if n > MAX_ENTRIES || n > c.remaining() / 12 {
                return Err(GgufError {
                    offset: at,
                    what: format!("{n} {what} cannot fit in the file (cap {MAX_ENTRIES})"),
                });
            }
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let at = c.pos;
            let key = c.string("a metadata key")?;
            let ty = c.u32("a metadata type")?;
            let v = c.value(ty, 0, &format!("metadata `{key}`"))?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(GgufError {
                    offset: at as u64,
                    what: format!("metadata key `{key}` appears twice"),
                });
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 16 => a,
                _ => {
                    return Err(GgufError {
                        offset: 0,
                        what: format!("general.alignment {v:?} is not a power of two ≤ 65536"),
                    })
                }
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = c.pos as u64;
            let name = c.string("a tensor name")?;
            let nd = c.u32("a tensor's dimension count")?;
            if nd == 0 || nd > MAX_DIMS {
                return c.err(format!(
                    "tensor `{name}`: {nd} dimensions (1 to {MAX_DIMS})"
                ));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64("a tensor's size")?);
            }
            let ty_at = c.pos as u64;
            let ty_raw = c.u32("a tensor's type")?;
            let ty = GgmlType::from_u32(ty_raw).ok_or_else(|| GgufError {
                offset: ty_at,
                what: format!("tensor `{name}`: ggml type {ty_raw} is not supported"),
            })?;
            let offset = c.u64("a tensor's offset")?;
            raw.push((at, name, dims, ty, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        if data_start > bytes.len() as u64 && n_tensors > 0 {
            return c.err("the file ends before its data section");
        }
        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashSet::new();
        for (at, name, dims, ty, offset) in raw {
            let bad = |what: String| GgufError {
                offset: at,
                what: format!("tensor `{name}`: {what}"),
            };
            if !names.insert(name.clone()) {
                return Err(bad("the name appears twice".into()));
            }
            let mut elements: u64 = 1;
            for &d in &dims {
                elements = elements
                    .checked_mul(d)
                    .ok_or_else(|| bad(format!("sizes {dims:?} overflow")))?;
            }
            if dims.contains(&0) {
                return Err(bad(format!("a zero size in {dims:?}")));
            }
            let block = ty.block_elems() as u64;
            if dims[0] % block != 0 {
                return Err(bad(format!(
                    "rows of {} elements are not whole {ty:?} blocks of {block}",
                    dims[0]
                )));
            }
            let len = (elements / block)
                .checked_mul(ty.block_bytes() as u64)
                .ok_or_else(|| bad("its byte size overflows".into()))?;
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let start = data_start
                .checked_add(offset)
                .ok_or_else(|| bad("its offset overflows".into()))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| bad("its end overflows".into()))?;
            if end > bytes.len() as u64 {
                return Err(bad(format!(
                    "data [{start}, {end}) runs past the end of the file ({} bytes)",
                    bytes.len()
                )));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                start: start as usize,
                len: len as usize,
            });
        }
        // each tensor's bytes are its own: a type or a size that makes one run into the next
        // (a retyped tensor, a forged offset) is refused here, not found later as a NaN
        let mut extents: Vec<(usize, usize, &str)> = tensors
            .iter()
            .map(|t| (t.start, t.start + t.len, t.name.as_str()))
            .collect();
        extents.sort_unstable();
        for w in extents.windows(2) {
            let ((_, end, a), (start, _, b)) = (w[0], w[1]);
            if end > start {
                return Err(GgufError {
                    offset: data_start,
                    what: format!(
                        "tensor `{a}` (its declared type and sizes make {} bytes) runs into \
                         tensor `{b}` at byte {start}: a tensor's type or size is wrong",
                        end - w[0].0
                    ),
                });
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            alignment,
        })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A tensor's description.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A GGUF file, memory-mapped, with its parsed header.
pub struct GgufFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The header.
    pub header: Gguf,
    map: memmap2::Mmap,
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> crate::Result<GgufFile> {
        let map = super::mmap::map(path)?;
        let header = Gguf::parse(&map).map_err(|e| crate::Error::Format {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            header,
            map,
        })
    }

    /// The bytes of a tensor's data (in range: checked when the header was parsed).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }
}
