//! Shapes, layouts and the parameters of one attention call.
//!
//! Shape vocabulary (used everywhere in this crate): `b` batch, `h` query heads, `h_kv`
//! key/value heads, `s_q` query length, `s_kv` key length, `d` query/key head dim, `d_v` value
//! head dim.

use crate::mask::Mask;
use crate::{Error, Isa, Result};

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

/// How `q`, `k`, `v` and the output are laid out in memory (row-major, `f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[b, h, s, d]`: each head's rows contiguous (PyTorch's SDPA layout).
    #[default]
    Bhsd,
    /// `[b, s, h, d]`: each token's heads contiguous (what a linear projection writes).
    Bshd,
}

/// Element strides of a 4-d tensor whose last dim is contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Strides {
    pub batch: usize,
    pub head: usize,
    pub row: usize,
}

impl Strides {
    pub(crate) fn of(layout: Layout, heads: usize, seq: usize, dim: usize) -> Strides {
        match layout {
            Layout::Bhsd => Strides {
                batch: heads * seq * dim,
                head: seq * dim,
                row: dim,
            },
            Layout::Bshd => Strides {
                batch: seq * heads * dim,
                head: dim,
                row: heads * dim,
            },
        }
    }
    pub(crate) fn at(&self, b: usize, h: usize, s: usize) -> usize {
        b * self.batch + h * self.head + s * self.row
    }
}

/// Everything about one attention call except the data.
///
/// ```
/// use attend::{AttnParams, Mask, Shape};
/// let p = AttnParams::new(Shape::new(1, 2, 5, 5, 8)).mask(Mask::causal()).scale(0.5);
/// assert_eq!(p.effective_scale(), 0.5);
/// ```
#[derive(Clone, Debug)]
pub struct AttnParams<'a> {
    /// The sizes.
    pub shape: Shape,
    /// Memory layout of `q`, `k`, `v`, the output and the gradients.
    pub layout: Layout,
    /// Which query–key pairs take part.
    pub mask: Mask<'a>,
    /// Softmax scale; `None` means `1/sqrt(d)`.
    pub scale: Option<f32>,
    /// Logit soft-capping: scores become `cap * tanh(score / cap)` before masking.
    pub softcap: Option<f32>,
    /// Which instruction set the fused kernels use.
    pub isa: Isa,
}

impl<'a> AttnParams<'a> {
    /// Parameters with no mask, default scale, layout `[b, h, s, d]`, automatic ISA.
    pub fn new(shape: Shape) -> Self {
        AttnParams {
            shape,
            layout: Layout::Bhsd,
            mask: Mask::none(),
            scale: None,
            softcap: None,
            isa: Isa::Auto,
        }
    }
    /// Sets the layout.
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
    /// Sets the mask.
    pub fn mask(mut self, mask: Mask<'a>) -> Self {
        self.mask = mask;
        self
    }
    /// Overrides the scale.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Sets a logit soft-cap.
    pub fn softcap(mut self, cap: f32) -> Self {
        self.softcap = Some(cap);
        self
    }
    /// Chooses the instruction set of the fused kernels.
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }
    /// The scale in force: the override, or `1/sqrt(d)`.
    pub fn effective_scale(&self) -> f32 {
        self.scale.unwrap_or(1.0 / (self.shape.d as f32).sqrt())
    }

    pub(crate) fn q_strides(&self) -> Strides {
        Strides::of(self.layout, self.shape.h, self.shape.s_q, self.shape.d)
    }
    pub(crate) fn k_strides(&self) -> Strides {
        Strides::of(self.layout, self.shape.h_kv, self.shape.s_kv, self.shape.d)
    }
    pub(crate) fn v_strides(&self) -> Strides {
        Strides::of(
            self.layout,
            self.shape.h_kv,
            self.shape.s_kv,
            self.shape.d_v,
        )
    }
    pub(crate) fn o_strides(&self) -> Strides {
        Strides::of(self.layout, self.shape.h, self.shape.s_q, self.shape.d_v)
    }

    /// Checks shape, scale, soft-cap and mask (not the data buffers).
    pub(crate) fn validate(&self) -> Result<()> {
        self.shape.validate()?;
        if let Some(s) = self.scale {
            if !(s.is_finite() && s > 0.0) {
                return Err(Error::InvalidParameter {
                    name: "scale",
                    reason: format!("must be finite and positive, got {s}"),
                });
            }
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::InvalidParameter {
                    name: "softcap",
                    reason: format!("must be finite and positive, got {c}"),
                });
            }
        }
        self.mask.validate(&self.shape)
    }

    /// Validates `q`, `k`, `v` against the shape: lengths and finiteness.
    pub(crate) fn validate_qkv(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
        self.validate()?;
        check_len("q", q, self.shape.q_len())?;
        check_len("k", k, self.shape.k_len())?;
        check_len("v", v, self.shape.v_len())?;
        check_finite("q", q)?;
        check_finite("k", k)?;
        check_finite("v", v)
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
