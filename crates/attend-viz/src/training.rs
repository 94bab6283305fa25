//! The training page: a probe sentence's attention as a model learned it — one head's map per
//! snapshot under a scrubber (▶ plays it), beside the loss curve with the snapshot's step
//! marked. One self-contained page, as the viewer is.

use attend_models::TokenInfo;
use base64::Engine;
use serde::Serialize;

use crate::{escape_html, fill_template, Error, Options, Result, CSS};

const TEMPLATE: &str = include_str!("../assets/training.html");
const JS: &str = include_str!("../assets/training.js");

/// What the page shows.
pub struct TrainingView<'a> {
    /// The probe's tokens.
    pub tokens: &'a [TokenInfo],
    /// Layers and heads of the model.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Causal (a query sees only earlier keys).
    pub causal: bool,
    /// Each snapshot: after this many steps, the probe's dense `[layer][head][query][key]`
    /// weights.
    pub snapshots: Vec<(usize, Vec<f32>)>,
    /// Training loss per step.
    pub losses: &'a [f32],
    /// Held-out evaluations: step, loss, accuracy.
    pub evals: Vec<(usize, f32, Option<f32>)>,
    /// The head the page opens on (the task's decisive head), else the last layer's head 0.
    pub head: Option<(usize, usize)>,
}

#[derive(Serialize)]
struct Data<'a> {
    kind: &'static str,
    model: &'a str,
    subtitle: Option<&'a str>,
    tokens: Vec<&'a str>,
    layers: usize,
    heads: usize,
    causal: bool,
    steps: Vec<usize>,
    /// base64 of little-endian u16, `round(w × 65535)`, `[snapshot][layer][head][q][k]`
    maps: String,
    losses: &'a [f32],
    evals: &'a [(usize, f32, Option<f32>)],
    head: (usize, usize),
    /// `head` is the task's decisive head (else just where the page opens).
    decisive: bool,
}

/// The training page of `view`.
pub fn training_page(view: &TrainingView, opts: &Options) -> Result<String> {
    let n = view.tokens.len();
    let per = view.layers * view.heads * n * n;
    if n == 0 || per == 0 || view.snapshots.is_empty() {
        return Err(Error::Empty("no snapshot of the probe's attention".into()));
    }
    let mut bytes = Vec::with_capacity(view.snapshots.len() * per * 2);
    for (step, w) in &view.snapshots {
        if w.len() != per {
            return Err(Error::Invalid(format!(
                "the snapshot at step {step} has {} weights; {per} expected",
                w.len()
            )));
        }
        for &x in w {
            let q = (x.clamp(0.0, 1.0) * 65535.0).round() as u16;
            bytes.extend_from_slice(&q.to_le_bytes());
        }
    }
    let decisive = view
        .head
        .filter(|&(l, h)| l < view.layers && h < view.heads);
    let head = decisive.unwrap_or((view.layers - 1, 0));
    let data = Data {
        kind: "training",
        model: &opts.model,
        subtitle: opts.subtitle.as_deref(),
        tokens: view.tokens.iter().map(|t| t.text.as_str()).collect(),
        layers: view.layers,
        heads: view.heads,
        causal: view.causal,
        steps: view.snapshots.iter().map(|(s, _)| *s).collect(),
        maps: base64::engine::general_purpose::STANDARD.encode(&bytes),
        losses: view.losses,
        evals: &view.evals,
        head,
        decisive: decisive.is_some(),
    };
    let json = serde_json::to_string(&data)
        .map_err(|e| Error::Invalid(e.to_string()))?
        .replace('<', "\\u003c");
    let title = format!(
        "attend · {} · attention being learned · {} snapshots",
        opts.model,
        view.snapshots.len()
    );
    Ok(fill_template(
        TEMPLATE,
        &[
            ("TITLE", &escape_html(&title)),
            ("CSS", CSS),
            ("DATA", &json),
            ("JS", JS),
        ],
    ))
}

/// The training page of a run's snapshots (`attend train --snapshots`, `attend.train(...,
/// snapshots=)`), opening on `decisive` (the Winograd task's decisive head).
pub fn run_page(
    trainer: &attend_models::train::Trainer,
    snapshots: &[attend_models::train::session::Snapshot],
    decisive: Option<(usize, usize)>,
) -> Result<String> {
    let first = &snapshots
        .first()
        .ok_or_else(|| Error::Empty("no snapshot of the probe's attention".into()))?
        .trace;
    let c = &trainer.model.config;
    let view = TrainingView {
        tokens: &first.tokens,
        layers: c.layers,
        heads: c.heads,
        causal: true,
        snapshots: snapshots
            .iter()
            .map(|s| (s.step, s.trace.to_dense()))
            .collect(),
        losses: &trainer.state.losses,
        evals: trainer
            .state
            .evals
            .iter()
            .map(|p| (p.step, p.loss, p.accuracy))
            .collect(),
        head: decisive,
    };
    let mut opts = Options::new("attend train");
    opts.subtitle = Some(format!(
        "{} layers × {} heads, dim {} · seed {}",
        c.layers, c.heads, c.dim, trainer.state.config.seed
    ));
    training_page(&view, &opts)
}
