//! # attend-viz — attention you can look at
//!
//! One self-contained HTML page from a [`Trace`] (an encoder's or a toy model's full
//! attention) or a [`GenerationTrace`] (the rows a KV cache produced while generating): HTML,
//! CSS, JS and data inline, no network request of any kind, weights stored compactly
//! ([`encode`]). The page has a model view (every head as a thumbnail), a head view, a token
//! view, a generation view, a comparison table and a head atlas; sinks can be hidden (rows
//! renormalised without them), sub-words merged into words, and the aggregations computed
//! here in Rust (mean of heads, rollout, value-weighted norms) switched in the page.
//!
//! The page defines `window.attendViewer` (see the README): `tokens`, `layers`, `heads`,
//! `row(layer, head, query)`, `generated`, `effect` (a page made with [`Options::effect`]:
//! knockouts and head ablations beside the attention, shown in its effect view), and `ready`
//! (a promise resolved once the weights are decoded).
//!
//! [`picture`] draws the static heatmaps (SVG, and PNG through `resvg`) and the training
//! curves.
//!
//! Invariant: the page is made from what the model computed; nothing here runs a model or
//! recomputes attention.
#![deny(unsafe_code)]

pub mod encode;
pub mod picture;
pub mod training;

use attend_models::trace::aggregate::{self, HeadStats};
use attend_models::{GenerationTrace, Trace};
use serde::Serialize;

/// Errors of the viewer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is nothing to show.
    #[error("nothing to show: {0}")]
    Empty(String),
    /// Options that do not fit the trace.
    #[error("{0}")]
    Invalid(String),
    /// A picture could not be drawn.
    #[error("{0}")]
    Render(String),
}

/// A `Result` with the viewer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A page past this many bytes keeps only each row's largest weights (see [`encode`]).
pub const DEFAULT_BUDGET: usize = 40 << 20;

/// Weights stored in 16 bits when the page holds at most this many, else in 8.
pub const SIXTEEN_BIT_LIMIT: usize = 4 << 20;

/// What to put in a page besides the attention.
#[derive(Clone, Debug)]
pub struct Options {
    /// The model's name, shown in the title.
    pub model: String,
    /// A `--compare` question to open with: query, key A, key B (token positions).
    pub compare: Option<(usize, usize, usize)>,
    /// Most bytes of weight data before rows are cut to their largest weights.
    pub budget: usize,
    /// A line shown under the title (the prediction, say).
    pub subtitle: Option<String>,
    /// Knockouts and head ablations of the same text ([`attend_models::trace::effect`]): the
    /// page gains an effect view and opens on it.
    pub effect: Option<serde_json::Value>,
    /// Open with sub-word pieces merged into words (the words toggle on).
    pub words: bool,
}

impl Options {
    /// Defaults for `model`.
    pub fn new(model: &str) -> Options {
        Options {
            model: model.to_string(),
            compare: None,
            budget: DEFAULT_BUDGET,
            subtitle: None,
            effect: None,
            words: false,
        }
    }
}

/// One switchable map in the page.
#[derive(Clone, Debug, Serialize)]
struct Map {
    id: &'static str,
    label: &'static str,
    /// One matrix per head (else one per layer).
    per_head: bool,
    /// Rows are probabilities (sum to 1): hiding sinks renormalises them.
    probabilities: bool,
    #[serde(flatten)]
    encoded: encode::Encoded,
}

#[derive(Clone, Debug, Serialize)]
struct Generated {
    text: String,
    position: usize,
    logprob: Option<f32>,
}

#[derive(Clone, Debug, Serialize)]
struct Compare {
    query: usize,
    a: usize,
    b: usize,
}

/// Everything the page's script reads.
#[derive(Clone, Debug, Serialize)]
struct Data {
    version: u32,
    model: String,
    subtitle: Option<String>,
    kind: &'static str,
    causal: bool,
    tokens: Vec<String>,
    words: Vec<usize>,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    keys: usize,
    query_pos: Vec<usize>,
    prompt_len: usize,
    generated: Vec<Generated>,
    sinks: Vec<usize>,
    sink_rule: &'static str,
    atlas: Vec<HeadStats>,
    maps: Vec<Map>,
    compare: Option<Compare>,
    notes: Vec<String>,
    effect: Option<serde_json::Value>,
    /// Open with the words toggle on.
    open_words: bool,
}

/// One map to encode: its id and label, whether it has a matrix per head (else per layer),
/// whether its rows are probabilities, how many matrices, and the matrices themselves, made
/// one at a time and handed to a sink (so that a page never holds them all; a second pass
/// makes them again).
struct Source<'a> {
    id: &'static str,
    label: &'static str,
    per_head: bool,
    probabilities: bool,
    matrices: usize,
    make: Matrices<'a>,
}

/// Makes a map's matrices, in order, handing each to the sink it is given.
type Matrices<'a> = Box<dyn Fn(&mut dyn FnMut(&[f32])) + 'a>;

/// The matrices of `(layer, head)` pairs, in order, from `f`.
fn per_head<'a>(
    layers: usize,
    heads: usize,
    f: impl Fn(usize, usize) -> Vec<f32> + 'a,
) -> Matrices<'a> {
    Box::new(move |sink| {
        for l in 0..layers {
            for h in 0..heads {
                sink(&f(l, h));
            }
        }
    })
}

/// Encodes every source within `budget` bytes: dense (16 bits when small) when that fits;
/// past the budget, each row's largest weights, as many as fit. `rows` rows of `keys` per
/// matrix.
fn encode_maps(
    sources: Vec<Source<'_>>,
    rows: usize,
    keys: usize,
    budget: usize,
    notes: &mut Vec<String>,
) -> Vec<Map> {
    let total: usize = sources.iter().map(|s| s.matrices * rows * keys).sum();
    let bits = if total <= SIXTEEN_BIT_LIMIT { 16 } else { 8 };
    // dense, unless even a 16-fold compression could not bring it within the budget; given up
    // as soon as the compressed bytes pass it
    let hopeless = total * (bits as usize / 8) / 16 > budget;
    let dense = if hopeless && keys > 8 {
        None
    } else {
        let mut done = Vec::with_capacity(sources.len());
        let mut used = 0usize;
        let mut over = false;
        for s in &sources {
            let mut w = encode::MapWriter::dense(keys, bits);
            (s.make)(&mut |m| {
                if !over {
                    w.push(m);
                    over = used + w.compressed_len() > budget && keys > 8;
                }
            });
            if over {
                break;
            }
            let e = w.finish();
            used += e.head.len() + e.data.len();
            over = used > budget && keys > 8;
            done.push(e);
        }
        (!over).then_some(done)
    };
    let encoded = match dense {
        Some(d) => d,
        None => {
            // keep `t` of `keys` per row: index (u32) and value (u8), base64
            let all_rows: usize = sources.iter().map(|s| s.matrices * rows).sum();
            let per_weight = 5.0 * 1.37;
            let t = ((budget as f64 / (all_rows as f64 * per_weight)) as usize).clamp(8, keys);
            notes.push(format!(
                "This page would have been over its {:.0} MiB budget: each row keeps its {t} \
                 largest weights of {keys}, and the sum of the others (the remainder) is shown \
                 with it.",
                budget as f64 / (1 << 20) as f64
            ));
            sources
                .iter()
                .map(|s| {
                    let mut w = encode::MapWriter::top(keys, t, 8);
                    (s.make)(&mut |m| w.push(m));
                    w.finish()
                })
                .collect()
        }
    };
    sources
        .into_iter()
        .zip(encoded)
        .map(|(s, encoded)| Map {
            id: s.id,
            label: s.label,
            per_head: s.per_head,
            probabilities: s.probabilities,
            encoded,
        })
        .collect()
}

fn check_compare(opts: &Options, n: usize) -> Result<Option<Compare>> {
    match opts.compare {
        None => Ok(None),
        Some((query, a, b)) if query < n && a < n && b < n => Ok(Some(Compare { query, a, b })),
        Some(c) => Err(Error::Invalid(format!(
            "compare {c:?} names a position past the {n} tokens"
        ))),
    }
}

/// The page of a full trace (every token a query).
pub fn trace_page(trace: &Trace, opts: &Options) -> Result<String> {
    let n = trace.len();
    if n == 0 || trace.layers == 0 || trace.heads == 0 {
        return Err(Error::Empty("the trace has no tokens or no heads".into()));
    }
    let (layers, heads) = (trace.layers, trace.heads);
    let grid = trace.grid();
    let sinks = grid.sinks();
    let mut notes = Vec::new();
    let mut sources: Vec<Source> = vec![
        Source {
            id: "raw",
            label: "raw weights",
            per_head: true,
            probabilities: true,
            matrices: layers * heads,
            make: per_head(layers, heads, |l, h| trace.matrix(l, h)),
        },
        Source {
            id: "mean",
            label: "mean of heads",
            per_head: false,
            probabilities: true,
            matrices: layers,
            make: Box::new(|sink| (0..layers).for_each(|l| sink(&trace.head_mean(l)))),
        },
        Source {
            id: "rollout",
            label: "attention rollout (Abnar & Zuidema 2020)",
            per_head: false,
            probabilities: true,
            matrices: layers,
            make: Box::new(|sink| trace.rollout_each(|_, r| sink(r))),
        },
    ];
    if trace.has_value_norms() {
        sources.push(Source {
            id: "value",
            label: "value-weighted norm ‖α·f(x)‖ (Kobayashi et al. 2020)",
            per_head: true,
            probabilities: false,
            matrices: layers * heads,
            make: per_head(layers, heads, |l, h| {
                trace.value_weighted(l, h).unwrap_or_default()
            }),
        });
        sources.push(Source {
            id: "value-mean",
            label: "value-weighted norm, mean of heads",
            per_head: false,
            probabilities: false,
            matrices: layers,
            make: Box::new(|sink| {
                for l in 0..layers {
                    let mut m = vec![0.0f32; n * n];
                    for h in 0..heads {
                        let v = trace.value_weighted(l, h).unwrap_or_default();
                        m.iter_mut()
                            .zip(&v)
                            .for_each(|(a, b)| *a += b / heads as f32);
                    }
                    sink(&m);
                }
            }),
        });
    } else {
        notes.push(
            "Value-weighted norms are not available: this model did not give its value vectors."
                .into(),
        );
    }
    let maps = encode_maps(sources, n, n, opts.budget, &mut notes);
    let data = Data {
        version: 1,
        model: opts.model.clone(),
        subtitle: opts.subtitle.clone(),
        kind: "trace",
        causal: trace.causal,
        tokens: trace.tokens.iter().map(|t| t.text.clone()).collect(),
        words: aggregate::words(&trace.tokens),
        layers: trace.layers,
        heads: trace.heads,
        kv_heads: trace.kv_heads,
        keys: n,
        query_pos: (0..n).collect(),
        prompt_len: n,
        generated: Vec::new(),
        atlas: grid.head_stats(&sinks),
        sinks,
        sink_rule: aggregate::SINK_RULE,
        maps,
        compare: check_compare(opts, n)?,
        notes,
        effect: opts.effect.clone(),
        open_words: opts.words,
    };
    Ok(page(&data))
}

/// The page of a generation: the rows the KV cache produced, one per generated token.
/// `logprobs` (one per generated token) are shown when given.
pub fn generation_page(gen: &GenerationTrace, logprobs: &[f32], opts: &Options) -> Result<String> {
    let steps = gen.steps();
    if steps == 0 || gen.layers == 0 || gen.heads == 0 {
        return Err(Error::Empty("no token was generated".into()));
    }
    let grid = gen.grid();
    let sinks = grid.sinks();
    let mut notes = vec![format!(
        "Rows are those of the positions that predicted each generated token, as the KV cache \
         produced them during generation ({} prompt tokens, {steps} generated). Rollout and \
         value-weighted norms need every row of every layer, which generation does not keep.",
        gen.prompt_len
    )];
    let (layers, heads, keys) = (gen.layers, gen.heads, gen.keys());
    let sources: Vec<Source> = vec![
        Source {
            id: "raw",
            label: "raw weights",
            per_head: true,
            probabilities: true,
            matrices: layers * heads,
            make: per_head(layers, heads, |l, h| grid.matrix(l, h)),
        },
        Source {
            id: "mean",
            label: "mean of heads",
            per_head: false,
            probabilities: true,
            matrices: layers,
            make: Box::new(|sink| (0..layers).for_each(|l| sink(&grid.head_mean(l)))),
        },
    ];
    let maps = encode_maps(sources, steps, keys, opts.budget, &mut notes);
    let generated = (0..steps)
        .map(|i| Generated {
            text: gen.tokens[gen.prompt_len + i].text.clone(),
            position: gen.prompt_len - 1 + i,
            logprob: logprobs.get(i).copied(),
        })
        .collect();
    let data = Data {
        version: 1,
        model: opts.model.clone(),
        subtitle: opts.subtitle.clone(),
        kind: "generation",
        causal: true,
        tokens: gen.tokens.iter().map(|t| t.text.clone()).collect(),
        words: aggregate::words(&gen.tokens),
        layers: gen.layers,
        heads: gen.heads,
        kv_heads: gen.kv_heads,
        keys,
        query_pos: grid.query_pos.clone(),
        prompt_len: gen.prompt_len,
        generated,
        atlas: grid.head_stats(&sinks),
        sinks,
        sink_rule: aggregate::SINK_RULE,
        maps,
        compare: check_compare(opts, gen.tokens.len())?,
        notes,
        effect: None,
        open_words: opts.words,
    };
    Ok(page(&data))
}

const TEMPLATE: &str = include_str!("../assets/viewer.html");
pub(crate) const CSS: &str = include_str!("../assets/viewer.css");
const JS: &str = include_str!("../assets/viewer.js");

/// `s` safe inside HTML text or a double-quoted attribute.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Fills a template's `{{NAME}}` placeholders in one pass over the template: a value is copied
/// as it is and never searched again, so data that happens to contain `{{JS}}` (a prompt, a
/// model's path) stays data. A placeholder with no value is left as it is.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let extra: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut out = String::with_capacity(template.len() + extra);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let value = after.find("}}").and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn page(data: &Data) -> String {
    // JSON inside a <script> element: `<` only occurs inside strings, where \u003c means it
    let json = serde_json::to_string(data)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    let title = format!("attend · {} · {} tokens", data.model, data.tokens.len());
    fill_template(
        TEMPLATE,
        &[
            ("TITLE", &escape_html(&title)),
            ("CSS", CSS),
            ("DATA", &json),
            ("JS", JS),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use attend_models::TokenInfo;

    fn tok(t: &str, s: usize, e: usize) -> TokenInfo {
        TokenInfo {
            id: 0,
            text: t.into(),
            start: s,
            end: e,
        }
    }

    fn small() -> Trace {
        let n = 3;
        let mut att = Vec::new();
        for _ in 0..2 * 2 {
            att.extend([0.8, 0.1, 0.1, 0.7, 0.2, 0.1, 0.75, 0.15, 0.1]);
        }
        let tokens = vec![
            tok("[CLS]", 0, 0),
            tok("a<b", 0, 3),
            tok("</script>", 4, 13),
        ];
        let mut t = Trace::dense(tokens, (2, 2, 2), false, att).unwrap();
        t.value_norms = vec![1.0; 2 * 2 * n];
        t
    }

    #[test]
    fn the_page_is_self_contained_and_its_data_survives_hostile_tokens() {
        let html = trace_page(&small(), &Options::new("m<x>")).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        // no network: nothing is fetched by URL
        for bad in ["http://", "https://", "src=", "@import", "url("] {
            assert!(!html.contains(bad), "{bad}");
        }
        // the token `</script>` cannot close the data element
        assert_eq!(html.matches("</script>").count(), 2);
        let start = html.find("id=\"attend-data\">").unwrap() + 17;
        let end = start + html[start..].find("</script>").unwrap();
        let v: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(v["tokens"][2], "</script>");
        assert_eq!(v["sinks"], serde_json::json!([0]));
        let ids: Vec<&str> = v["maps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["raw", "mean", "rollout", "value", "value-mean"]);
        assert_eq!(v["maps"][0]["bits"], 16);
        assert_eq!(v["atlas"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn over_budget_rows_keep_their_largest_weights() {
        let n = 64;
        let tokens = (0..n).map(|i| tok(&format!("t{i}"), i, i + 1)).collect();
        // pseudo-random rows (incompressible enough to pass a tiny budget)
        let mut x = 1u32;
        let att = (0..4 * n * n)
            .map(|_| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                (x >> 8) as f32 / (1u32 << 24) as f32 / n as f32
            })
            .collect();
        let t = Trace::dense(tokens, (2, 2, 2), false, att).unwrap();
        let mut o = Options::new("m");
        o.budget = 4096;
        let html = trace_page(&t, &o).unwrap();
        assert!(html.contains("\"encoding\":\"top\""));
        assert!(html.contains("largest weights"));
    }

    #[test]
    fn a_generation_page_names_its_rows() {
        let prompt = vec![tok("<s>", 0, 0), tok("a", 0, 1)];
        let r0 = [0.9f32, 0.1]; // 1 layer, 1 head, 2 keys
        let r1 = [0.8f32, 0.1, 0.1];
        let g = GenerationTrace::new(
            prompt,
            vec![(tok("b", 1, 2), &r0[..]), (tok("c", 2, 3), &r1[..])],
            (1, 1, 1),
        )
        .unwrap();
        let html = generation_page(&g, &[-0.5, -1.0], &Options::new("m")).unwrap();
        assert!(html.contains("\"kind\":\"generation\""));
        assert!(html.contains("\"query_pos\":[1,2]"));
        let empty = Trace::dense(vec![], (2, 2, 2), false, vec![]).unwrap();
        assert!(trace_page(&empty, &Options::new("m")).is_err());
    }

    #[test]
    fn placeholders_in_the_data_stay_data() {
        // A prompt or model name holding the template's own placeholders: the script is
        // pasted once, in its place, and the text survives as typed.
        let prompt = vec![tok("say", 0, 3), tok(" {{JS}}", 3, 10)];
        let r0 = [0.5f32, 0.5];
        let g = GenerationTrace::new(prompt, vec![(tok("{{DATA}}", 10, 18), &r0[..])], (1, 1, 1))
            .unwrap();
        let mut o = Options::new("m {{CSS}} {{TITLE}}");
        o.subtitle = Some("prompt: say {{JS}} now".into());
        let html = generation_page(&g, &[-0.5], &o).unwrap();
        assert_eq!(html.matches(JS).count(), 1);
        assert_eq!(html.matches(CSS).count(), 1);
        assert!(html.contains("say {{JS}} now"));
        assert!(html.contains("{{DATA}}"));
        assert!(html.trim_end().ends_with("</html>"));
        assert_eq!(
            fill_template("a{{X}}b{{Y}}c{{", &[("X", "{{Y}}"), ("Y", "2")]),
            "a{{Y}}b2c{{"
        );
    }
}
