//! `attend generate`: next-token prediction on a Llama-family GGUF model, and with `--explain`
//! which earlier tokens each new token's prediction attended to.

use std::io::Write;

use anyhow::{Context, Result};
use attend_models::generate::{generate, GenToken, Sampler, SamplerConfig};
use attend_models::gguf_tokenizer::{apply_chat_template, GgufTokenizer, Utf8Stream};
use attend_models::llama::LlamaModel;
use attend_models::registry;
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
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
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

/// Loads a causal LM by name (fetched on first use), file or folder.
pub fn load(model: &str) -> Result<(LlamaModel, GgufTokenizer)> {
    let path = registry::resolve(model, &mut |m| eprintln!("{m}")).map_err(|e| match e {
        attend_models::Error::UnknownModel { .. } => crate::usage!("{e}"),
        other => anyhow::Error::new(other),
    })?;
    let m = LlamaModel::load(&path)
        .with_context(|| format!("loading model `{model}` from {}", path.display()))?;
    let tok = GgufTokenizer::from_gguf(&m.file.header)
        .with_context(|| format!("reading the tokenizer of {}", m.file.path.display()))?;
    Ok((m, tok))
}

/// A causal model: from GGUF, or one attend trained (one per run, so its size is no concern).
#[allow(clippy::large_enum_variant)]
enum Lm {
    Llama(Box<(LlamaModel, GgufTokenizer)>),
    Toy(attend_models::toy::ToyModel),
}

impl Lm {
    fn dims(&self) -> (usize, usize) {
        match self {
            Lm::Llama(b) => (b.0.config.n_layers, b.0.config.n_heads),
            Lm::Toy(m) => (m.config.layers, m.config.heads),
        }
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        match self {
            Lm::Llama(b) => b.1.token_bytes(id).to_vec(),
            Lm::Toy(m) => m.config.vocab.token_bytes(id),
        }
    }
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
    let mut order: Vec<usize> = (0..keys)
        .filter(|&p| !(args.skip_first && p == 0))
        .collect();
    order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
    order
        .into_iter()
        .take(args.top)
        .map(|pos| Attended {
            pos,
            weight: w[pos],
        })
        .collect()
}

/// Runs `attend generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let prompt = if args.prompt == "-" {
        crate::input::texts(&[])?.join("\n")
    } else {
        args.prompt.clone()
    };
    if args.max_tokens == 0 {
        return Err(crate::usage!("--max-tokens must be at least 1"));
    }
    let sampler_cfg = SamplerConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut sampler = Sampler::new(sampler_cfg).map_err(|e| crate::usage!("{e}"))?;
    let lm = match crate::input::toy_model(&args.model)? {
        Some(m) => Lm::Toy(m),
        None => {
            let (m, t) = load(&args.model)?;
            Lm::Llama(Box::new((m, t)))
        }
    };
    let (layers, heads) = lm.dims();
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
    let text = match (&lm, args.chat) {
        (Lm::Llama(b), true) => apply_chat_template(&b.1, &prompt)?,
        (Lm::Toy(_), true) => {
            return Err(crate::usage!(
                "--chat: `{}` has no chat template (it is a model attend trained)",
                args.model
            ))
        }
        _ => prompt,
    };
    let prompt_tokens = match &lm {
        Lm::Llama(b) => b.1.encode(&text)?,
        Lm::Toy(m) => m
            .config
            .vocab
            .encode(&text)
            .map_err(|e| crate::usage!("{e}"))?,
    };
    let prompt_ids: Vec<u32> = prompt_tokens.iter().map(|t| t.id).collect();
    if prompt_ids.is_empty() {
        return Err(crate::usage!("the prompt is empty"));
    }
    // a toy model slides its window over longer texts; a Llama model has a hard limit
    if let Lm::Llama(b) = &lm {
        let model = &b.0;
        let ctx = model.config.context_length;
        if prompt_ids.len() + args.max_tokens > ctx {
            return Err(crate::usage!(
                "the prompt's {} tokens plus --max-tokens {} exceed the model's context of {ctx} tokens",
                prompt_ids.len(),
                args.max_tokens
            ));
        }
    }
    let mut texts: Vec<String> = prompt_tokens.iter().map(|t| t.text.clone()).collect();
    let mut out = std::io::stdout().lock();
    let mut stream = Utf8Stream::default();
    let mut records = Vec::new();
    let mut io_err: Option<std::io::Error> = None;
    let json_mode = args.format == GenFormat::Json;
    let mut on_token = |g: &GenToken| {
        let bytes = lm.token_bytes(g.id);
        let bytes = &bytes[..];
        let piece = match &lm {
            // a word model's end token adds no text; show it by name
            Lm::Toy(m) if bytes.is_empty() => m.config.vocab.token_text(g.id),
            _ => String::from_utf8_lossy(bytes).into_owned(),
        };
        let att = if args.explain {
            attended(g, layers, heads, args)
        } else {
            Vec::new()
        };
        let r = if json_mode {
            records.push(json!({
                "id": g.id, "text": piece, "logprob": g.logprob,
                "attended": att.iter().map(|a| json!({
                    "pos": a.pos, "text": texts[a.pos], "weight": a.weight})).collect::<Vec<_>>(),
            }));
            Ok(())
        } else if args.explain {
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
        } else {
            let s = stream.push(bytes);
            out.write_all(s.as_bytes()).and_then(|_| out.flush())
        };
        texts.push(piece);
        match r {
            Ok(()) => true,
            Err(e) => {
                io_err = Some(e);
                false
            }
        }
    };
    let stats = match &lm {
        Lm::Llama(b) => generate(
            &b.0,
            &b.1,
            &prompt_ids,
            args.max_tokens,
            &mut sampler,
            args.explain,
            &mut on_token,
        )?,
        Lm::Toy(m) => attend_models::toy::generate(
            m,
            &prompt_ids,
            args.max_tokens,
            &mut sampler,
            args.explain,
            &mut on_token,
        )?,
    };
    if let Some(e) = io_err {
        return Err(e.into());
    }
    let pp = stats.prompt_tokens as f64 / stats.prompt_secs.max(1e-9);
    let tg = stats.gen_tokens as f64 / stats.gen_secs.max(1e-9);
    if json_mode {
        let v = json!({
            "model": args.model,
            "prompt_ids": prompt_ids,
            "tokens": records,
            "stats": {"prompt_tokens": stats.prompt_tokens, "prompt_tokens_per_s": pp,
                      "gen_tokens": stats.gen_tokens, "gen_tokens_per_s": tg,
                      "stopped_at_eos": stats.stopped_at_eos},
        });
        writeln!(out, "{v}")?;
    } else {
        let rest = stream.finish();
        if args.explain {
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
        } else {
            writeln!(out, "{rest}")?;
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
    }
    Ok(())
}
