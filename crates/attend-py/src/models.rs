//! The models: `Encoder`, `CausalLM` (and its `TokenStream`; `explain` for any causal
//! model), and what a name or path is (`model_kind`, from `attend_models::models::identify`: the Python side
//! looks at no extension or registry family itself).

use std::sync::{Arc, Mutex};

use attend_models::generate::{generate, CausalLm, GenToken, Sampler, SamplerConfig};
use attend_models::models::{self, Kind, Model};
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{model_err, raise};
use crate::page::{Page, PageOf};
use crate::threads::on_pool;

/// Opens what `name` names (a known model is fetched on first use, said on standard error).
fn open(py: Python<'_>, name: &str) -> PyResult<Model> {
    open_with(py, name, attend_models::Precision::Float32)
}

/// [`open`] with a sentence encoder's linear layers at `precision` (int8 on another kind of
/// model is an `InvalidArgument`, raised before anything is fetched).
fn open_with(py: Python<'_>, name: &str, precision: attend_models::Precision) -> PyResult<Model> {
    identify(py, name)?;
    py.detach(|| models::open_with(name, precision, &mut |m| eprintln!("{m}")))
        .map_err(|e| model_err(py, e))
}

/// What `name` is; a name or path that is no model is a `ModelError`.
fn identify(py: Python<'_>, name: &str) -> PyResult<Kind> {
    models::identify(name)
        .map(|(kind, _)| kind)
        .map_err(|e| match e {
            attend_models::Error::Invalid(msg) => raise(py, "ModelError", msg),
            other => model_err(py, other),
        })
}

/// The dict an `Explanation` is made from: `tokens` ((id, text, start, end) tuples),
/// `layers`, `heads`, `kv_heads`, `truncated`, `next` (a causal model's likeliest next
/// tokens, or None) and `page` (the trace, behind the viewer and the queries; the weights
/// are read from it on demand).
fn explanation<'py>(
    py: Python<'py>,
    trace: attend_models::Trace,
    truncated: bool,
    next: Option<Vec<(String, f32)>>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("tokens", tokens_list(py, &trace.tokens)?)?;
    d.set_item("layers", trace.layers)?;
    d.set_item("heads", trace.heads)?;
    d.set_item("kv_heads", trace.kv_heads)?;
    d.set_item("truncated", truncated)?;
    let subtitle = next.as_ref().map(|top| {
        let list: Vec<String> = top.iter().map(|(t, p)| format!("{t} {p:.3}")).collect();
        format!("next token (causal model): {}", list.join(" · "))
    });
    d.set_item("next", next)?;
    d.set_item(
        "page",
        Page {
            model: String::new(),
            subtitle,
            what: PageOf::Trace(trace),
            effect: None,
        },
    )?;
    Ok(d)
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
pub(crate) struct Encoder {
    inner: attend_models::SentenceEncoder,
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (name_or_path, int8 = false))]
    fn new(py: Python<'_>, name_or_path: &str, int8: bool) -> PyResult<Self> {
        let precision = if int8 {
            attend_models::Precision::Int8
        } else {
            attend_models::Precision::Float32
        };
        match open_with(py, name_or_path, precision)? {
            Model::Encoder(inner) => Ok(Encoder { inner: *inner }),
            _ => Err(raise(
                py,
                "ModelError",
                format!("`{name_or_path}` is not a sentence encoder"),
            )),
        }
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
        explanation(py, trace, tok.truncated, None)
    }

    /// What knocking out each token (or word) of `text` and ablating each head do to its
    /// sentence embedding (1 − cos to the unedited one), beside the attention each token
    /// receives: `attend effect`'s JSON document, and the viewer page with its effect view.
    #[pyo3(signature = (text, layers=None, words=false, heads=true))]
    fn effect(
        &self,
        py: Python<'_>,
        text: &str,
        layers: Option<(usize, usize)>,
        words: bool,
        heads: bool,
    ) -> PyResult<(String, Page)> {
        let spec = attend_models::trace::effect::EffectSpec {
            layers: layers.map(|(a, b)| a..b),
            words,
            heads,
            ..Default::default()
        };
        let inner = &self.inner;
        let e = py
            .detach(|| on_pool(|| inner.effect(text, &spec)))
            .map_err(|e| model_err(py, e))?;
        Ok(effect_page(e))
    }

    #[getter]
    fn max_len(&self) -> usize {
        self.inner.max_len
    }
}

/// An effect's JSON document (with its tokens) and its viewer page.
fn effect_page(e: attend_models::trace::effect::Effect) -> (String, Page) {
    let effect = e.to_json();
    let mut v = effect.clone();
    v["tokens"] = serde_json::json!(e.tokens.iter().map(|t| t.text.as_str()).collect::<Vec<_>>());
    let page = Page {
        model: String::new(),
        subtitle: Some(e.headline()),
        what: PageOf::Trace(e.trace),
        effect: Some(effect),
    };
    (v.to_string(), page)
}

/// A causal language model: SmolLM2 and the GGUF decoders attend runs, or a toy model.
#[pyclass(module = "attend._attend")]
pub(crate) struct CausalLM {
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
        match open(py, name_or_path)?.into_causal() {
            Some(lm) => Ok(CausalLM {
                inner: Arc::from(lm),
            }),
            None => Err(raise(
                py,
                "ModelError",
                format!("`{name_or_path}` is a sentence encoder, not a causal language model"),
            )),
        }
    }

    /// The prompt's tokens as (id, text, start, end) tuples; control tokens typed in `text`
    /// are text unless `control_tokens`.
    #[pyo3(signature = (text, control_tokens=false))]
    fn tokenize<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        control_tokens: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let toks = attend_models::models::causal::encode_user(
            self.inner.tokenizer(),
            text,
            control_tokens,
        )
        .map_err(|e| model_err(py, e))?;
        tokens_list(py, &toks)
    }

    /// The attention of every layer × head × query × key over `text` (one forward pass), as
    /// `attend explain --model` computes it, and the likeliest next tokens.
    #[pyo3(signature = (text, control_tokens=false))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        control_tokens: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let lm = &*self.inner;
        let (trace, next) = py
            .detach(|| {
                on_pool(|| attend_models::models::causal::explain_text(lm, text, 3, control_tokens))
            })
            .map_err(|e| model_err(py, e))?;
        explanation(py, trace, false, Some(next))
    }

    /// What knocking out each source token (or word) of `text` and ablating each head do to
    /// the log-probability of `target` (default: the likeliest next token), beside the
    /// attention paid: `attend effect`'s JSON document, and the viewer page of the text with
    /// its effect view.
    #[pyo3(signature = (text, target=None, knockout="later", layers=None, words=false, heads=true, mean_ablation=false, control_tokens=false))]
    #[allow(clippy::too_many_arguments)]
    fn effect(
        &self,
        py: Python<'_>,
        text: &str,
        target: Option<String>,
        knockout: &str,
        layers: Option<(usize, usize)>,
        words: bool,
        heads: bool,
        mean_ablation: bool,
        control_tokens: bool,
    ) -> PyResult<(String, Page)> {
        use attend_models::trace::effect::{Ablation, EffectSpec, Knockout};
        let knockout = match knockout {
            "later" => Knockout::Later,
            "predicting" => Knockout::Predicting,
            other => {
                return Err(raise(
                    py,
                    "InvalidArgument",
                    format!("knockout={other:?}: give \"later\" or \"predicting\""),
                ))
            }
        };
        let spec = EffectSpec {
            knockout,
            layers: layers.map(|(a, b)| a..b),
            words,
            groups: None,
            heads,
            ablation: if mean_ablation {
                Ablation::Mean
            } else {
                Ablation::Zero
            },
            reuse: true,
        };
        let lm = &*self.inner;
        let e = py
            .detach(|| {
                on_pool(|| {
                    attend_models::models::causal::effect_text(
                        lm,
                        text,
                        target.as_deref(),
                        &spec,
                        control_tokens,
                    )
                })
            })
            .map_err(|e| model_err(py, e))?;
        Ok(effect_page(e))
    }

    /// Whether `effect` runs (GGUF decoders) or refuses (the toy models).
    #[getter]
    fn has_interventions(&self) -> bool {
        self.inner.has_interventions()
    }

    /// Computes with float32 activations (what transformers computes on the same file)
    /// instead of 8-bit ones; returns whether the model has such a switch.
    fn set_exact(&mut self, exact: bool) -> bool {
        match Arc::get_mut(&mut self.inner) {
            Some(m) => m.set_exact(exact),
            None => false,
        }
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
                effect: None,
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
pub(crate) struct TokenStream {
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

/// What a name or path is, without loading it: "encoder", or "causal" (a GGUF decoder or a
/// model attend trained); anything else raises `ModelError` saying what was looked for.
#[pyfunction]
pub(crate) fn model_kind(py: Python<'_>, name_or_path: &str) -> PyResult<&'static str> {
    Ok(match identify(py, name_or_path)? {
        Kind::Encoder => "encoder",
        Kind::Causal | Kind::Toy => "causal",
    })
}

/// The known model names, for messages.
#[pyfunction]
pub(crate) fn known_models() -> Vec<&'static str> {
    models::known_names()
}
