//! The sizes of one attention call, and the checks of buffers against them.
//!
//! Shape vocabulary (used everywhere in this crate): `b` batch, `h` query heads, `h_kv`
//! key/value heads, `s_q` query length, `s_kv` key length, `d` query/key head dim, `d_v` value
//! head dim.

use crate::{Error, Result};
use attend_kernels::Kern;
use rayon::prelude::*;

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads; `h % h_kv == 0` (MHA: equal, GQA: a divisor, MQA: 1).
    pub h_kv: usize,
    /// Query length.
    pub s_q: usize,
    /// Key/value length.
    pub s_kv: usize,
    /// Query/key head dim.
    pub d: usize,
    /// Value head dim.
    pub d_v: usize,
}

impl Shape {
    /// Multi-head self-attention shape with `d_v = d` and `h_kv = h`.
    pub fn new(b: usize, h: usize, s_q: usize, s_kv: usize, d: usize) -> Self {
        Shape {
            b,
            h,
            h_kv: h,
            s_q,
            s_kv,
            d,
            d_v: d,
        }
    }
    /// The same shape with `h_kv` key/value heads (GQA, MQA).
    pub fn with_kv_heads(mut self, h_kv: usize) -> Self {
        self.h_kv = h_kv;
        self
    }
    /// The same shape with value head dim `d_v`.
    pub fn with_value_dim(mut self, d_v: usize) -> Self {
        self.d_v = d_v;
        self
    }
    /// Query heads per key/value head (0 when `h_kv` is 0, a shape every call refuses).
    pub fn group(&self) -> usize {
        self.h.checked_div(self.h_kv).unwrap_or(0)
    }
    /// Elements of `q` (and `dq`). Like every `*_len`, it saturates at `usize::MAX` for a
    /// shape whose product overflows (no buffer has that length, and every call refuses
    /// such a shape with [`Error::TooLarge`]).
    pub fn q_len(&self) -> usize {
        product(&[self.b, self.h, self.s_q, self.d])
    }
    /// Elements of `k` (and `dk`).
    pub fn k_len(&self) -> usize {
        product(&[self.b, self.h_kv, self.s_kv, self.d])
    }
    /// Elements of `v` (and `dv`).
    pub fn v_len(&self) -> usize {
        product(&[self.b, self.h_kv, self.s_kv, self.d_v])
    }
    /// Elements of the output (and `dout`).
    pub fn o_len(&self) -> usize {
        product(&[self.b, self.h, self.s_q, self.d_v])
    }
    /// Elements of the log-sum-exp, `[b, h, s_q]`.
    pub fn lse_len(&self) -> usize {
        product(&[self.b, self.h, self.s_q])
    }
    /// Elements of the probabilities of all heads, `[b, h, s_q, s_kv]`.
    pub fn probs_len(&self) -> usize {
        product(&[self.b, self.h, self.s_q, self.s_kv])
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (dim, v) in [
            ("b", self.b),
            ("h", self.h),
            ("h_kv", self.h_kv),
            ("s_q", self.s_q),
            ("s_kv", self.s_kv),
            ("d", self.d),
            ("d_v", self.d_v),
        ] {
            if v == 0 {
                return Err(Error::ZeroDim { dim });
            }
        }
        if !self.h.is_multiple_of(self.h_kv) {
            return Err(Error::HeadsNotDivisible {
                h: self.h,
                h_kv: self.h_kv,
            });
        }
        // every buffer of the call (the fused kernel never materialises `s_q·s_kv`; an explicit
        // mask's length is checked against its saturating product)
        for (what, len) in [
            ("q", self.q_len()),
            ("k", self.k_len()),
            ("v", self.v_len()),
            ("out", self.o_len()),
        ] {
            check_size(what, len)?;
        }
        Ok(())
    }
}

/// The most elements one buffer may have: what a `Vec<f32>` can hold (`isize::MAX` bytes).
pub const MAX_ELEMENTS: usize = isize::MAX as usize / 4;

/// The product of `dims`, `usize::MAX` when it overflows.
pub(crate) fn product(dims: &[usize]) -> usize {
    dims.iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x))
        .unwrap_or(usize::MAX)
}

/// Refuses a buffer of `len` elements that no allocation could hold.
pub(crate) fn check_size(what: &'static str, len: usize) -> Result<()> {
    if len > MAX_ELEMENTS {
        return Err(Error::TooLarge {
            what,
            elements: len,
        });
    }
    Ok(())
}

/// `n` zeros, or [`Error::TooLarge`] / [`Error::OutOfMemory`] instead of an abort.
pub(crate) fn zeros(what: &'static str, n: usize) -> Result<Vec<f32>> {
    filled(what, n, 0.0)
}

/// `n` copies of `x`, allocated fallibly.
pub(crate) fn filled(what: &'static str, n: usize, x: f32) -> Result<Vec<f32>> {
    check_size(what, n)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::OutOfMemory { what, elements: n })?;
    v.resize(n, x);
    Ok(v)
}

pub(crate) fn check_len<T>(what: &'static str, buf: &[T], expected: usize) -> Result<()> {
    if buf.len() != expected {
        return Err(Error::ShapeMismatch {
            what,
            expected,
            got: buf.len(),
        });
    }
    Ok(())
}

/// Buffers from this many elements are checked for NaN/inf on every thread.
const PARALLEL_CHECK: usize = 1 << 16;

pub(crate) fn check_finite(what: &'static str, buf: &[f32]) -> Result<()> {
    // A fast all-finite pass first (the SIMD kernel; a large buffer split across the threads,
    // since it is read at memory speed); locate the culprit only on failure.
    let kern = Kern::best();
    let ok = if buf.len() >= PARALLEL_CHECK {
        buf.par_chunks(PARALLEL_CHECK / 4)
            .all(|c| kern.all_finite(c))
    } else {
        kern.all_finite(buf)
    };
    if ok {
        return Ok(());
    }
    let index = buf.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::NonFinite {
        what,
        index,
        value: buf[index],
    })
}
