//! Masks: which query–key pairs take part, and additive biases.
//!
//! A [`Mask`] combines up to three parts, all optional:
//! - a band, in positions aligned bottom-right: query `i` sits at position
//!   `p = s_kv - s_q + i` (what a KV cache needs), and key `j` is kept when
//!   `p - left <= j <= p + right`. Causal is `right = 0`; a sliding window of width `w` is
//!   `left = w - 1, right = 0`;
//! - key padding: batch row `b` keeps keys `j < key_lengths[b]`;
//! - a key list: keys that no query sees, strictly increasing indices into `0..s_kv` (a
//!   knockout: what a token wrote is hidden from every query of the call, at the cost of one
//!   list, never an `s_q × s_kv` matrix);
//! - an explicit mask over `[s_q, s_kv]`, shared, per batch row or per head: boolean
//!   (`true` = take part, as in PyTorch's SDPA) or additive (added to the scaled scores; `-inf`
//!   removes a pair).
//!
//! A query row whose keys are all removed gets an output of zeros and a log-sum-exp of `-inf`
//! (PyTorch gives NaN there; this is where we differ, on purpose).

use crate::shape::{check_len, product, Shape};
use crate::{Error, Result};

/// How an explicit mask broadcasts over batch and heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskScope {
    /// One `[s_q, s_kv]` matrix for every batch row and head.
    Shared,
    /// `[b, s_q, s_kv]`: one matrix per batch row, shared by its heads.
    PerBatch,
    /// `[b, h, s_q, s_kv]`: one matrix per batch row and query head.
    PerHead,
}

/// An explicit mask over query–key pairs.
#[derive(Clone, Copy, Debug)]
pub enum Explicit<'a> {
    /// `true` keeps a pair, `false` removes it.
    Bool {
        /// The mask values.
        keep: &'a [bool],
        /// How they broadcast.
        scope: MaskScope,
    },
    /// Added to the scaled score of each pair; `-inf` removes the pair.
    Additive {
        /// The bias values (finite or `-inf`).
        bias: &'a [f32],
        /// How they broadcast.
        scope: MaskScope,
    },
}

/// Which query–key pairs take part in attention. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mask<'a> {
    /// Keys more than `left` positions before the query's position are removed.
    pub window_left: Option<usize>,
    /// Keys more than `right` positions after the query's position are removed (`0`: causal).
    pub window_right: Option<usize>,
    /// Valid key length per batch row (key padding).
    pub key_lengths: Option<&'a [usize]>,
    /// Keys no query sees (strictly increasing indices into `0..s_kv`).
    pub hidden_keys: Option<&'a [usize]>,
    /// A boolean or additive mask.
    pub explicit: Option<Explicit<'a>>,
}

/// One row of an explicit mask.
#[derive(Clone, Copy)]
pub(crate) enum ExplicitRow<'a> {
    Bool(&'a [bool]),
    Additive(&'a [f32]),
}

impl<'a> Mask<'a> {
    /// Every pair takes part.
    pub fn none() -> Self {
        Mask::default()
    }
    /// Causal, aligned bottom-right: query `i` sees keys `j <= s_kv - s_q + i`.
    pub fn causal() -> Self {
        Mask {
            window_right: Some(0),
            ..Mask::default()
        }
    }
    /// Causal sliding window of `width` keys, the query's own position included
    /// (`width = 1`: each query sees only its own position). A width of 0 is refused when the
    /// mask is used: it is stored as `window_left = Some(usize::MAX)`, a value every call
    /// refuses (an unbounded side is `None`).
    pub fn sliding_window(width: usize) -> Self {
        Mask {
            // width 0 is kept as an impossible marker so that validation can name it
            window_left: Some(width.wrapping_sub(1)),
            window_right: Some(0),
            ..Mask::default()
        }
    }
    /// Sets a general band: keep `p - left <= j <= p + right` (`None`: unbounded on that side).
    pub fn with_window(mut self, left: Option<usize>, right: Option<usize>) -> Self {
        self.window_left = left;
        self.window_right = right;
        self
    }
    /// Adds key padding: batch row `b` keeps keys `j < lengths[b]`.
    pub fn with_key_lengths(mut self, lengths: &'a [usize]) -> Self {
        self.key_lengths = Some(lengths);
        self
    }
    /// Hides keys from every query (strictly increasing indices into `0..s_kv`; an empty
    /// list hides nothing).
    pub fn with_hidden_keys(mut self, keys: &'a [usize]) -> Self {
        self.hidden_keys = Some(keys);
        self
    }
    /// Whether key `j` is in the hidden list.
    pub(crate) fn hides(&self, j: usize) -> bool {
        self.hidden_keys
            .is_some_and(|keys| keys.binary_search(&j).is_ok())
    }
    /// Whether a hidden key falls in `[t0, t1)`.
    pub(crate) fn hides_any(&self, t0: usize, t1: usize) -> bool {
        self.hidden_keys.is_some_and(|keys| {
            let at = keys.partition_point(|&j| j < t0);
            keys.get(at).is_some_and(|&j| j < t1)
        })
    }
    /// Adds a boolean mask (`true` = keep).
    pub fn with_bool(mut self, keep: &'a [bool], scope: MaskScope) -> Self {
        self.explicit = Some(Explicit::Bool { keep, scope });
        self
    }
    /// Adds an additive mask (added to scaled scores; `-inf` removes a pair).
    pub fn with_additive(mut self, bias: &'a [f32], scope: MaskScope) -> Self {
        self.explicit = Some(Explicit::Additive { bias, scope });
        self
    }
    /// Whether the mask removes nothing.
    pub fn is_none(&self) -> bool {
        self.window_left.is_none()
            && self.window_right.is_none()
            && self.key_lengths.is_none()
            && self.hidden_keys.is_none_or(|k| k.is_empty())
            && self.explicit.is_none()
    }

    pub(crate) fn validate(&self, shape: &Shape) -> Result<()> {
        if self.window_left == Some(usize::MAX) {
            return Err(Error::InvalidParameter {
                name: "window",
                reason: "a sliding window must be at least 1 key wide (window_left = \
                         usize::MAX is how sliding_window(0) is stored; use None for an \
                         unbounded side)"
                    .into(),
            });
        }
        if let Some(lens) = self.key_lengths {
            if lens.len() != shape.b {
                return Err(Error::ShapeMismatch {
                    what: "key_lengths",
                    expected: shape.b,
                    got: lens.len(),
                });
            }
            if let Some((batch, &got)) = lens.iter().enumerate().find(|(_, &l)| l > shape.s_kv) {
                return Err(Error::KeyLengthOutOfRange {
                    batch,
                    got,
                    s_kv: shape.s_kv,
                });
            }
        }
        if let Some(keys) = self.hidden_keys {
            if let Some(w) = keys.windows(2).position(|w| w[0] >= w[1]) {
                return Err(Error::InvalidParameter {
                    name: "hidden_keys",
                    reason: format!(
                        "the hidden keys must be strictly increasing: {} is followed by {}",
                        keys[w],
                        keys[w + 1]
                    ),
                });
            }
            if let Some(&j) = keys.iter().find(|&&j| j >= shape.s_kv) {
                return Err(Error::InvalidParameter {
                    name: "hidden_keys",
                    reason: format!("key {j} is hidden but there are {} keys", shape.s_kv),
                });
            }
        }
        if let Some(ex) = self.explicit {
            // saturating products: an overflowing shape asks for a length no slice has
            let expected = |scope: MaskScope| match scope {
                MaskScope::Shared => product(&[shape.s_q, shape.s_kv]),
                MaskScope::PerBatch => product(&[shape.b, shape.s_q, shape.s_kv]),
                MaskScope::PerHead => product(&[shape.b, shape.h, shape.s_q, shape.s_kv]),
            };
            match ex {
                Explicit::Bool { keep, scope } => check_len("bool mask", keep, expected(scope))?,
                Explicit::Additive { bias, scope } => {
                    check_len("additive mask", bias, expected(scope))?;
                    if let Some(index) = bias.iter().position(|x| x.is_nan() || *x == f32::INFINITY)
                    {
                        return Err(Error::NonFinite {
                            what: "additive mask",
                            index,
                            value: bias[index],
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The half-open key range `[lo, hi)` that the band and key padding leave to query `i` of
    /// batch row `b`; empty when `lo >= hi`. Computed in `i128`, so any `usize` window and
    /// shape is exact (no wrap, no saturation that would move the band).
    pub(crate) fn row_range(&self, shape: &Shape, b: usize, i: usize) -> (usize, usize) {
        let p = shape.s_kv as i128 - shape.s_q as i128 + i as i128;
        let len = self
            .key_lengths
            .and_then(|l| l.get(b).copied())
            .unwrap_or(shape.s_kv)
            .min(shape.s_kv);
        let mut hi = len as i128;
        let mut lo = 0i128;
        if let Some(r) = self.window_right {
            hi = hi.min(p + r as i128 + 1);
        }
        if let Some(l) = self.window_left {
            lo = lo.max(p - l as i128);
        }
        // 0 <= hi <= s_kv and 0 <= lo <= hi, so both fit in usize
        let hi = hi.max(0) as usize;
        let lo = (lo.max(0) as usize).min(hi);
        (lo, hi)
    }

    /// The explicit mask's row for `(b, h, i)`, `s_kv` entries long (`None` also when the
    /// indices or the buffer do not hold that row).
    pub(crate) fn explicit_row(
        &self,
        shape: &Shape,
        b: usize,
        h: usize,
        i: usize,
    ) -> Option<ExplicitRow<'a>> {
        let ex = self.explicit?;
        if b >= shape.b || h >= shape.h || i >= shape.s_q {
            return None;
        }
        let at = |scope: MaskScope| {
            let m = match scope {
                MaskScope::Shared => Some(0),
                MaskScope::PerBatch => Some(b),
                MaskScope::PerHead => b.checked_mul(shape.h)?.checked_add(h),
            }?;
            let start = m
                .checked_mul(shape.s_q)?
                .checked_add(i)?
                .checked_mul(shape.s_kv)?;
            Some(start..start.checked_add(shape.s_kv)?)
        };
        Some(match ex {
            Explicit::Bool { keep, scope } => ExplicitRow::Bool(keep.get(at(scope)?)?),
            Explicit::Additive { bias, scope } => ExplicitRow::Additive(bias.get(at(scope)?)?),
        })
    }

    /// Whether pair `(i, j)` of `(b, h)` takes part (bias aside): for the reference kernel and
    /// for tests. A pair outside the shape (`b >= shape.b`, `j >= s_kv`, ...) or one that the
    /// explicit mask's buffer does not cover (a mask the shape would refuse) does not take
    /// part; it never panics.
    pub fn allows(&self, shape: &Shape, b: usize, h: usize, i: usize, j: usize) -> bool {
        if b >= shape.b || h >= shape.h || i >= shape.s_q || j >= shape.s_kv {
            return false;
        }
        let (lo, hi) = self.row_range(shape, b, i);
        if j < lo || j >= hi || self.hides(j) {
            return false;
        }
        match self.explicit {
            None => true,
            Some(_) => match self.explicit_row(shape, b, h, i) {
                Some(ExplicitRow::Bool(r)) => r[j],
                Some(ExplicitRow::Additive(r)) => r[j] != f32::NEG_INFINITY,
                None => false,
            },
        }
    }

    /// The additive bias of pair `(i, j)` of `(b, h)`: 0 without an additive mask, and for a
    /// pair outside the shape or the mask's buffer (never a panic).
    pub fn bias(&self, shape: &Shape, b: usize, h: usize, i: usize, j: usize) -> f32 {
        match self.explicit_row(shape, b, h, i) {
            Some(ExplicitRow::Additive(r)) => r.get(j).copied().unwrap_or(0.0),
            _ => 0.0,
        }
    }
}
