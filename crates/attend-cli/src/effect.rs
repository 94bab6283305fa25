//! `attend effect`: does the attention matter? Each source token (or word) knocked out and
//! each head ablated, the change of the prediction's log-probability beside the attention the
//! predicting position paid.

use std::io::Write;

use anyhow::Result;
use attend_models::trace::effect::{
    Ablation, AttentionFrom, Effect, EffectSpec, Knockout, Measure,
};

use crate::explain::shown;

/// Output formats of `attend effect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EffectFormat {
    /// Tables on the terminal.
    Text,
    /// One JSON document (`sources`, `head_delta`, `heads_by_effect`, `spearman`, …).
    Json,
    /// The viewer, opened on its effect view (one self-contained page).
    Html,
    /// Per-source bars of attention and effect, and the head-ablation grid.
    Svg,
    /// The same picture as PNG.
    Png,
}

/// Which edges a knockout removes (`--knockout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KnockoutArg {
    /// Into the source from every later position: nothing after it reads it.
    Later,
    /// Only from the predicting positions (Geva et al. 2023).
    Predicting,
}

/// Arguments of `attend effect`.
#[derive(clap::Args, Debug)]
pub struct EffectArgs {
    /// Model: a name (`attend models`), a `.gguf` file (or a folder holding one) of a decoder
    /// attend reads.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// The continuation whose log-probability is measured, e.g. " tired" (several tokens: the
    /// sum of their log-probabilities) [default: the model's likeliest next token].
    #[arg(long)]
    target: Option<String>,
    /// Which attention edges a knockout removes.
    #[arg(long, value_enum, default_value_t = KnockoutArg::Later)]
    knockout: KnockoutArg,
    /// Knock out only in these layers: `A..B` (B excluded) or one layer `L` [default: all].
    #[arg(long)]
    layers: Option<String>,
    /// Knock out whole words (their tokens together) instead of tokens.
    #[arg(long)]
    words: bool,
    /// Replace an ablated head's output by its mean over the text instead of zeros.
    #[arg(long)]
    mean_ablation: bool,
    /// Skip the head ablations (knockouts only).
    #[arg(long)]
    no_heads: bool,
    /// How many heads to list, largest effect first.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Encoders: read up to this many tokens (at most the model's position table) instead of
    /// the length it was trained on.
    #[arg(long)]
    max_len: Option<usize>,
    /// Float32 activations (what transformers computes on the same file) instead of 8-bit
    /// ones; slower.
    #[arg(long)]
    exact: bool,
    /// Causal models: parse control tokens typed in the text (`<|im_start|>`,
    /// `<start_of_turn>`), for a prompt written in the model's own format; without it they are
    /// text.
    #[arg(long)]
    control_tokens: bool,
    /// Output format [default: from the extension of -o (.json, .html, .svg, .png), else
    /// text].
    #[arg(long, value_enum)]
    format: Option<EffectFormat>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// The prompt (`-` reads standard input); the prediction is what follows it.
    text: String,
}

/// `A..B` or `L` as a range of layers (checked against the model when it is known).
fn parse_layers(s: &str) -> Result<std::ops::Range<usize>> {
    let bad = || crate::usage!("--layers {s}: give A..B (B excluded) or one layer L");
    match s.split_once("..") {
        Some((a, b)) => {
            let a = a.trim().parse::<usize>().map_err(|_| bad())?;
            let b = b.trim().parse::<usize>().map_err(|_| bad())?;
            if a >= b {
                return Err(bad());
            }
            Ok(a..b)
        }
        None => {
            let l = s.trim().parse::<usize>().map_err(|_| bad())?;
            Ok(l..l + 1)
        }
    }
}

/// Runs `attend effect`.
pub fn run(args: &EffectArgs) -> Result<()> {
    let format = args.format.unwrap_or_else(|| {
        match args
            .output
            .as_ref()
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => EffectFormat::Json,
            Some("html" | "htm") => EffectFormat::Html,
            Some("svg") => EffectFormat::Svg,
            Some("png") => EffectFormat::Png,
            _ => EffectFormat::Text,
        }
    });
    if matches!(format, EffectFormat::Png | EffectFormat::Html)
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(crate::usage!(
            "--format {} writes a file: give -o FILE or redirect standard output",
            if format == EffectFormat::Png {
                "png"
            } else {
                "html"
            }
        ));
    }
    let layers = args.layers.as_deref().map(parse_layers).transpose()?;
    let text = if args.text == "-" {
        crate::input::texts_within(&[], crate::input::MAX_ONE_TEXT)?.join("\n")
    } else {
        args.text.clone()
    };
    let spec = EffectSpec {
        knockout: match args.knockout {
            KnockoutArg::Later => Knockout::Later,
            KnockoutArg::Predicting => Knockout::Predicting,
        },
        layers,
        words: args.words,
        groups: None,
        heads: !args.no_heads,
        ablation: if args.mean_ablation {
            Ablation::Mean
        } else {
            Ablation::Zero
        },
        reuse: true,
    };
    let model_layers = |n: usize| -> Result<()> {
        match &spec.layers {
            Some(r) if r.end > n => Err(crate::usage!(
                "--layers {}..{}: `{}` has layers 0..{n}",
                r.start,
                r.end,
                args.model
            )),
            _ => Ok(()),
        }
    };
    let effect = if crate::input::identify(&args.model)? == attend_models::models::Kind::Encoder {
        // an encoder: the effect on the sentence embedding
        for (given, what) in [
            (args.target.is_some(), "--target"),
            (
                args.knockout == KnockoutArg::Predicting,
                "--knockout predicting",
            ),
            (args.mean_ablation, "--mean-ablation"),
        ] {
            if given {
                return Err(crate::usage!(
                    "{what}: `{}` is a sentence encoder, which predicts nothing; its effects are \
                     measured on the sentence embedding (1 − cos)",
                    args.model
                ));
            }
        }
        if args.control_tokens {
            return Err(crate::usage!(
                "--control-tokens is for causal models (an encoder reads [CLS] and [SEP] it \
                 adds itself; typed ones are text)"
            ));
        }
        let enc = crate::input::encoder_reading(
            &args.model,
            args.max_len,
            attend_models::Precision::Float32,
        )?;
        model_layers(enc.model.config.num_hidden_layers)?;
        if args.exact {
            eprintln!(
                "attend: --exact: `{}` computes in float32 already",
                args.model
            );
        }
        let e = enc
            .effect(&text, &spec)
            .map_err(crate::explain::usage_if_text)?;
        if e.truncated {
            eprintln!("{}", crate::input::truncated_warning(&enc, "the text"));
        }
        e
    } else {
        if args.max_len.is_some() {
            return Err(crate::usage!(
                "--max-len is for encoders; `{}` reads up to its context length",
                args.model
            ));
        }
        let mut lm = crate::input::causal(&args.model)?;
        model_layers(lm.layers())?;
        if args.exact && !lm.set_exact(true) {
            eprintln!(
                "attend: --exact: `{}` computes in float32 already",
                args.model
            );
        }
        attend_models::models::causal::effect_text(
            lm.as_ref(),
            &text,
            args.target.as_deref(),
            &spec,
            args.control_tokens,
        )
        .map_err(crate::explain::usage_if_text)?
    };
    let bytes = match format {
        EffectFormat::Json => {
            let mut v = effect.to_json();
            v["model"] = serde_json::json!(args.model);
            v["tokens"] = serde_json::json!(effect
                .tokens
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>());
            format!("{v}\n").into_bytes()
        }
        EffectFormat::Text => text_report(&args.model, &effect, args.top)?,
        EffectFormat::Html => {
            let mut opts = attend_viz::Options::new(&args.model);
            opts.subtitle = Some(effect.headline());
            opts.effect = Some(effect.to_json());
            attend_viz::trace_page(&effect.trace, &opts)?.into_bytes()
        }
        EffectFormat::Svg | EffectFormat::Png => {
            let title = format!("{} · does the attention matter?", args.model);
            let svg = attend_viz::picture::effect_svg(&title, &effect);
            if format == EffectFormat::Png {
                attend_viz::picture::svg_to_png(&svg)?
            } else {
                svg.into_bytes()
            }
        }
    };
    crate::output::write(args.output.as_deref(), &bytes)
}

/// A bar of `width` cells for a share in 0..=1.
fn bar(x: f32, width: usize) -> String {
    let cells = (x.clamp(0.0, 1.0) * width as f32).round() as usize;
    "█".repeat(cells) + &" ".repeat(width - cells)
}

fn text_report(model: &str, e: &Effect, top: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let out = &mut buf;
    let q = e.predicting();
    let encoder = e.measure == Measure::Embedding;
    let target: String = e.target.concat();
    writeln!(
        out,
        "model {model} · {} layers × {} heads · {} {} tokens",
        e.layers,
        e.heads,
        e.tokens.len(),
        if encoder { "text" } else { "prompt" }
    )?;
    if encoder {
        writeln!(
            out,
            "effect on the sentence embedding: 1 − cos between the edited and the unedited one \
             (0: unchanged; the attention beside it is {})",
            match e.attention_from {
                AttentionFrom::First => "the one [CLS] pays, which the embedding pools",
                _ => "the mean over every query",
            }
        )?;
    } else {
        writeln!(
            out,
            "prediction after \"{}\" (token {q}): {} log p = {:.3} (p = {}){}; likeliest next: {} ({:.3})",
            shown(&e.tokens[q].text),
            format_args!("\"{target}\""),
            e.logp,
            if e.logp.exp() >= 0.001 {
                format!("{:.3}", e.logp.exp())
            } else {
                format!("{:.1e}", e.logp.exp())
            },
            if e.target_is_top {
                " — the model's own likeliest token"
            } else {
                ""
            },
            shown(&e.top.0),
            e.top.1
        )?;
    }
    let edges = match (e.spec.knockout, encoder) {
        (_, true) => "from every position",
        (Knockout::Later, _) => "from every later position",
        (Knockout::Predicting, _) => "from the predicting position",
    };
    let layers = match &e.spec.layers {
        Some(r) => format!("layers {}..{}", r.start, r.end),
        None => format!("all {} layers", e.layers),
    };
    writeln!(
        out,
        "\nknockout of each {} (its attention edges {edges}, {layers}) beside the attention {}",
        if e.spec.words { "word" } else { "token" },
        if e.attention_from == AttentionFrom::First {
            "[CLS] pays it".to_string()
        } else if encoder {
            "it receives".to_string()
        } else {
            format!("token {q} pays it")
        }
    )?;
    let max_att = e.sources.iter().map(|s| s.attention).fold(0.0f32, f32::max);
    let max_d = e
        .sources
        .iter()
        .map(|s| s.delta.abs())
        .fold(0.0f32, f32::max);
    writeln!(
        out,
        "{:>4} {:<14} {:>9} {:>8} {:<12} {:>9} {:<12} {}",
        "pos",
        "source",
        "attention",
        "rollout",
        "",
        e.delta_name(),
        "",
        if encoder { "" } else { "top-1 after" }
    )?;
    for s in &e.sources {
        let delta = if s.removes_edges && encoder {
            format!("{:>9.5}", s.delta)
        } else if s.removes_edges {
            format!("{:>9.3}", s.delta)
        } else {
            format!("{:>9}", "—")
        };
        writeln!(
            out,
            "{:>4} {:<14} {:>9.4} {:>8.4} {} {delta} {} {}",
            s.positions[0],
            shown(&s.label),
            s.attention,
            s.rollout,
            bar(s.attention / max_att.max(f32::MIN_POSITIVE), 12),
            bar(s.delta.abs() / max_d.max(f32::MIN_POSITIVE), 12),
            match (s.removes_edges, encoder) {
                (true, true) => String::new(),
                (true, false) => shown(&s.top),
                (false, true) => "(the whole text: nothing left to read)".into(),
                (false, false) => "(read by no later position)".into(),
            },
        )?;
    }
    let rho = |r: Option<f32>| r.map_or("—".to_string(), |r| format!("{r:+.2}"));
    writeln!(
        out,
        "Spearman rank correlation with |{}|: attention (mean of layers and heads) {}, rollout {}",
        e.delta_name(),
        rho(e.spearman_attention()),
        rho(e.spearman_rollout())
    )?;
    if !e.head_delta.is_empty() {
        writeln!(
            out,
            "\nheads by effect ({} ablation: its output replaced by {} before the output projection), top {top} of {}:",
            match e.spec.ablation {
                Ablation::Zero => "zero",
                Ablation::Mean => "mean",
            },
            match e.spec.ablation {
                Ablation::Zero => "zeros",
                Ablation::Mean => "its mean over the text",
            },
            e.head_delta.len()
        )?;
        for (l, h, d) in e.heads_by_effect().into_iter().take(top) {
            if encoder {
                writeln!(out, "  layer {l:>2} head {h:>2}  1 − cos {d:.5}")?;
            } else {
                writeln!(out, "  layer {l:>2} head {h:>2}  Δ log p {d:+.3}")?;
            }
        }
    }
    if encoder {
        writeln!(
            out,
            "\n(work: {} token×layer passes; an encoder reuses nothing: every position reads \
             every key)",
            e.work.done
        )?;
    } else {
        writeln!(
            out,
            "\n(work: {} token×layer passes; recomputing the text for every intervention would \
             be {})",
            e.work.done, e.work.naive
        )?;
    }
    Ok(buf)
}
