//! `attend generate`: next-token prediction on any causal model attend runs (Llama-family
//! GGUF files, the models attend trained), and with `--explain` which earlier tokens each new
//! token's prediction attended to. Load → generate (tokens streamed to a [`Sink`]) → stats.

use std::io::Write;

use anyhow::Result;
use attend_models::generate::{generate, CausalLm, GenStats, GenToken, Sampler, SamplerConfig};
use attend_models::nn::logits::ranked;
use attend_models::tokenize::gguf::Utf8Stream;
use serde_json::json;

/// Output formats of `attend generate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GenFormat {
    /// The text as it is made (with --explain: one line per token).
    Text,
    /// `{"model", "prompt_ids", "prompt_tokens", "tokens": [{"id", "text", "logprob",
    /// "attended", with --explain "attention": [layer][head][key]}], "stats"}`.
    Json,
    /// The interactive viewer of the generation (implies --explain; needs `-o FILE.html` or a
    /// redirected stdout).
    Html,
}

/// Arguments of `attend generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model: a name (`attend models`), a `.gguf` file, a folder holding one, or a folder
    /// from `attend train`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Most tokens to generate (it stops earlier at an end token).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    max_tokens: u64,
    /// 0 picks the most likely token (greedy); higher values sample more freely.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens whose probabilities reach P.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed of the random draws (same seed, same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wrap the prompt in the model's chat template (one user message).
    #[arg(long)]
    chat: bool,

    /// Parse control tokens typed in the prompt (`<|im_start|>`, `<start_of_turn>`), for a
    /// prompt written in the model's own format. Without it they are text, and --chat keeps the
    /// message text in any case.
    #[arg(long, conflicts_with = "chat")]
    control_tokens: bool,
    /// Multiply by float32 activations instead of 8-bit ones: slow (every weight row is
    /// dequantised per step), and what transformers computes on the same file.
    #[arg(long)]
    exact: bool,
    /// For each generated token, the earlier tokens its prediction attended to most.
    #[arg(long)]
    explain: bool,
    /// With --explain: only this layer (default: the mean over all layers).
    #[arg(long)]
    layer: Option<usize>,
    /// With --explain: only this head of --layer (default: the mean over its heads).
    #[arg(long, requires = "layer")]
    head: Option<usize>,
    /// With --explain: leave out the first position, which soaks up attention in most causal
    /// models (the "attention sink"); the other weights are shown as they are.
    #[arg(long)]
    skip_first: bool,
    /// With --explain: how many attended tokens to show per token.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// HTML: the most MiB of weight data in the page; past it each row keeps only its largest
    /// weights and the sum of the rest (the page says so).
    #[arg(long, default_value_t = 40.0)]
    page_mib: f64,
    /// Output format [default: html when -o names a .html file, else text].
    #[arg(long, value_enum)]
    format: Option<GenFormat>,
    /// Write the output to this file (written whole or not at all) instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<std::path::PathBuf>,
    /// The prompt (`-` reads standard input).
    prompt: String,
}

/// One attended position.
struct Attended {
    pos: usize,
    weight: f32,
}

/// The positions `g`'s prediction attended to most, combining layers and heads as asked.
fn attended(g: &GenToken, layers: usize, heads: usize, args: &GenerateArgs) -> Vec<Attended> {
    let keys = g.attention.len() / (layers * heads);
    let mut w = vec![0.0f32; keys];
    let sel: Vec<(usize, usize)> = match (args.layer, args.head) {
        (Some(l), Some(h)) => vec![(l, h)],
        (Some(l), None) => (0..heads).map(|h| (l, h)).collect(),
        _ => (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect(),
    };
    for &(l, h) in &sel {
        let row = &g.attention[(l * heads + h) * keys..][..keys];
        for (a, b) in w.iter_mut().zip(row) {
            *a += b / sel.len() as f32;
        }
    }
    ranked(&w)
        .into_iter()
        .map(|p| p as usize)
        .filter(|&p| !(args.skip_first && p == 0))
        .take(args.top)
        .map(|pos| Attended {
            pos,
            weight: w[pos],
        })
        .collect()
}

/// Where generated tokens go, one type per output format.
enum Sink {
    /// The text as it is made.
    Stream(Utf8Stream),
    /// One line per token with what its prediction attended to.
    Explain,
    /// JSON records, printed at the end, and the heads per layer (to nest the attention).
    Json(Vec<serde_json::Value>, usize),
    /// Tokens kept for the viewer page, written at the end.
    Html(Vec<GenToken>),
}

impl Sink {
    /// Writes one token; `texts` holds every earlier token's text (prompt first).
    fn token(
        &mut self,
        out: &mut dyn Write,
        g: &GenToken,
        bytes: &[u8],
        piece: &str,
        att: &[Attended],
        texts: &[String],
    ) -> std::io::Result<()> {
        match self {
            Sink::Stream(stream) => {
                let s = stream.push(bytes);
                out.write_all(s.as_bytes())?;
                out.flush()
            }
            Sink::Explain => {
                let list: Vec<String> = att
                    .iter()
                    .map(|a| format!("{:?}@{} {:.3}", texts[a.pos], a.pos, a.weight))
                    .collect();
                writeln!(
                    out,
                    "{:>5}  {:<14} ← {}",
                    texts.len(),
                    format!("{piece:?}"),
                    list.join(" · ")
                )
            }
            Sink::Json(records, heads) => {
                let mut r = json!({
                    "id": g.id, "text": piece, "logprob": g.logprob,
                    "attended": att.iter().map(|a| json!({
                        "pos": a.pos, "text": texts[a.pos], "weight": a.weight})).collect::<Vec<_>>(),
                });
                if !g.attention.is_empty() {
                    // [layer][head][key] as nested arrays, keys = every position before it
                    let rows: Vec<&[f32]> = g.attention.chunks(texts.len().max(1)).collect();
                    r["attention"] = json!(rows.chunks((*heads).max(1)).collect::<Vec<_>>());
                }
                records.push(r);
                Ok(())
            }
            Sink::Html(kept) => {
                kept.push(g.clone());
                Ok(())
            }
        }
    }
}

/// Loads a causal model by name (fetched on first use), file or folder; an unknown name is a
/// usage error.
pub fn load(model: &str) -> Result<Box<dyn CausalLm>> {
    crate::input::causal(model)
}

/// Runs `attend generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let format = output_format(args)?;
    crate::input::page_budget(args.page_mib)?;
    let explain = args.explain || format == GenFormat::Html;
    let prompt = if args.prompt == "-" {
        crate::input::texts_within(&[], crate::input::MAX_ONE_TEXT)?.join("\n")
    } else {
        args.prompt.clone()
    };
    // clap bounds it to 1..=2^24, which fits any usize
    let max_tokens = usize::try_from(args.max_tokens).unwrap_or(usize::MAX);
    let sampler_cfg = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(sampler_cfg).map_err(|e| crate::usage!("{e}"))?;
    // load
    let mut lm = load(&args.model)?;
    if args.exact && !lm.set_exact(true) {
        eprintln!(
            "attend: --exact: `{}` computes in float32 already",
            args.model
        );
    }
    let (layers, heads) = (lm.layers(), lm.heads());
    if let Some(l) = args.layer.filter(|&l| l >= layers) {
        return Err(crate::usage!(
            "--layer {l} is out of range: the model has layers 0..={}",
            layers - 1
        ));
    }
    if let Some(h) = args.head.filter(|&h| h >= heads) {
        return Err(crate::usage!(
            "--head {h} is out of range: the model has heads 0..={}",
            heads - 1
        ));
    }
    let tok = lm.tokenizer();
    let chat = if args.chat { lm.chat(&prompt) } else { None };
    let (text, prompt_tokens) = match (args.chat, chat) {
        (true, Some(t)) => t?,
        (true, None) => {
            return Err(crate::usage!(
                "--chat: `{}` has no chat template (a model attend trained, or a base model \
                 whose file carries none); run it without --chat",
                args.model
            ))
        }
        (false, _) => {
            let toks = if args.control_tokens {
                tok.encode_with_control(&prompt)
            } else {
                tok.encode(&prompt)
            };
            let toks = toks.map_err(|e| match e {
                // a word list that does not know a word: the user's text
                attend_models::Error::Invalid(_) => crate::usage!("{e}"),
                other => other.into(),
            })?;
            (prompt, toks)
        }
    };
    let prompt_ids: Vec<u32> = prompt_tokens.iter().map(|t| t.id).collect();
    if prompt_ids.is_empty() {
        return Err(crate::usage!("the prompt is empty"));
    }
    // compute, printing each token as it comes
    let mut texts: Vec<String> = prompt_tokens.iter().map(|t| t.text.clone()).collect();
    let mut stdout = std::io::stdout().lock();
    // with -o, everything goes to memory first and the file is written whole at the end
    let mut file: Vec<u8> = Vec::new();
    let out: &mut dyn Write = if args.output.is_some() {
        &mut file
    } else {
        &mut stdout
    };
    let mut sink = match format {
        GenFormat::Json => Sink::Json(Vec::new(), heads),
        GenFormat::Html => Sink::Html(Vec::new()),
        GenFormat::Text if args.explain => Sink::Explain,
        GenFormat::Text => Sink::Stream(Utf8Stream::default()),
    };
    let mut io_err: Option<std::io::Error> = None;
    let mut on_token = |g: &GenToken| {
        let bytes = tok.token_bytes(g.id);
        let piece = tok.display(g.id);
        let att = if explain {
            attended(g, layers, heads, args)
        } else {
            Vec::new()
        };
        let r = sink.token(out, g, &bytes, &piece, &att, &texts);
        texts.push(piece);
        match r {
            Ok(()) => true,
            Err(e) => {
                io_err = Some(e);
                false
            }
        }
    };
    let stats = generate(
        lm.as_ref(),
        &prompt_ids,
        max_tokens,
        &mut sampler,
        explain,
        &mut on_token,
    )
    .map_err(|e| match e {
        attend_models::Error::ContextExceeded { .. } => crate::usage!("{e}"),
        other => other.into(),
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    // print the end
    let page = PageInput {
        prompt: &prompt_tokens,
        lm: lm.as_ref(),
    };
    finish(
        args,
        sink,
        out,
        &stats,
        &prompt_ids,
        &text,
        &texts,
        (layers, heads),
        &page,
    )?;
    if let Some(path) = &args.output {
        crate::output::write_file(path, &file)?;
    }
    Ok(())
}

/// What the viewer page needs besides the generated tokens.
struct PageInput<'a> {
    prompt: &'a [attend_models::TokenInfo],
    lm: &'a dyn CausalLm,
}

/// The format asked for: `--format`, else from the extension of `-o`.
fn output_format(args: &GenerateArgs) -> Result<GenFormat> {
    let ext = args
        .output
        .as_ref()
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let format = args.format.unwrap_or(match ext.as_deref() {
        Some("html" | "htm") => GenFormat::Html,
        Some("json") => GenFormat::Json,
        _ => GenFormat::Text,
    });
    if format == GenFormat::Html
        && args.output.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        return Err(crate::usage!(
            "--format html writes a web page: give -o FILE.html or redirect standard output"
        ));
    }
    Ok(format)
}

/// The viewer page of a finished generation.
fn html_page(
    args: &GenerateArgs,
    kept: &[GenToken],
    page: &PageInput<'_>,
    subtitle: String,
) -> Result<Vec<u8>> {
    let gen = attend_models::generate::generation_trace(page.lm, page.prompt.to_vec(), kept)?;
    let logprobs: Vec<f32> = kept.iter().map(|g| g.logprob).collect();
    let mut opts = attend_viz::Options::new(&args.model);
    opts.budget = crate::input::page_budget(args.page_mib)?;
    opts.subtitle = Some(subtitle);
    Ok(attend_viz::generation_page(&gen, &logprobs, &opts)?.into_bytes())
}

/// What follows the tokens: the JSON document, or the closing text and the speeds.
#[allow(clippy::too_many_arguments)]
fn finish(
    args: &GenerateArgs,
    sink: Sink,
    out: &mut dyn Write,
    stats: &GenStats,
    prompt_ids: &[u32],
    text: &str,
    texts: &[String],
    (layers, heads): (usize, usize),
    page: &PageInput<'_>,
) -> Result<()> {
    let pp = stats.prompt_tokens as f64 / stats.prompt_secs.max(1e-9);
    let tg = stats.gen_tokens as f64 / stats.gen_secs.max(1e-9);
    match sink {
        Sink::Html(kept) => {
            if kept.is_empty() {
                return Err(anyhow::anyhow!(
                    "the model ended the text at once: no token was generated, so there is no \
                     attention to show"
                ));
            }
            let generated: String = texts[prompt_ids.len()..].concat();
            let subtitle = format!("prompt: {text} · generated: {generated}");
            let bytes = html_page(args, &kept, page, subtitle)?;
            out.write_all(&bytes)?;
        }
        Sink::Json(records, _) => {
            let v = json!({
                "model": args.model,
                "prompt_ids": prompt_ids,
                "prompt_tokens": page.prompt.iter().map(|t| &t.text).collect::<Vec<_>>(),
                "tokens": records,
                "stats": {"prompt_tokens": stats.prompt_tokens, "prompt_tokens_per_s": pp,
                          "gen_tokens": stats.gen_tokens, "gen_tokens_per_s": tg,
                          "stopped_at_eos": stats.stopped_at_eos},
            });
            writeln!(out, "{v}")?;
            return Ok(());
        }
        Sink::Explain => {
            let generated: String = texts[prompt_ids.len()..].concat();
            writeln!(out, "\n{text}{generated}")?;
            eprintln!(
                "(weights: the attention of the position that predicted each token, {}{})",
                match (args.layer, args.head) {
                    (Some(l), Some(h)) => format!("layer {l} head {h}"),
                    (Some(l), None) => format!("mean of layer {l}'s {heads} heads"),
                    _ => format!("mean of all {layers} layers × {heads} heads"),
                },
                if args.skip_first {
                    ", first position left out"
                } else {
                    ""
                }
            );
        }
        Sink::Stream(mut stream) => {
            let rest = stream.finish();
            writeln!(out, "{rest}")?;
        }
    }
    eprintln!(
        "[{} prompt tokens at {pp:.1} tokens/s · {} generated at {tg:.1} tokens/s{}]",
        stats.prompt_tokens,
        stats.gen_tokens,
        if stats.stopped_at_eos {
            " · end token"
        } else {
            ""
        }
    );
    Ok(())
}
