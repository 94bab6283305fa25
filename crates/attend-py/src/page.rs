//! The viewer page of a trace or a generation (`attend-viz`), made on demand, and the
//! questions asked of an explanation (`attend_models::trace::query`: find a token, top-k,
//! compare, the JSON document) — Python's `Explanation` calls these, so it answers exactly
//! as `attend explain` does.

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use attend_models::trace::query::{self, HeadSel};

use crate::errors::raise;
/// The viewer page of a trace or a generation (attend-viz), made on demand.
#[pyclass(module = "attend._attend")]
pub(crate) struct Page {
    pub(crate) model: String,
    pub(crate) subtitle: Option<String>,
    pub(crate) what: PageOf,
    /// Knockouts and head ablations of the same text (`attend effect`'s JSON): the page's
    /// effect view.
    pub(crate) effect: Option<serde_json::Value>,
}

impl Page {
    fn tokens(&self) -> &[attend_models::TokenInfo] {
        match &self.what {
            PageOf::Trace(t) => &t.tokens,
            PageOf::Generation(g, _) => &g.tokens,
        }
    }

    fn trace(&self, py: Python<'_>) -> PyResult<&attend_models::Trace> {
        match &self.what {
            PageOf::Trace(t) => Ok(t),
            PageOf::Generation(..) => Err(raise(
                py,
                "InvalidArgument",
                "a generation's page holds rows, not a square trace".into(),
            )),
        }
    }
}

pub(crate) enum PageOf {
    Trace(attend_models::Trace),
    Generation(attend_models::GenerationTrace, Vec<f32>),
}

#[pymethods]
impl Page {
    /// The page's tokens as (id, text, start, end) tuples (`attend.view` reads the offsets
    /// `external_page` gave them here, rather than computing them again).
    fn token_infos(&self) -> Vec<(u32, String, usize, usize)> {
        self.tokens()
            .iter()
            .map(|t| (t.id, t.text.clone(), t.start, t.end))
            .collect()
    }

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
        opts.effect = self.effect.clone();
        let what = &self.what;
        py.detach(|| match what {
            PageOf::Trace(t) => attend_viz::trace_page(t, &opts),
            PageOf::Generation(g, lp) => attend_viz::generation_page(g, lp, &opts),
        })
        .map_err(|e| raise(py, "InvalidArgument", e.to_string()))
    }

    /// The position of the token `what` names (a position, or the first token whose text
    /// matches, spaces, one `##` and case aside), as `attend explain --token` finds it.
    fn index(&self, py: Python<'_>, what: &str) -> PyResult<usize> {
        let tokens = self.tokens();
        query::find_token(tokens, what).ok_or_else(|| {
            raise(
                py,
                "InvalidArgument",
                format!(
                    "`{what}` is not a token of this text; the tokens are {}",
                    query::token_list(tokens)
                ),
            )
        })
    }

    /// Every layer × head by the weight query `q` gives key `a` against key `b`, largest
    /// margin first (`attend explain --compare`): a list of (layer, head, a, b).
    fn compare(
        &self,
        py: Python<'_>,
        q: usize,
        a: usize,
        b: usize,
    ) -> PyResult<Vec<(usize, usize, f32, f32)>> {
        let t = self.trace(py)?;
        let n = t.len();
        if q >= n || a >= n || b >= n {
            return Err(raise(
                py,
                "InvalidArgument",
                format!("positions {q}, {a}, {b} are not all below {n}"),
            ));
        }
        Ok(query::compare(t, q, a, b)
            .rows
            .into_iter()
            .map(|r| (r.layer, r.head, r.a, r.b))
            .collect())
    }

    /// The `k` keys query `q` attends to most in `layer` (one head, or the mean of the
    /// layer's heads when `head` is None): a list of (position, weight).
    #[pyo3(signature = (layer, head, q, k))]
    fn top(
        &self,
        py: Python<'_>,
        layer: usize,
        head: Option<usize>,
        q: usize,
        k: usize,
    ) -> PyResult<Vec<(usize, f32)>> {
        let t = self.trace(py)?;
        let n = t.len();
        if layer >= t.layers || head.is_some_and(|h| h >= t.heads) || q >= n {
            return Err(raise(
                py,
                "InvalidArgument",
                format!("layer {layer}, head {head:?}, query {q} out of range"),
            ));
        }
        let sel = head.map_or(HeadSel::Mean, HeadSel::One);
        let w = t.weights(layer, sel);
        Ok(query::top(&w[q * n..][..n], k))
    }

    /// Every weight, `[layer][head][query][key]` flat (`n²` floats per head).
    fn dense<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let t = self.trace(py)?;
        let v = py.detach(|| t.to_dense());
        Ok(PyArray1::from_vec(py, v))
    }

    /// The `[query][key]` matrix of `(layer, head)`, flat.
    fn matrix<'py>(
        &self,
        py: Python<'py>,
        layer: usize,
        head: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let t = self.trace(py)?;
        if layer >= t.layers || head >= t.heads {
            return Err(raise(
                py,
                "InvalidArgument",
                format!("layer {layer}, head {head} out of range"),
            ));
        }
        Ok(PyArray1::from_vec(py, t.matrix(layer, head)))
    }

    /// `attend explain --format json`'s document, titled `model`.
    fn to_json(&self, py: Python<'_>, model: &str) -> PyResult<String> {
        Ok(query::explain_json(model, self.trace(py)?, None, None).to_string())
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

/// Writes `data` to `path` with attend's one output writer (`attend_models::formats::output`):
/// a regular file replaced whole, keeping its mode; a new file `0666 & ~umask`; a link written
/// through; a device or FIFO in place; `-` standard output. Raises `OSError` naming the path.
#[pyfunction]
pub(crate) fn write_output(py: Python<'_>, path: std::path::PathBuf, data: &[u8]) -> PyResult<()> {
    let data = data.to_vec();
    py.detach(|| attend_models::formats::output::write_output(&path, &data))
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
}

/// The viewer's data for attention computed elsewhere (`attend.view`): `attention` flat
/// `[layer][head][query][key]` float32, checked by the caller (finite, rows summing to 1).
/// Square (`queries == keys == len(tokens)`): a trace, as `explain` gives. Rectangular
/// (`queries < keys`, `len(tokens) == keys + 1`): the rows of the last `queries` positions,
/// each over the keys it saw, as generation's page shows them (row `r` predicted token
/// `keys - queries + 1 + r`).
#[pyfunction]
#[pyo3(signature = (attention, tokens, layers, heads, kv_heads, queries, keys, causal))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn external_page(
    py: Python<'_>,
    attention: numpy::PyReadonlyArrayDyn<'_, f32>,
    tokens: Vec<String>,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    keys: usize,
    causal: bool,
) -> PyResult<Page> {
    let a = crate::errors::slice(py, "attention", &attention)?;
    let bad = |m: String| raise(py, "ShapeError", m);
    let want = layers
        .checked_mul(heads)
        .and_then(|x| x.checked_mul(queries))
        .and_then(|x| x.checked_mul(keys))
        .ok_or_else(|| bad("the attention's sizes overflow".into()))?;
    if a.len() != want {
        return Err(bad(format!(
            "attention has {} weights; {layers} × {heads} × {queries} × {keys} expected",
            a.len()
        )));
    }
    // offsets as if the tokens were words of a text: a space between two tokens, except before
    // a WordPiece continuation (`##…`) or a token that carries its own space mark (` `, `Ġ`,
    // `▁`), so that the page's words merge exactly the pieces of a word
    let mut at = 0;
    let infos: Vec<attend_models::TokenInfo> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if i > 0 && !joins_previous(&t) {
                at += 1;
            }
            let start = at;
            at += t.len();
            attend_models::TokenInfo {
                id: 0,
                text: t,
                start,
                end: at,
            }
        })
        .collect();
    let model_err = |e: attend_models::Error| raise(py, "ShapeError", e.to_string());
    let what = if queries == keys {
        if infos.len() != keys {
            return Err(bad(format!(
                "{} tokens for a {keys} × {keys} attention",
                infos.len()
            )));
        }
        PageOf::Trace(
            attend_models::Trace::dense(infos, (layers, heads, kv_heads), causal, a.to_vec())
                .map_err(model_err)?,
        )
    } else {
        if queries > keys || infos.len() != keys + 1 {
            return Err(bad(format!(
                "rectangular rows ({queries} queries × {keys} keys) are the last queries of a \
                 generation: give at most as many queries as keys and keys + 1 tokens (the \
                 text with the last generated token), not {}",
                infos.len()
            )));
        }
        let prompt_len = keys - queries + 1;
        // each step's row [layer][head][seen keys]
        let rows: Vec<Vec<f32>> = (0..queries)
            .map(|r| {
                let seen = prompt_len + r;
                let mut row = Vec::with_capacity(layers * heads * seen);
                for lh in 0..layers * heads {
                    let base = (lh * queries + r) * keys;
                    row.extend_from_slice(&a[base..base + seen]);
                }
                row
            })
            .collect();
        let prompt = infos[..prompt_len].to_vec();
        let generated = infos[prompt_len..]
            .iter()
            .cloned()
            .zip(rows.iter().map(Vec::as_slice))
            .collect();
        PageOf::Generation(
            attend_models::GenerationTrace::new(prompt, generated, (layers, heads, kv_heads))
                .map_err(model_err)?,
            Vec::new(),
        )
    };
    Ok(Page {
        model: String::new(),
        subtitle: None,
        what,
        effect: None,
    })
}

/// Whether token text `t` continues the previous token's word, or marks its own space.
fn joins_previous(t: &str) -> bool {
    t.starts_with("##") || t.starts_with([' ', '\u{120}', '\u{2581}'])
}
