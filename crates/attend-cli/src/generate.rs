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
    /// `{"model", "prompt_ids", "tokens": [{"id", "text", "logprob", "attended"}], "stats"}`.
    Json,
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
    /// Output format.
    #[arg(long, value_enum, default_value_t = GenFormat::Text)]
    format: GenFormat,
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
    /// JSON records, printed at the end.
    Json(Vec<serde_json::Value>),
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
            Sink::Json(records) => {
                records.push(json!({
                    "id": g.id, "text": piece, "logprob": g.logprob,
                    "attended": att.iter().map(|a| json!({
                        "pos": a.pos, "text": texts[a.pos], "weight": a.weight})).collect::<Vec<_>>(),
                }));
                Ok(())
            }
        }
    }
}

/// Loads a causal model by name (fetched on first use), file or folder; an unknown name is a
/// usage error.
pub fn load(model: &str) -> Result<Box<dyn CausalLm>> {
    attend_models::models::load_causal_lm(model, &mut |m| eprintln!("{m}")).map_err(|e| match e {
        attend_models::Error::UnknownModel { .. } => crate::usage!("{e}"),
        other => anyhow::Error::new(other).context(format!("loading model `{model}`")),
    })
}

/// Runs `attend generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
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
    let lm = load(&args.model)?;
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
    let text = match (args.chat, lm.chat(&prompt)) {
        (true, Some(t)) => t?,
        (true, None) => {
            return Err(crate::usage!(
                "--chat: `{}` has no chat template (it is a model attend trained)",
                args.model
            ))
        }
        (false, _) => prompt,
    };
    let tok = lm.tokenizer();
    let prompt_tokens = tok.encode(&text).map_err(|e| match e {
        // a word list that does not know a word: the user's text
        attend_models::Error::Invalid(_) => crate::usage!("{e}"),
        other => other.into(),
    })?;
    let prompt_ids: Vec<u32> = prompt_tokens.iter().map(|t| t.id).collect();
    if prompt_ids.is_empty() {
        return Err(crate::usage!("the prompt is empty"));
    }
    // compute, printing each token as it comes
    let mut texts: Vec<String> = prompt_tokens.iter().map(|t| t.text.clone()).collect();
    let mut out = std::io::stdout().lock();
    let mut sink = match args.format {
        GenFormat::Json => Sink::Json(Vec::new()),
        GenFormat::Text if args.explain => Sink::Explain,
        GenFormat::Text => Sink::Stream(Utf8Stream::default()),
    };
    let mut io_err: Option<std::io::Error> = None;
    let mut on_token = |g: &GenToken| {
        let bytes = tok.token_bytes(g.id);
        let piece = tok.display(g.id);
        let att = if args.explain {
            attended(g, layers, heads, args)
        } else {
            Vec::new()
        };
        let r = sink.token(&mut out, g, &bytes, &piece, &att, &texts);
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
        args.explain,
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
    finish(
        args,
        sink,
        &mut out,
        &stats,
        &prompt_ids,
        &text,
        &texts,
        (layers, heads),
    )
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
) -> Result<()> {
    let pp = stats.prompt_tokens as f64 / stats.prompt_secs.max(1e-9);
    let tg = stats.gen_tokens as f64 / stats.gen_secs.max(1e-9);
    match sink {
        Sink::Json(records) => {
            let v = json!({
                "model": args.model,
                "prompt_ids": prompt_ids,
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
