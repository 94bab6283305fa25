//! Masks: which query–key pairs take part, and additive biases.
//!
//! A [`Mask`] combines up to three parts, all optional:
//! - a band, in positions aligned bottom-right: query `i` sits at position
//!   `p = s_kv - s_q + i` (what a KV cache needs), and key `j` is kept when
//!   `p - left <= j <= p + right`. Causal is `right = 0`; a sliding window of width `w` is
//!   `left = w - 1, right = 0`;
//! - key padding: batch row `b` keeps keys `j < key_lengths[b]`;
//! - an explicit mask over `[s_q, s_kv]`, shared, per batch row or per head: boolean
//!   (`true` = take part, as in PyTorch's SDPA) or additive (added to the scaled scores; `-inf`
//!   removes a pair).
//!
//! A query row whose keys are all removed gets an output of zeros and a log-sum-exp of `-inf`
//! (PyTorch gives NaN there; this is where we differ, on purpose).

use crate::shape::{check_len, Shape};
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
    /// mask is used.
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
            && self.explicit.is_none()
    }

    pub(crate) fn validate(&self, shape: &Shape) -> Result<()> {
        if self.window_left == Some(usize::MAX) {
            return Err(Error::InvalidParameter {
                name: "window",
                reason: "a sliding window must be at least 1 key wide".into(),
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
        if let Some(ex) = self.explicit {
            let per = shape.s_q * shape.s_kv;
            let expected = |scope: MaskScope| match scope {
                MaskScope::Shared => per,
                MaskScope::PerBatch => shape.b * per,
                MaskScope::PerHead => shape.b * shape.h * per,
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
    /// batch row `b`; empty when `lo >= hi`.
    pub(crate) fn row_range(&self, shape: &Shape, b: usize, i: usize) -> (usize, usize) {
        let p = (shape.s_kv as isize) - (shape.s_q as isize) + i as isize;
        let mut hi = self.key_lengths.map_or(shape.s_kv, |l| l[b]) as isize;
        let mut lo = 0isize;
        if let Some(r) = self.window_right {
            hi = hi.min(p.saturating_add(r as isize).saturating_add(1));
        }
        if let Some(l) = self.window_left {
            lo = lo.max(p.saturating_sub(l as isize));
        }
        let hi = hi.max(0) as usize;
        let lo = (lo.max(0) as usize).min(hi);
        (lo, hi)
    }

    /// The explicit mask's row for `(b, h, i)`, `s_kv` entries long.
    pub(crate) fn explicit_row(
        &self,
        shape: &Shape,
        b: usize,
        h: usize,
        i: usize,
    ) -> Option<ExplicitRow<'a>> {
        let ex = self.explicit?;
        let at = |scope: MaskScope| {
            let m = match scope {
                MaskScope::Shared => 0,
                MaskScope::PerBatch => b,
                MaskScope::PerHead => b * shape.h + h,
            };
            (m * shape.s_q + i) * shape.s_kv
        };
        Some(match ex {
            Explicit::Bool { keep, scope } => {
                let o = at(scope);
                ExplicitRow::Bool(&keep[o..o + shape.s_kv])
            }
            Explicit::Additive { bias, scope } => {
                let o = at(scope);
                ExplicitRow::Additive(&bias[o..o + shape.s_kv])
            }
        })
    }

    /// Whether pair `(i, j)` of `(b, h)` takes part (bias aside): for the reference kernel and
    /// for tests.
    pub fn allows(&self, shape: &Shape, b: usize, h: usize, i: usize, j: usize) -> bool {
        let (lo, hi) = self.row_range(shape, b, i);
        if j < lo || j >= hi {
            return false;
        }
        match self.explicit_row(shape, b, h, i) {
            Some(ExplicitRow::Bool(r)) => r[j],
            Some(ExplicitRow::Additive(r)) => r[j] != f32::NEG_INFINITY,
            None => true,
        }
    }

    /// The additive bias of pair `(i, j)` of `(b, h)` (0 without an additive mask).
    pub fn bias(&self, shape: &Shape, b: usize, h: usize, i: usize, j: usize) -> f32 {
        match self.explicit_row(shape, b, h, i) {
            Some(ExplicitRow::Additive(r)) => r[j],
            _ => 0.0,
        }
    }
}
