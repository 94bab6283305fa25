//! Layouts and the parameters of one attention call.

use crate::mask::Mask;
use crate::shape::{check_finite, check_len, Shape};
use crate::{Error, Isa, Result};

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
        self.validate_but_kv_values(q, k, v)?;
        check_finite("k", k)?;
        check_finite("v", v)
    }

    /// [`Self::validate_qkv`] but for the finiteness of `k` and `v`, which the caller checks
    /// (the fused forward does it as it reads them).
    pub(crate) fn validate_but_kv_values(&self, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
        self.validate()?;
        check_len("q", q, self.shape.q_len())?;
        check_len("k", k, self.shape.k_len())?;
        check_len("v", v, self.shape.v_len())?;
        check_finite("q", q)
    }
}
