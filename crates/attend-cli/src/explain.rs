//! `attend explain`: which tokens each token attends to, in a real model on attend's kernel.

use std::io::Write;

use anyhow::Result;
use attend_models::models::Kind;
use attend_models::nn::logits::top_k;
use attend_models::trace::aggregate::without_sinks;
use attend_models::trace::query::{self, Comparison, HeadSel, Versus};
use attend_models::Trace;

use attend_viz::picture as render;

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
    /// The interactive viewer: one self-contained HTML page with every layer and head
    /// (needs `-o FILE.html` or a redirected stdout).
    Html,
}

/// Arguments of `attend explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Model: a name (`attend models`), a BERT-family folder, a `.gguf` file (or a folder
    /// holding one) of a decoder attend reads, or a folder from `attend train`.
    #[arg(long, default_value = "minilm")]
    model: String,
    /// Causal models: float32 activations (what transformers computes on the same file)
    /// instead of 8-bit ones; slower.
    #[arg(long)]
    exact: bool,
    /// Causal models: parse control tokens typed in the text (`<|im_start|>`,
    /// `<start_of_turn>`), for a prompt written in the model's own format; without it they are
    /// text.
    #[arg(long)]
    control_tokens: bool,
    /// Layer to show: a number from 0, or `all` [default: the last layer].
    #[arg(long)]
    layer: Option<String>,
    /// Head to show: a number from 0, `all`, or `mean` (the average of the layer's heads).
    #[arg(long, default_value = "mean")]
    head: String,
    /// Only this query token: its text (first match, case-insensitive) or its index.
    #[arg(long)]
    token: Option<String>,
    /// Words instead of tokens: sub-word pieces merged, a word's weight as a key the sum over
    /// its pieces and its row the mean of theirs (the page's words toggle). Also chosen, with a
    /// note, when a --token or --compare argument is a word that spans several pieces.
    #[arg(long)]
    words: bool,
    /// Encoders: read up to this many tokens (at most the model's position table, 512 for
    /// MiniLM) instead of the length it was trained on (256 for MiniLM).
    #[arg(long)]
    max_len: Option<usize>,
    /// How many attended tokens to list per query.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// With --token: for every layer × head, the weight the token gives A and B, ranked
    /// (for a causal model, without --token: the last position, which predicts the next token).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<String>>,
    /// SVG/PNG: leave out the sink positions (tokens most heads pour their weight into, such
    /// as `[CLS]`), renormalising each row over the other keys; the page has it as a toggle.
    #[arg(long)]
    hide_sinks: bool,
    /// HTML: the most MiB of weight data in the page; past it each row keeps only its largest
    /// weights and the sum of the rest (the page says so).
    #[arg(long, default_value_t = 40.0)]
    page_mib: f64,
    /// Output format [default: from the extension of -o (.json, .svg, .png, .html), else text].
    #[arg(long, value_enum)]
    format: Option<ExplainFormat>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// The text (`-` reads standard input).
    text: String,
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

/// A token by index or text (first match), or a usage error listing the tokens.
fn find_token(trace: &Trace, what: &str, flag: &str) -> Result<usize> {
    query::find_token(&trace.tokens, what).ok_or_else(|| {
        crate::usage!(
            "{flag} `{what}` is not a token of this text; the tokens are {}",
            query::token_list(&trace.tokens)
        )
    })
}

fn head_name(h: HeadSel, heads: usize) -> String {
    match h {
        HeadSel::Mean => format!("mean of {heads} heads"),
        HeadSel::One(h) => format!("head {h}"),
    }
}

/// What `explain` computed, ready to print in any format.
struct Explained {
    /// The trace shown: tokens, or words ([`Explained::words`]).
    trace: Trace,
    /// Whether `trace` is the word-level one (and the token positions each word starts at).
    words: Option<Vec<usize>>,
    /// The token-level trace (the page merges words itself).
    tokens: Option<Trace>,
    /// A causal model's three most likely next tokens.
    prediction: Option<Vec<(String, f32)>>,
    layers: Vec<usize>,
    heads: Vec<HeadSel>,
    query: Option<usize>,
    versus: Option<Comparison>,
}

/// One output format: the bytes of the whole output, made in memory first, so that a
/// failure never leaves a half-written file.
trait Report {
    fn render(&self, args: &ExplainArgs, ex: &Explained) -> Result<Vec<u8>>;
}

/// Tables on the terminal.
struct TextReport;
/// The `explain --format json` document.
struct JsonReport;
/// Heatmaps, SVG or PNG.
struct PictureReport {
    png: bool,
}
/// The interactive viewer.
struct HtmlReport;

impl Report for HtmlReport {
    fn render(&self, args: &ExplainArgs, ex: &Explained) -> Result<Vec<u8>> {
        let mut opts = attend_viz::Options::new(&args.model);
        opts.budget = crate::input::page_budget(args.page_mib)?;
        // the page merges words itself, from the tokens: positions are the words' first tokens
        let at = |i: usize| ex.words.as_ref().map_or(i, |first| first[i]);
        opts.compare = ex.versus.as_ref().map(|c| (at(c.query), at(c.a), at(c.b)));
        opts.words = ex.words.is_some();
        opts.subtitle = ex.prediction.as_ref().map(|top| {
            let list: Vec<String> = top
                .iter()
                .map(|(t, p)| format!("{} {p:.3}", shown(t)))
                .collect();
            format!("next token (causal model): {}", list.join(" · "))
        });
        let trace = ex.tokens.as_ref().unwrap_or(&ex.trace);
        Ok(attend_viz::trace_page(trace, &opts)?.into_bytes())
    }
}

fn output_format(args: &ExplainArgs) -> Result<ExplainFormat> {
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
            Some("html" | "htm") => ExplainFormat::Html,
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
    if format == ExplainFormat::Html
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(crate::usage!(
            "--format html writes a web page: give -o FILE.html or redirect standard output"
        ));
    }
    if args.hide_sinks && !matches!(format, ExplainFormat::Svg | ExplainFormat::Png) {
        return Err(crate::usage!(
            "--hide-sinks is for the SVG/PNG pictures (the HTML page has it as a toggle)"
        ));
    }
    Ok(format)
}

/// A token as a list shows it: without the spaces around it (a GGUF token carries its
/// leading space), or quoted when it is only spaces or line breaks.
pub fn shown(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        format!("{text:?}")
    } else {
        t.to_string()
    }
}

/// A text the model refuses (too long, words outside a toy vocabulary) is a usage error; any
/// other failure is one.
pub fn usage_if_text(e: attend_models::Error) -> anyhow::Error {
    match e {
        attend_models::Error::TextLength { .. }
        | attend_models::Error::ContextExceeded { .. }
        | attend_models::Error::Tokenizer(_)
        | attend_models::Error::Invalid(_) => crate::usage!("{e}"),
        other => other.into(),
    }
}

/// Runs `attend explain`: load and compute, then print in the chosen format.
pub fn run(args: &ExplainArgs) -> Result<()> {
    let format = output_format(args)?;
    crate::input::page_budget(args.page_mib)?;
    let text = if args.text == "-" {
        crate::input::texts_within(&[], crate::input::MAX_ONE_TEXT)?.join("\n")
    } else {
        args.text.clone()
    };
    let ex = explain(args, &text)?;
    let report: &dyn Report = match format {
        ExplainFormat::Text => &TextReport,
        ExplainFormat::Json => &JsonReport,
        ExplainFormat::Svg => &PictureReport { png: false },
        ExplainFormat::Png => &PictureReport { png: true },
        ExplainFormat::Html => &HtmlReport,
    };
    let bytes = report.render(args, &ex)?;
    crate::output::write(args.output.as_deref(), &bytes)
}

/// The trace of `text` in the model, and what the flags select of it.
fn explain(args: &ExplainArgs, text: &str) -> Result<Explained> {
    // a BERT-family encoder, or any causal model (a GGUF decoder, a model attend trained):
    // every layer × head × query × key of the text, from one forward pass
    let (trace, prediction) = match crate::input::identify(&args.model)? {
        Kind::Encoder => {
            if args.exact {
                return Err(crate::usage!(
                    "--exact is for causal models (an encoder computes in float32 already)"
                ));
            }
            if args.control_tokens {
                return Err(crate::usage!(
                    "--control-tokens is for causal models (an encoder reads [CLS] and [SEP] \
                     it adds itself; typed ones are text)"
                ));
            }
            let enc = crate::input::encoder_reading(
                &args.model,
                args.max_len,
                attend_models::Precision::Float32,
            )?;
            let (trace, tok) = enc.trace(text)?;
            if tok.truncated {
                eprintln!("{}", crate::input::truncated_warning(&enc, "the text"));
            }
            (trace, None)
        }
        Kind::Causal | Kind::Toy => {
            if args.max_len.is_some() {
                return Err(crate::usage!(
                    "--max-len is for encoders; `{}` reads up to its context length",
                    args.model
                ));
            }
            let mut lm = crate::input::causal(&args.model)?;
            if args.exact && !lm.set_exact(true) {
                eprintln!(
                    "attend: --exact: `{}` computes in float32 already",
                    args.model
                );
            }
            let (trace, top) = attend_models::models::causal::explain_text(
                lm.as_ref(),
                text,
                3,
                args.control_tokens,
            )
            .map_err(usage_if_text)?;
            (trace, Some(top))
        }
    };
    let causal = prediction.is_some();
    // words: asked for, or needed by a --token / --compare argument that is a word of several
    // pieces (and no token)
    let asked: Vec<&str> = args
        .token
        .iter()
        .chain(args.compare.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut words = args.words;
    let mut token_trace = None;
    let mut first_pieces = None;
    let word_level = if words
        || asked
            .iter()
            .any(|w| query::find_token(&trace.tokens, w).is_none())
    {
        Some(attend_models::trace::aggregate::word_trace(&trace)?)
    } else {
        None
    };
    if let Some(wt) = &word_level {
        let spans_pieces = asked.iter().find(|w| {
            query::find_token(&trace.tokens, w).is_none()
                && query::find_token(&wt.tokens, w).is_some()
        });
        if !words {
            if let Some(w) = spans_pieces {
                eprintln!(
                    "attend: `{w}` is a word of several tokens: shown as words (--words: {})",
                    attend_models::trace::aggregate::WORD_RULE
                );
                words = true;
            }
        }
    }
    let trace = match word_level {
        Some(wt) if words => {
            let ids = attend_models::trace::aggregate::words(&trace.tokens);
            let mut first = Vec::new();
            for (i, &w) in ids.iter().enumerate() {
                if w == first.len() {
                    first.push(i);
                }
            }
            first_pieces = Some(first);
            token_trace = Some(trace);
            wt
        }
        _ => trace,
    };
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
        (Some(ab), Some(q)) => Some(query::compare(
            &trace,
            q,
            find_token(&trace, &ab[0], "--compare")?,
            find_token(&trace, &ab[1], "--compare")?,
        )),
        _ => None,
    };
    Ok(Explained {
        trace,
        words: first_pieces,
        tokens: token_trace,
        prediction,
        layers,
        heads,
        query,
        versus,
    })
}

impl Report for JsonReport {
    fn render(&self, args: &ExplainArgs, ex: &Explained) -> Result<Vec<u8>> {
        let mut v = query::explain_json(
            &args.model,
            &ex.trace,
            ex.prediction.as_deref(),
            ex.versus.as_ref(),
        );
        v["unit"] = serde_json::json!(if ex.words.is_some() { "word" } else { "token" });
        if ex.words.is_some() {
            v["word_rule"] = serde_json::json!(attend_models::trace::aggregate::WORD_RULE);
        }
        Ok(format!("{v}\n").into_bytes())
    }
}

impl Report for PictureReport {
    fn render(&self, args: &ExplainArgs, ex: &Explained) -> Result<Vec<u8>> {
        let trace = &ex.trace;
        // the cost is known before anything is drawn: refuse what would take gigabytes
        let count = ex.layers.len() * ex.heads.len();
        let cells = count.saturating_mul(trace.len() * trace.len());
        if cells > render::MAX_CELLS {
            return Err(crate::usage!(
                "{count} heatmaps of {n} × {n} tokens are {cells} cells; a picture holds at most \
                 {max} (it would take minutes and gigabytes to draw): narrow --layer and --head \
                 (the defaults draw one: the last layer's mean), or shorten the text",
                n = trace.len(),
                max = render::MAX_CELLS
            ));
        }
        let sinks = if args.hide_sinks {
            trace.grid().sinks()
        } else {
            Vec::new()
        };
        let mut panels = Vec::new();
        for &l in &ex.layers {
            for &h in &ex.heads {
                let w = trace.weights(l, h);
                panels.push((
                    format!("layer {l}, {}", head_name(h, trace.heads)),
                    if args.hide_sinks {
                        without_sinks(&w, trace.len(), &sinks)
                    } else {
                        w
                    },
                ));
            }
        }
        let mut title = format!(
            "{} · attention of {} {}",
            args.model,
            trace.len(),
            if ex.words.is_some() {
                "words (pieces merged: keys summed, queries averaged)"
            } else {
                "tokens"
            }
        );
        if args.hide_sinks {
            let names: Vec<String> = sinks
                .iter()
                .map(|&s| format!("{}@{s}", trace.tokens[s].text))
                .collect();
            title += &if names.is_empty() {
                " · no sinks found".to_string()
            } else {
                format!(" · sinks {} left out, rows renormalised", names.join(", "))
            };
        }
        let svg = render::heatmaps_svg(&title, &trace.tokens, &panels);
        if self.png {
            Ok(render::svg_to_png(&svg)?)
        } else {
            Ok(svg.into_bytes())
        }
    }
}

impl Report for TextReport {
    fn render(&self, args: &ExplainArgs, ex: &Explained) -> Result<Vec<u8>> {
        let trace = &ex.trace;
        let mut buf: Vec<u8> = Vec::new();
        let out = &mut buf;
        writeln!(
            out,
            "model {} · {} layers × {} heads · {} {}",
            args.model,
            trace.layers,
            trace.heads,
            trace.len(),
            if ex.words.is_some() {
                "words"
            } else {
                "tokens"
            }
        )?;
        if ex.words.is_some() {
            writeln!(out, "({})", attend_models::trace::aggregate::WORD_RULE)?;
        }
        let toks: Vec<String> = trace
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{i}:{}", t.text))
            .collect();
        writeln!(
            out,
            "{}: {}",
            if ex.words.is_some() {
                "words"
            } else {
                "tokens"
            },
            toks.join(" ")
        )?;
        if let Some(top) = &ex.prediction {
            let list: Vec<String> = top
                .iter()
                .map(|(t, p)| format!("{} {p:.3}", shown(t)))
                .collect();
            writeln!(out, "next token (causal model): {}", list.join(" · "))?;
        }
        if let Some(c) = &ex.versus {
            compare_table(out, trace, c)?;
            return Ok(buf);
        }
        for &l in &ex.layers {
            for &h in &ex.heads {
                writeln!(out, "\nlayer {l}, {}:", head_name(h, trace.heads))?;
                let w = trace.weights(l, h);
                let n = trace.len();
                let qs: Vec<usize> = ex.query.map_or_else(|| (0..n).collect(), |q| vec![q]);
                for q in qs {
                    let top: Vec<String> = top_k(&w[q * n..][..n], args.top)
                        .into_iter()
                        .map(|(k, v)| format!("{} {v:.3}", trace.tokens[k].text))
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
        Ok(buf)
    }
}

/// Weights closer than this are a tie in the `--compare` table.
const TIE: f32 = 5e-4;

fn compare_table(out: &mut dyn Write, trace: &Trace, c: &Comparison) -> Result<()> {
    let (q, a, b, rows) = (c.query, c.a, c.b, &c.rows[..]);
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
