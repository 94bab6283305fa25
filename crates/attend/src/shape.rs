//! The sizes of one attention call, and the checks of buffers against them.
//!
//! Shape vocabulary (used everywhere in this crate): `b` batch, `h` query heads, `h_kv`
//! key/value heads, `s_q` query length, `s_kv` key length, `d` query/key head dim, `d_v` value
//! head dim.

use crate::{Error, Result};

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
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.h / self.h_kv
    }
    /// Elements of `q` (and `dq`).
    pub fn q_len(&self) -> usize {
        self.b * self.h * self.s_q * self.d
    }
    /// Elements of `k` (and `dk`).
    pub fn k_len(&self) -> usize {
        self.b * self.h_kv * self.s_kv * self.d
    }
    /// Elements of `v` (and `dv`).
    pub fn v_len(&self) -> usize {
        self.b * self.h_kv * self.s_kv * self.d_v
    }
    /// Elements of the output (and `dout`).
    pub fn o_len(&self) -> usize {
        self.b * self.h * self.s_q * self.d_v
    }
    /// Elements of the log-sum-exp, `[b, h, s_q]`.
    pub fn lse_len(&self) -> usize {
        self.b * self.h * self.s_q
    }
    /// Elements of the probabilities of all heads, `[b, h, s_q, s_kv]`.
    pub fn probs_len(&self) -> usize {
        self.b * self.h * self.s_q * self.s_kv
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
        if self.h % self.h_kv != 0 {
            return Err(Error::HeadsNotDivisible {
                h: self.h,
                h_kv: self.h_kv,
            });
        }
        Ok(())
    }
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

pub(crate) fn check_finite(what: &'static str, buf: &[f32]) -> Result<()> {
    // A fast all-finite pass first (branch-free within a chunk, so it vectorises); locate the
    // culprit only on failure.
    if buf
        .chunks(512)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
    {
        return Ok(());
    }
    let index = buf.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(Error::NonFinite {
        what,
        index,
        value: buf[index],
    })
}
