//! `attend._attend`: the compiled half of the Python package. The pure-Python half
//! (`python/attend`) turns PyTorch-style calls into flat, C-contiguous float32 arrays and the
//! sizes below; every function here reads those arrays in place (no copy), releases the GIL
//! while it computes, and hands its results back as NumPy arrays that own the Rust buffers
//! (no copy either). Errors become the exceptions of `attend.errors`; nothing a caller passes
//! ends in a panic.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use attend::{AttnParams, Layout, Mask, MaskScope, Shape};
use attend_models::generate::{generate, CausalLm, GenToken, Sampler, SamplerConfig};
use numpy::{PyArray1, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyType};

// ---------------------------------------------------------------------------------------------
// errors

fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py
        .import("attend.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from))
    {
        Ok(ty) => PyErr::from_type(ty, msg),
        Err(e) => e,
    }
}

fn attend_err(py: Python<'_>, e: attend::Error) -> PyErr {
    use attend::Error as E;
    let msg = e.to_string();
    match e {
        E::ZeroDim { .. }
        | E::HeadsNotDivisible { .. }
        | E::ShapeMismatch { .. }
        | E::KeyLengthOutOfRange { .. }
        | E::TooLarge { .. } => raise(py, "ShapeError", msg),
        E::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        _ => raise(py, "InvalidArgument", msg),
    }
}

fn model_err(py: Python<'_>, e: attend_models::Error) -> PyErr {
    use attend_models::Error as E;
    let msg = e.to_string();
    match e {
        E::Attention(a) => attend_err(py, a),
        E::Io { .. }
        | E::Format { .. }
        | E::MissingTensor { .. }
        | E::TensorShape { .. }
        | E::UnknownModel { .. }
        | E::Fetch { .. } => raise(py, "ModelError", msg),
        E::ContextExceeded { .. } | E::TextLength { .. } | E::Invalid(_) => {
            raise(py, "InvalidArgument", msg)
        }
        _ => raise(py, "AttendError", msg),
    }
}

fn slice<'a, T: numpy::Element>(
    py: Python<'_>,
    what: &str,
    a: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        raise(
            py,
            "ShapeError",
            format!("`{what}` must be C-contiguous (attend.* converts it; this is a bug)"),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// threads

static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// Runs `f` on the pool `set_num_threads` chose (rayon's global pool until then).
fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// Sets the number of threads every later call uses (1 to 1024).
#[pyfunction]
fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    if !(1..=1024).contains(&n) {
        return Err(raise(
            py,
            "InvalidArgument",
            format!("set_num_threads({n}): give 1 to 1024 threads"),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| raise(py, "AttendError", format!("cannot start {n} threads: {e}")))?;
    *POOL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

/// The number of threads calls use.
#[pyfunction]
fn get_num_threads() -> usize {
    on_pool(rayon::current_num_threads)
}

// ---------------------------------------------------------------------------------------------
// attention

/// A boolean (`True` takes part) or additive mask, already broadcast by the Python side.
#[derive(FromPyObject)]
enum MaskArg<'py> {
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
fn forward<'py>(
    py: Python<'py>,
    q: PyReadonlyArrayDyn<'py, f32>,
    k: PyReadonlyArrayDyn<'py, f32>,
    v: PyReadonlyArrayDyn<'py, f32>,
    mut out: PyReadwriteArrayDyn<'py, f32>,
    mut lse: PyReadwriteArrayDyn<'py, f32>,
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
fn weights<'py>(
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
fn backward<'py>(
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
struct LayerCache {
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

// ---------------------------------------------------------------------------------------------
// models

fn resolve_log(py: Python<'_>, name: &str) -> PyResult<std::path::PathBuf> {
    py.detach(|| attend_models::registry::resolve(name, &mut |m| eprintln!("{m}")))
        .map_err(|e| model_err(py, e))
}

fn tokens_list<'py>(
    py: Python<'py>,
    toks: &[attend_models::TokenInfo],
) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<(u32, String, usize, usize)> = toks
        .iter()
        .map(|t| (t.id, t.text.clone(), t.start, t.end))
        .collect();
    PyList::new(py, items)
}

/// A BERT-family sentence encoder (MiniLM and the like).
#[pyclass(module = "attend._attend")]
struct Encoder {
    inner: attend_models::SentenceEncoder,
}

#[pymethods]
impl Encoder {
    #[new]
    fn new(py: Python<'_>, name_or_path: &str) -> PyResult<Self> {
        let dir = resolve_log(py, name_or_path)?;
        let inner = py
            .detach(|| attend_models::SentenceEncoder::load(&dir))
            .map_err(|e| model_err(py, e))?;
        Ok(Encoder { inner })
    }

    /// Embeddings of `texts`, `[n × dim]` flat, and `dim`.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<(Bound<'py, PyArray1<f32>>, usize)> {
        let inner = &self.inner;
        let e = py
            .detach(|| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                on_pool(|| inner.embed(&refs))
            })
            .map_err(|e| model_err(py, e))?;
        let flat: Vec<f32> = e.vectors.into_iter().flatten().collect();
        Ok((PyArray1::from_vec(py, flat), e.dim))
    }

    /// The trace of one text: a dict with `tokens` ((id, text, start, end) tuples),
    /// `attention` (flat `[layers, heads, n, n]`), `layers`, `heads`, `truncated`.
    fn explain<'py>(&self, py: Python<'py>, text: String) -> PyResult<Bound<'py, PyDict>> {
        let inner = &self.inner;
        let (trace, tok) = py
            .detach(|| on_pool(|| inner.trace(&text)))
            .map_err(|e| model_err(py, e))?;
        let d = PyDict::new(py);
        d.set_item("tokens", tokens_list(py, &trace.tokens)?)?;
        d.set_item("layers", trace.layers)?;
        d.set_item("heads", trace.heads)?;
        d.set_item("truncated", tok.truncated)?;
        d.set_item("attention", PyArray1::from_vec(py, trace.attention.clone()))?;
        d.set_item(
            "page",
            Page {
                model: String::new(),
                subtitle: None,
                what: PageOf::Trace(trace),
            },
        )?;
        Ok(d)
    }

    #[getter]
    fn max_len(&self) -> usize {
        self.inner.max_len
    }
}

/// The viewer page of a trace or a generation (attend-viz), made on demand.
#[pyclass(module = "attend._attend")]
struct Page {
    model: String,
    subtitle: Option<String>,
    what: PageOf,
}

enum PageOf {
    Trace(attend_models::Trace),
    Generation(attend_models::GenerationTrace, Vec<f32>),
}

#[pymethods]
impl Page {
    /// The self-contained HTML page titled `model`; `compare` = (query, a, b) positions opens
    /// the comparison with that question.
    #[pyo3(signature = (model=None, compare=None))]
    fn html(
        &self,
        py: Python<'_>,
        model: Option<String>,
        compare: Option<(usize, usize, usize)>,
    ) -> PyResult<String> {
        let mut opts = attend_viz::Options::new(model.as_deref().unwrap_or(&self.model));
        opts.compare = compare;
        opts.subtitle = self.subtitle.clone();
        let what = &self.what;
        py.detach(|| match what {
            PageOf::Trace(t) => attend_viz::trace_page(t, &opts),
            PageOf::Generation(g, lp) => attend_viz::generation_page(g, lp, &opts),
        })
        .map_err(|e| raise(py, "InvalidArgument", e.to_string()))
    }

    /// The sink positions and the head atlas — what the viewer shows per head — as a dict:
    /// `sinks` (positions), and `layer`, `head`, `kv_head`, `entropy`, `sink_share`,
    /// `prev_token`, `distance`, one entry per head (layer-major).
    fn atlas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let grid = match &self.what {
            PageOf::Trace(t) => t.grid(),
            PageOf::Generation(g, _) => g.grid(),
        };
        let sinks = grid.sinks();
        let stats = grid.head_stats(&sinks);
        let d = PyDict::new(py);
        d.set_item("sinks", sinks)?;
        let col = |f: fn(&attend_models::trace::aggregate::HeadStats) -> f32| {
            stats.iter().map(f).collect::<Vec<f32>>()
        };
        d.set_item("layer", stats.iter().map(|s| s.layer).collect::<Vec<_>>())?;
        d.set_item("head", stats.iter().map(|s| s.head).collect::<Vec<_>>())?;
        d.set_item(
            "kv_head",
            stats.iter().map(|s| s.kv_head).collect::<Vec<_>>(),
        )?;
        d.set_item("entropy", PyArray1::from_vec(py, col(|s| s.entropy)))?;
        d.set_item("sink_share", PyArray1::from_vec(py, col(|s| s.sink_share)))?;
        d.set_item("prev_token", PyArray1::from_vec(py, col(|s| s.prev_token)))?;
        d.set_item("distance", PyArray1::from_vec(py, col(|s| s.distance)))?;
        Ok(d)
    }
}

/// A causal language model: SmolLM2 and the GGUF decoders attend runs, or a toy model.
#[pyclass(module = "attend._attend")]
struct CausalLM {
    inner: Arc<dyn CausalLm>,
}

/// One generated token as a dict: `id`, `text` (its display form), `bytes`, `logprob` and,
/// with capture, `attention` (flat `[layers, heads, keys]`).
fn token_dict<'py>(
    py: Python<'py>,
    lm: &dyn CausalLm,
    g: &GenToken,
) -> PyResult<Bound<'py, PyDict>> {
    let tok = lm.tokenizer();
    let d = PyDict::new(py);
    d.set_item("id", g.id)?;
    d.set_item("text", tok.display(g.id))?;
    d.set_item(
        "bytes",
        pyo3::types::PyBytes::new(py, &tok.token_bytes(g.id)),
    )?;
    d.set_item("logprob", g.logprob)?;
    if !g.attention.is_empty() {
        d.set_item("attention", PyArray1::from_vec(py, g.attention.clone()))?;
    }
    Ok(d)
}

fn sampler(
    py: Python<'_>,
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    seed: Option<u64>,
) -> PyResult<Sampler> {
    Sampler::new(SamplerConfig {
        temperature,
        top_k: top_k.unwrap_or(0),
        top_p: top_p.unwrap_or(1.0),
        seed: seed.unwrap_or(0),
    })
    .map_err(|e| model_err(py, e))
}

#[pymethods]
impl CausalLM {
    #[new]
    fn new(py: Python<'_>, name_or_path: &str) -> PyResult<Self> {
        let name = name_or_path.to_string();
        let lm = py
            .detach(|| attend_models::models::load_causal_lm(&name, &mut |m| eprintln!("{m}")))
            .map_err(|e| model_err(py, e))?;
        Ok(CausalLM {
            inner: Arc::from(lm),
        })
    }

    /// The prompt's tokens as (id, text, start, end) tuples.
    fn tokenize<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyList>> {
        let toks = self
            .inner
            .tokenizer()
            .encode(text)
            .map_err(|e| model_err(py, e))?;
        tokens_list(py, &toks)
    }

    #[getter]
    fn layers(&self) -> usize {
        self.inner.layers()
    }

    #[getter]
    fn heads(&self) -> usize {
        self.inner.heads()
    }

    /// Generates after `prompt` (ids): a list of token dicts (see `token_dict`).
    #[pyo3(signature = (prompt, max_tokens, temperature=0.0, top_k=None, top_p=None, seed=None, explain=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: Vec<u32>,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: Option<u64>,
        explain: bool,
    ) -> PyResult<(Bound<'py, PyList>, Option<Page>)> {
        let mut s = sampler(py, temperature, top_k, top_p, seed)?;
        let lm = &*self.inner;
        let toks = py
            .detach(|| {
                let mut toks = Vec::new();
                on_pool(|| {
                    generate(lm, &prompt, max_tokens, &mut s, explain, &mut |g| {
                        toks.push(g.clone());
                        true
                    })
                })
                .map(|_| toks)
            })
            .map_err(|e| model_err(py, e))?;
        let list = PyList::empty(py);
        for g in &toks {
            list.append(token_dict(py, lm, g)?)?;
        }
        let page = if explain && !toks.is_empty() {
            // the prompt as the tokenizer spells each id, offsets one after another
            let tok = lm.tokenizer();
            let mut at = 0;
            let prompt_infos = prompt
                .iter()
                .map(|&id| {
                    let len = tok.token_bytes(id).len();
                    at += len;
                    attend_models::TokenInfo {
                        id,
                        text: tok.display(id),
                        start: at - len,
                        end: at,
                    }
                })
                .collect();
            let g = attend_models::generate::generation_trace(lm, prompt_infos, &toks)
                .map_err(|e| model_err(py, e))?;
            Some(Page {
                model: String::new(),
                subtitle: None,
                what: PageOf::Generation(g, toks.iter().map(|g| g.logprob).collect()),
            })
        } else {
            None
        };
        Ok((list, page))
    }

    /// The same generation, token by token: an iterator of token dicts.
    #[pyo3(signature = (prompt, max_tokens, temperature=0.0, top_k=None, top_p=None, seed=None, explain=false))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: Vec<u32>,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: Option<u64>,
        explain: bool,
    ) -> PyResult<TokenStream> {
        let mut s = sampler(py, temperature, top_k, top_p, seed)?;
        let lm = self.inner.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<GenToken, attend_models::Error>>(1);
        let worker = lm.clone();
        std::thread::spawn(move || {
            let r = on_pool(|| {
                generate(&*worker, &prompt, max_tokens, &mut s, explain, &mut |g| {
                    // a dropped iterator stops the generation
                    tx.send(Ok(g.clone())).is_ok()
                })
            });
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
        Ok(TokenStream {
            lm,
            rx: Mutex::new(rx),
        })
    }
}

/// Tokens as they are generated (a background thread runs the model).
#[pyclass(module = "attend._attend")]
struct TokenStream {
    lm: Arc<dyn CausalLm>,
    rx: Mutex<std::sync::mpsc::Receiver<Result<GenToken, attend_models::Error>>>,
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let rx = &self.rx;
        let next = py.detach(|| rx.lock().unwrap_or_else(|e| e.into_inner()).recv());
        match next {
            Ok(Ok(g)) => token_dict(py, &*self.lm, &g).map(Some),
            Ok(Err(e)) => Err(model_err(py, e)),
            Err(_) => Ok(None),
        }
    }
}

/// Explains a toy model's answer: its trace over `text` (same dict as `Encoder.explain`).
#[pyfunction]
fn toy_explain<'py>(
    py: Python<'py>,
    name_or_path: &str,
    text: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let m = match attend_models::models::load_toy(name_or_path) {
        Some(m) => m.map_err(|e| model_err(py, e))?,
        None => {
            return Err(raise(
                py,
                "ModelError",
                format!("`{name_or_path}` is not a model attend trained"),
            ))
        }
    };
    let tokens = m.config.vocab.encode(text).map_err(|e| model_err(py, e))?;
    let (trace, _) = py
        .detach(|| on_pool(|| m.trace(&tokens)))
        .map_err(|e| model_err(py, e))?;
    let d = PyDict::new(py);
    d.set_item("tokens", tokens_list(py, &trace.tokens)?)?;
    d.set_item("layers", trace.layers)?;
    d.set_item("heads", trace.heads)?;
    d.set_item("truncated", false)?;
    d.set_item("attention", PyArray1::from_vec(py, trace.attention.clone()))?;
    d.set_item(
        "page",
        Page {
            model: name_or_path.to_string(),
            subtitle: None,
            what: PageOf::Trace(trace),
        },
    )?;
    Ok(d)
}

/// What a name is: "encoder", "causal", or "unknown" (then `load` reports the known names).
#[pyfunction]
fn model_kind(name_or_path: &str) -> &'static str {
    if attend_models::models::embedded::get(name_or_path).is_some()
        || attend_models::train::Checkpoint::is_toy_dir(std::path::Path::new(name_or_path))
    {
        return "causal";
    }
    let p = std::path::Path::new(name_or_path);
    if p.extension().is_some_and(|e| e == "gguf") {
        return "causal";
    }
    if p.is_dir() {
        return if p.join("config.json").exists() && p.join("model.safetensors").exists() {
            "encoder"
        } else {
            "causal"
        };
    }
    match attend_models::registry::info(name_or_path) {
        Some(m) if m.family == "bert" => "encoder",
        Some(_) => "causal",
        None => "unknown",
    }
}

/// The known model names, for messages.
#[pyfunction]
fn known_models() -> Vec<String> {
    let mut v: Vec<String> = attend_models::registry::KNOWN
        .iter()
        .map(|m| m.name.to_string())
        .collect();
    v.push("toy-winograd".into());
    v
}

#[pymodule]
fn _attend(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(weights, m)?)?;
    m.add_function(wrap_pyfunction!(backward, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(toy_explain, m)?)?;
    m.add_function(wrap_pyfunction!(model_kind, m)?)?;
    m.add_function(wrap_pyfunction!(known_models, m)?)?;
    m.add_class::<LayerCache>()?;
    m.add_class::<Encoder>()?;
    m.add_class::<CausalLM>()?;
    m.add_class::<TokenStream>()?;
    m.add_class::<Page>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
