//! `attend explain`: which tokens each token attends to, in a real model on attend's kernel.

use std::io::Write;

use anyhow::{Context, Result};
use attend_models::Trace;
use serde_json::json;

use crate::render;

/// Output formats of `attend explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainFormat {
    /// Tables on the terminal.
    Text,
    /// `{"model", "layers", "heads", "tokens", "attention": [layer][head][query][key]}`.
    Json,
    /// A labelled heatmap (a grid of every head with `--head all`).
    Svg,
    /// The same heatmap as a PNG image (needs `-o FILE` or a redirected stdout).
    Png,
}

/// Arguments of `attend explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Model: a name (`attend models`), a BERT-family folder, or a folder from `attend train`.
    #[arg(long, default_value = "minilm")]
    model: String,
    /// Layer to show: a number from 0, or `all` [default: the last layer].
    #[arg(long)]
    layer: Option<String>,
    /// Head to show: a number from 0, `all`, or `mean` (the average of the layer's heads).
    #[arg(long, default_value = "mean")]
    head: String,
    /// Only this query token: its text (first match, case-insensitive) or its index.
    #[arg(long)]
    token: Option<String>,
    /// How many attended tokens to list per query.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// With --token: for every layer × head, the weight the token gives A and B, ranked
    /// (for a causal model, without --token: the last position, which predicts the next token).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<String>>,
    /// Output format [default: from the extension of -o (.json, .svg, .png), else text].
    #[arg(long, value_enum)]
    format: Option<ExplainFormat>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// The text (`-` reads standard input).
    text: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum HeadSel {
    Mean,
    One(usize),
}

fn pick_layers(arg: &Option<String>, layers: usize) -> Result<Vec<usize>> {
    match arg.as_deref() {
        None => Ok(vec![layers - 1]),
        Some("all") => Ok((0..layers).collect()),
        Some(s) => match s.parse::<usize>() {
            Ok(l) if l < layers => Ok(vec![l]),
            _ => Err(crate::usage!(
                "--layer {s} is out of range: give 0..={} or `all`",
                layers - 1
            )),
        },
    }
}

fn pick_heads(arg: &str, heads: usize) -> Result<Vec<HeadSel>> {
    match arg {
        "mean" => Ok(vec![HeadSel::Mean]),
        "all" => Ok((0..heads).map(HeadSel::One).collect()),
        s => match s.parse::<usize>() {
            Ok(h) if h < heads => Ok(vec![HeadSel::One(h)]),
            _ => Err(crate::usage!(
                "--head {s} is out of range: give 0..={}, `all` or `mean`",
                heads - 1
            )),
        },
    }
}

fn norm(t: &str) -> String {
    t.trim_start_matches("##").to_lowercase()
}

/// A token by index or text (first match).
fn find_token(trace: &Trace, what: &str, flag: &str) -> Result<usize> {
    if let Ok(i) = what.parse::<usize>() {
        if i < trace.len() {
            return Ok(i);
        }
    }
    let w = norm(what);
    trace
        .tokens
        .iter()
        .position(|t| norm(&t.text) == w)
        .ok_or_else(|| {
            let list: Vec<String> = trace
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i}:{}", t.text))
                .collect();
            crate::usage!(
                "{flag} `{what}` is not a token of this text; the tokens are {}",
                list.join(" ")
            )
        })
}

fn weights(trace: &Trace, layer: usize, head: HeadSel) -> Vec<f32> {
    match head {
        HeadSel::Mean => trace.head_mean(layer),
        HeadSel::One(h) => trace.matrix(layer, h).to_vec(),
    }
}

fn head_name(h: HeadSel, heads: usize) -> String {
    match h {
        HeadSel::Mean => format!("mean of {heads} heads"),
        HeadSel::One(h) => format!("head {h}"),
    }
}

/// One row of the `--compare` table.
struct Versus {
    layer: usize,
    head: usize,
    a: f32,
    b: f32,
}

/// Runs `attend explain`.
pub fn run(args: &ExplainArgs) -> Result<()> {
    let format = args.format.unwrap_or_else(|| {
        let ext = args.output.as_ref().and_then(|p| p.extension());
        match ext
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => ExplainFormat::Json,
            Some("svg") => ExplainFormat::Svg,
            Some("png") => ExplainFormat::Png,
            _ => ExplainFormat::Text,
        }
    });
    if format == ExplainFormat::Png
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(crate::usage!(
            "--format png writes an image: give -o FILE.png or redirect standard output"
        ));
    }
    let text = if args.text == "-" {
        crate::input::texts(&[])?.join("\n")
    } else {
        args.text.clone()
    };
    // a causal model attend trained (toy-winograd, or a folder from `attend train`), else a
    // BERT-family encoder
    let (trace, prediction) = match crate::input::toy_model(&args.model)? {
        Some(m) => {
            let tokens = m
                .config
                .vocab
                .encode(&text)
                .map_err(|e| crate::usage!("{e}"))?;
            if tokens.is_empty() || tokens.len() > m.config.ctx {
                return Err(crate::usage!(
                    "the text has {} tokens; this model reads 1 to {}",
                    tokens.len(),
                    m.config.ctx
                ));
            }
            let (trace, logits) = m.trace(&tokens)?;
            let top = top_predictions(&logits, 3)
                .into_iter()
                .map(|(id, p)| (m.config.vocab.token_text(id), p))
                .collect::<Vec<_>>();
            (trace, Some(top))
        }
        None => {
            let enc = crate::input::encoder(&args.model)?;
            let (trace, tok) = enc.trace(&text)?;
            if tok.truncated {
                eprintln!(
                    "warning: the text is longer than {} tokens; it was truncated",
                    enc.max_len
                );
            }
            (trace, None)
        }
    };
    let causal = prediction.is_some();
    if args.compare.is_some() && args.token.is_none() && !causal {
        return Err(crate::usage!(
            "--compare A B needs --token T: the token whose attention is compared"
        ));
    }
    let layers = pick_layers(&args.layer, trace.layers)?;
    let heads = pick_heads(&args.head, trace.heads)?;
    let query = args
        .token
        .as_deref()
        .map(|t| find_token(&trace, t, "--token"))
        .transpose()?;
    // in a causal model, --compare without --token asks about the last position: the one
    // that predicts what comes next (after "it =", the referent)
    let query = match query {
        None if causal && args.compare.is_some() => Some(trace.len() - 1),
        q => q,
    };
    let versus = match (&args.compare, query) {
        (Some(ab), Some(q)) => {
            let a = find_token(&trace, &ab[0], "--compare")?;
            let b = find_token(&trace, &ab[1], "--compare")?;
            let mut rows: Vec<Versus> = (0..trace.layers)
                .flat_map(|l| (0..trace.heads).map(move |h| (l, h)))
                .map(|(l, h)| {
                    let r = trace.row(l, h, q);
                    Versus {
                        layer: l,
                        head: h,
                        a: r[a],
                        b: r[b],
                    }
                })
                .collect();
            rows.sort_by(|x, y| (y.a - y.b).abs().total_cmp(&(x.a - x.b).abs()));
            Some((q, a, b, rows))
        }
        _ => None,
    };

    // Everything is made in memory first, so that a failure never leaves a half-written file.
    let mut buf: Vec<u8> = Vec::new();
    let out = &mut buf;
    match format {
        ExplainFormat::Json => {
            let att: Vec<Vec<Vec<&[f32]>>> = (0..trace.layers)
                .map(|l| {
                    (0..trace.heads)
                        .map(|h| trace.matrix(l, h).chunks(trace.len()).collect())
                        .collect()
                })
                .collect();
            let mut v = json!({"model": args.model, "layers": trace.layers, "heads": trace.heads,
                               "tokens": trace.tokens, "attention": att});
            if let Some(top) = &prediction {
                v["next"] = json!(top
                    .iter()
                    .map(|(t, p)| json!({"text": t, "p": p}))
                    .collect::<Vec<_>>());
            }
            if let Some((q, a, b, rows)) = &versus {
                v["compare"] = json!({"token": q, "a": a, "b": b, "rows": rows.iter().map(|r| json!({
                    "layer": r.layer, "head": r.head, "a": r.a, "b": r.b})).collect::<Vec<_>>()});
            }
            writeln!(out, "{v}")?;
        }
        ExplainFormat::Svg | ExplainFormat::Png => {
            let mut panels = Vec::new();
            for &l in &layers {
                for &h in &heads {
                    panels.push((
                        format!("layer {l}, {}", head_name(h, trace.heads)),
                        weights(&trace, l, h),
                    ));
                }
            }
            let title = format!("{} · attention of {} tokens", args.model, trace.len());
            let svg = render::heatmaps_svg(&title, &trace.tokens, &panels);
            if format == ExplainFormat::Png {
                out.write_all(&render::svg_to_png(&svg)?)?;
            } else {
                out.write_all(svg.as_bytes())?;
            }
        }
        ExplainFormat::Text => {
            writeln!(
                out,
                "model {} · {} layers × {} heads · {} tokens",
                args.model,
                trace.layers,
                trace.heads,
                trace.len()
            )?;
            let toks: Vec<String> = trace
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i}:{}", t.text))
                .collect();
            writeln!(out, "tokens: {}", toks.join(" "))?;
            if let Some(top) = &prediction {
                let list: Vec<String> = top.iter().map(|(t, p)| format!("{t} {p:.3}")).collect();
                writeln!(out, "next token (causal model): {}", list.join(" · "))?;
            }
            if let Some((q, a, b, rows)) = &versus {
                compare_table(out, &trace, *q, *a, *b, rows)?;
            } else {
                for &l in &layers {
                    for &h in &heads {
                        writeln!(out, "\nlayer {l}, {}:", head_name(h, trace.heads))?;
                        let w = weights(&trace, l, h);
                        let n = trace.len();
                        let qs: Vec<usize> = query.map_or_else(|| (0..n).collect(), |q| vec![q]);
                        for q in qs {
                            let row = &w[q * n..][..n];
                            let mut idx: Vec<usize> = (0..n).collect();
                            idx.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
                            let top: Vec<String> = idx
                                .iter()
                                .take(args.top)
                                .map(|&k| format!("{} {:.3}", trace.tokens[k].text, row[k]))
                                .collect();
                            writeln!(
                                out,
                                "  {:>3} {:<12} → {}",
                                q,
                                trace.tokens[q].text,
                                top.join(" · ")
                            )?;
                        }
                    }
                }
            }
        }
    }
    match &args.output {
        Some(p) => std::fs::write(p, &buf).with_context(|| format!("writing {}", p.display()))?,
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(&buf)?;
            so.flush()?;
        }
    }
    Ok(())
}

/// The `k` most likely next tokens and their probabilities.
fn top_predictions(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    idx.into_iter()
        .take(k)
        .map(|i| (i as u32, (logits[i] - max).exp() / sum))
        .collect()
}

/// Weights closer than this are a tie in the `--compare` table.
const TIE: f32 = 5e-4;

fn compare_table(
    out: &mut dyn Write,
    trace: &Trace,
    q: usize,
    a: usize,
    b: usize,
    rows: &[Versus],
) -> Result<()> {
    let (ta, tb) = (&trace.tokens[a].text, &trace.tokens[b].text);
    writeln!(
        out,
        "\n\"{}\" (token {q}) → \"{ta}\" ({a}) vs \"{tb}\" ({b}): every layer × head, ranked by margin",
        trace.tokens[q].text
    )?;
    writeln!(
        out,
        "{:>5} {:>5} {:>4} {:>9} {:>9}  winner",
        "rank", "layer", "head", ta, tb
    )?;
    for (i, r) in rows.iter().enumerate() {
        let win = if (r.a - r.b).abs() <= TIE {
            "(tie)"
        } else if r.a > r.b {
            ta
        } else {
            tb
        };
        writeln!(
            out,
            "{:>5} {:>5} {:>4} {:>9.4} {:>9.4}  {win}",
            i + 1,
            r.layer,
            r.head,
            r.a,
            r.b
        )?;
    }
    let wins_a = rows.iter().filter(|r| r.a - r.b > TIE).count();
    let wins_b = rows.iter().filter(|r| r.b - r.a > TIE).count();
    let mean = |f: fn(&Versus) -> f32| rows.iter().map(f).sum::<f32>() / rows.len() as f32;
    writeln!(
        out,
        "\n\"{ta}\" wins in {wins_a} of {} heads, \"{tb}\" in {wins_b}{}; mean weight over all heads: {ta} {:.4}, {tb} {:.4}",
        rows.len(),
        match rows.len() - wins_a - wins_b {
            0 => String::new(),
            t => format!(", {t} tied (within {TIE})"),
        },
        mean(|r| r.a),
        mean(|r| r.b)
    )?;
    let side = |name: &str, r: Option<&Versus>, first: bool| match r {
        Some(r) => {
            let (w, other) = if first { (r.a, r.b) } else { (r.b, r.a) };
            format!(
                "for {name}: layer {} head {} ({w:.3} vs {other:.3})",
                r.layer, r.head
            )
        }
        None => format!("no head favours {name}"),
    };
    writeln!(
        out,
        "most decisive {}; {}",
        side(ta, rows.iter().find(|r| r.a - r.b > TIE), true),
        side(tb, rows.iter().find(|r| r.b - r.a > TIE), false)
    )?;
    Ok(())
}
