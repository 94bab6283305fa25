//! Attention on attend's kernel: `forward` (`attend.sdpa`), `weights`
//! (`attend.attention_weights`), `backward` (`attend.sdpa_backward`) and `LayerCache`
//! (`attend.KVCache`), on flat C-contiguous float32 arrays read in place.

use attend::{AttnParams, Layout, Mask, MaskScope, Shape};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use crate::errors::{attend_err, raise, slice};
use crate::threads::on_pool;

/// A boolean (`True` takes part) or additive mask, already broadcast by the Python side.
#[derive(FromPyObject)]
pub(crate) enum MaskArg<'py> {
    Bool(PyReadonlyArrayDyn<'py, bool>),
    Float(PyReadonlyArrayDyn<'py, f32>),
}

/// What a call says besides its data: `[b, h, s, d]` sizes and the mask's parts.
struct Spec {
    shape: Shape,
    scope: MaskScope,
    window: (Option<usize>, Option<usize>),
    scale: Option<f32>,
    softcap: Option<f32>,
}

/// The borrowed mask data of a call.
enum MaskData<'a> {
    None,
    Bool(&'a [bool]),
    Float(&'a [f32]),
}

impl Spec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        dims: (usize, usize, usize, usize, usize, usize, usize),
        scope: u8,
        window: (Option<usize>, Option<usize>),
        scale: Option<f32>,
        softcap: Option<f32>,
    ) -> Spec {
        let (b, h, h_kv, s_q, s_kv, d, d_v) = dims;
        Spec {
            shape: Shape {
                b,
                h,
                h_kv,
                s_q,
                s_kv,
                d,
                d_v,
            },
            scope: match scope {
                0 => MaskScope::Shared,
                1 => MaskScope::PerBatch,
                _ => MaskScope::PerHead,
            },
            window,
            scale,
            softcap,
        }
    }

    fn params<'a>(&self, mask: &MaskData<'a>, lens: Option<&'a [usize]>) -> AttnParams<'a> {
        let mut m = Mask::none().with_window(self.window.0, self.window.1);
        if let Some(l) = lens {
            m = m.with_key_lengths(l);
        }
        match mask {
            MaskData::None => {}
            MaskData::Bool(k) => m = m.with_bool(k, self.scope),
            MaskData::Float(b) => m = m.with_additive(b, self.scope),
        }
        let mut p = AttnParams::new(self.shape).layout(Layout::Bhsd).mask(m);
        p.scale = self.scale;
        p.softcap = self.softcap;
        p
    }
}

impl Spec {
    /// Runs `f` with the call's parameters on `q`, `k`, `v` read in place, the GIL released,
    /// on the chosen thread pool; a refusal becomes the matching Python exception.
    #[allow(clippy::too_many_arguments)]
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        q: &PyReadonlyArrayDyn<'_, f32>,
        k: &PyReadonlyArrayDyn<'_, f32>,
        v: &PyReadonlyArrayDyn<'_, f32>,
        mask: &Option<MaskArg<'_>>,
        lens: Option<&[usize]>,
        f: impl FnOnce(&AttnParams, &[f32], &[f32], &[f32]) -> attend::Result<R> + Send,
    ) -> PyResult<R> {
        let (qs, ks, vs) = (
            slice(py, "query", q)?,
            slice(py, "key", k)?,
            slice(py, "value", v)?,
        );
        let md = mask_data(py, mask)?;
        let p = self.params(&md, lens);
        py.detach(|| on_pool(|| f(&p, qs, ks, vs)))
            .map_err(|e| attend_err(py, e))
    }
}

fn mask_data<'a>(py: Python<'_>, m: &'a Option<MaskArg<'_>>) -> PyResult<MaskData<'a>> {
    Ok(match m {
        None => MaskData::None,
        Some(MaskArg::Bool(a)) => MaskData::Bool(slice(py, "attn_mask", a)?),
        Some(MaskArg::Float(a)) => MaskData::Float(slice(py, "attn_mask", a)?),
    })
}

type Out<'py> = (Bound<'py, PyArray1<f32>>, Bound<'py, PyArray1<f32>>);
type Grads3<'py> = (
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f32>>,
);

/// The fused forward into `out` (`[b, h, s_q, d_v]`) and `lse` (`[b, h, s_q]`), C-contiguous
/// float32 arrays the caller made (`np.empty`: no zeroing, nothing copied after).
#[pyfunction]
#[pyo3(signature = (q, k, v, out, lse, dims, mask=None, scope=0, window=(None, None), scale=None, softcap=None, key_lengths=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<'py>(
    py: Python<'py>,
    q: PyReadonlyArrayDyn<'py, f32>,
    k: PyReadonlyArrayDyn<'py, f32>,
    v: PyReadonlyArrayDyn<'py, f32>,
    out: Bound<'py, PyArrayDyn<f32>>,
    lse: Bound<'py, PyArrayDyn<f32>>,
    dims: (usize, usize, usize, usize, usize, usize, usize),
    mask: Option<MaskArg<'py>>,
    scope: u8,
    window: (Option<usize>, Option<usize>),
    scale: Option<f32>,
    softcap: Option<f32>,
    key_lengths: Option<Vec<usize>>,
) -> PyResult<()> {
    let spec = Spec::new(dims, scope, window, scale, softcap);
    let not_contiguous = |what: &str| {
        raise(
            py,
            "ShapeError",
            format!("`{what}` must be C-contiguous (attend.* makes it; this is a bug)"),
        )
    };
    // a read-only output, or one sharing memory with an input or the other output, is an
    // error here (numpy's borrow check), not a panic
    let taken = |what: &str| {
        raise(
            py,
            "InvalidArgument",
            format!(
                "`{what}` must be a writable array of its own (not read-only, not sharing \
                 memory with q, k, v or the other output)"
            ),
        )
    };
    let mut out = out.try_readwrite().map_err(|_| taken("out"))?;
    let mut lse = lse.try_readwrite().map_err(|_| taken("lse"))?;
    let o = out.as_slice_mut().map_err(|_| not_contiguous("out"))?;
    let l = lse.as_slice_mut().map_err(|_| not_contiguous("lse"))?;
    spec.run(
        py,
        &q,
        &k,
        &v,
        &mask,
        key_lengths.as_deref(),
        |p, q, k, v| attend::fused::forward_into(p, q, k, v, o, l),
    )
}

/// The exact attention weights `[b, h, s_q, s_kv]` (flat), from the fused forward's lse.
#[pyfunction]
#[pyo3(signature = (q, k, v, dims, mask=None, scope=0, window=(None, None), scale=None, softcap=None, key_lengths=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn weights<'py>(
    py: Python<'py>,
    q: PyReadonlyArrayDyn<'py, f32>,
    k: PyReadonlyArrayDyn<'py, f32>,
    v: PyReadonlyArrayDyn<'py, f32>,
    dims: (usize, usize, usize, usize, usize, usize, usize),
    mask: Option<MaskArg<'py>>,
    scope: u8,
    window: (Option<usize>, Option<usize>),
    scale: Option<f32>,
    softcap: Option<f32>,
    key_lengths: Option<Vec<usize>>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let spec = Spec::new(dims, scope, window, scale, softcap);
    let w = spec.run(
        py,
        &q,
        &k,
        &v,
        &mask,
        key_lengths.as_deref(),
        |p, q, k, v| attend::fused::probabilities(p, q, k, v, None),
    )?;
    Ok(PyArray1::from_vec(py, w))
}

/// The fused backward: `(dq, dk, dv)` (flat, in the inputs' `[b, h, s, d]` layout).
#[pyfunction]
#[pyo3(signature = (dout, q, k, v, out, lse, dims, mask=None, scope=0, window=(None, None), scale=None, softcap=None, key_lengths=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<'py>(
    py: Python<'py>,
    dout: PyReadonlyArrayDyn<'py, f32>,
    q: PyReadonlyArrayDyn<'py, f32>,
    k: PyReadonlyArrayDyn<'py, f32>,
    v: PyReadonlyArrayDyn<'py, f32>,
    out: PyReadonlyArrayDyn<'py, f32>,
    lse: PyReadonlyArrayDyn<'py, f32>,
    dims: (usize, usize, usize, usize, usize, usize, usize),
    mask: Option<MaskArg<'py>>,
    scope: u8,
    window: (Option<usize>, Option<usize>),
    scale: Option<f32>,
    softcap: Option<f32>,
    key_lengths: Option<Vec<usize>>,
) -> PyResult<Grads3<'py>> {
    let spec = Spec::new(dims, scope, window, scale, softcap);
    let (os, ls, ds) = (
        slice(py, "out", &out)?,
        slice(py, "lse", &lse)?,
        slice(py, "grad_out", &dout)?,
    );
    let g = spec.run(
        py,
        &q,
        &k,
        &v,
        &mask,
        key_lengths.as_deref(),
        |p, q, k, v| attend::backward::backward(p, q, k, v, os, ls, ds),
    )?;
    Ok((
        PyArray1::from_vec(py, g.dq),
        PyArray1::from_vec(py, g.dk),
        PyArray1::from_vec(py, g.dv),
    ))
}

/// Keys and values of one attention layer, `[b, h_kv, len, d]`, for decoding.
#[pyclass(module = "attend._attend")]
pub(crate) struct LayerCache {
    inner: attend::LayerCache,
}

#[pymethods]
impl LayerCache {
    #[new]
    fn new(py: Python<'_>, b: usize, h_kv: usize, d: usize, d_v: usize) -> PyResult<Self> {
        attend::LayerCache::new(b, h_kv, d, d_v)
            .map(|inner| LayerCache { inner })
            .map_err(|e| attend_err(py, e))
    }

    /// Appends `n` positions: `k` `[b, h_kv, n, d]`, `v` `[b, h_kv, n, d_v]` (flat).
    fn append(
        &mut self,
        py: Python<'_>,
        k: PyReadonlyArrayDyn<'_, f32>,
        v: PyReadonlyArrayDyn<'_, f32>,
        n: usize,
    ) -> PyResult<()> {
        let (ks, vs) = (slice(py, "key", &k)?, slice(py, "value", &v)?);
        let inner = &mut self.inner;
        py.detach(|| inner.append(ks, vs, n, Layout::Bhsd))
            .map_err(|e| attend_err(py, e))
    }

    /// Attention of `q` (`[b, h, s_q, d]`, flat) over every stored position.
    #[pyo3(signature = (q, h, s_q, causal=true, scale=None, softcap=None, window_left=None))]
    #[allow(clippy::too_many_arguments)]
    fn attend<'py>(
        &self,
        py: Python<'py>,
        q: PyReadonlyArrayDyn<'py, f32>,
        h: usize,
        s_q: usize,
        causal: bool,
        scale: Option<f32>,
        softcap: Option<f32>,
        window_left: Option<usize>,
    ) -> PyResult<Out<'py>> {
        let qs = slice(py, "query", &q)?;
        let c = &self.inner;
        let (b, h_kv, d, d_v) = c.dims();
        let shape = Shape {
            b,
            h,
            h_kv,
            s_q,
            s_kv: c.len(),
            d,
            d_v,
        };
        let mask = Mask::none().with_window(window_left, causal.then_some(0));
        let mut p = AttnParams::new(shape).layout(Layout::Bhsd).mask(mask);
        p.scale = scale;
        p.softcap = softcap;
        let o = py
            .detach(|| on_pool(|| c.attend(&p, qs)))
            .map_err(|e| attend_err(py, e))?;
        Ok((PyArray1::from_vec(py, o.out), PyArray1::from_vec(py, o.lse)))
    }

    fn truncate(&mut self, py: Python<'_>, len: usize) -> PyResult<()> {
        self.inner.truncate(len).map_err(|e| attend_err(py, e))
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// `(b, h_kv, d, d_v)`.
    fn dims(&self) -> (usize, usize, usize, usize) {
        self.inner.dims()
    }
}
