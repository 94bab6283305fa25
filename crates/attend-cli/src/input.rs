//! Reading texts from arguments or standard input, and loading models by name or path.

use std::io::Read;

use anyhow::{Context, Result};
use attend_models::generate::CausalLm;
use attend_models::models::{self, Kind, Model};
use attend_models::{Precision, SentenceEncoder};

/// The texts of the arguments; from standard input (one per line) when there are none or the
/// only one is `-`.
pub fn texts(args: &[String]) -> Result<Vec<String>> {
    texts_within(args, MAX_STDIN)
}

/// What `embed` reads from standard input at most (many texts, one per line).
pub const MAX_STDIN: u64 = 1 << 30;
/// What `explain` and `generate` read: one text, of which a model reads a few thousand tokens.
pub const MAX_ONE_TEXT: u64 = 1 << 20;

/// [`texts`], reading at most `max` bytes of standard input (more is a usage error, found
/// without reading the rest: memory follows what is used, not what is sent).
pub fn texts_within(args: &[String], max: u64) -> Result<Vec<String>> {
    let from_stdin = args.is_empty() || (args.len() == 1 && args[0] == "-");
    if !from_stdin {
        return Ok(args.to_vec());
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    if bytes.len() as u64 > max {
        return Err(crate::usage!(
            "standard input holds more than {} MiB; give a shorter text (a model reads a few \
             thousand tokens of it at most)",
            max >> 20
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "standard input is not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

/// What a model argument names, decided by `attend_models::models::identify` (the one place
/// that looks at names, folders and files); an unknown name or a path that is no model is a
/// usage error.
pub fn identify(model: &str) -> Result<Kind> {
    models::identify(model)
        .map(|(kind, _)| kind)
        .map_err(|e| match e {
            attend_models::Error::UnknownModel { .. } | attend_models::Error::Invalid(_) => {
                crate::usage!("{e}")
            }
            other => anyhow::Error::new(other).context(format!("model `{model}`")),
        })
}

/// Opens a model (a known one is fetched on first use, said on standard error); what is not
/// a model is a usage error, a model that fails to load a failure.
pub fn open(model: &str) -> Result<Model> {
    open_with(model, Precision::Float32)
}

/// [`open`] with a sentence encoder's linear layers at `precision`.
fn open_with(model: &str, precision: Precision) -> Result<Model> {
    identify(model)?;
    models::open_with(model, precision, &mut |m| eprintln!("{m}"))
        .with_context(|| format!("loading model `{model}`"))
}

/// Loads a BERT-family encoder by name (fetched on first use) or folder.
/// Its linear layers at `precision` (`--int8`).
pub fn encoder_with(model: &str, precision: Precision) -> Result<SentenceEncoder> {
    match identify(model)? {
        Kind::Toy => Err(crate::usage!(
            "`{model}` is a small causal model attend trained; this command takes a BERT-family \
             encoder (e.g. minilm). Explain it with `attend explain --model {model} TEXT`, or \
             continue a text with `attend generate --model {model} TEXT`"
        )),
        Kind::Causal => Err(crate::usage!(
            "`{model}` is a causal language model; this command takes a BERT-family encoder \
             (e.g. minilm). For what a language model attends to, use `attend explain --model \
             {model} TEXT` or `attend generate --explain`"
        )),
        Kind::Encoder => match open_with(model, precision)? {
            Model::Encoder(e) => Ok(*e),
            // the folder changed between the two looks
            _ => anyhow::bail!("`{model}` changed while it was read: it is no longer an encoder"),
        },
    }
}

/// [`encoder`], reading up to `max_len` tokens when given (`--max-len`: 2 up to the model's
/// position table) instead of its configured `max_seq_length`.
pub fn encoder_reading(
    model: &str,
    max_len: Option<usize>,
    precision: Precision,
) -> Result<SentenceEncoder> {
    let mut enc = encoder_with(model, precision)?;
    if let Some(n) = max_len {
        enc.set_max_len(n)
            .map_err(|e| crate::usage!("--max-len {n}: {e}"))?;
    }
    Ok(enc)
}

/// The warning for a text `what` an encoder cut at its length, saying how far `--max-len` can
/// take it where the model's positions allow more.
pub fn truncated_warning(enc: &SentenceEncoder, what: &str) -> String {
    let most = enc.max_positions();
    let hint = if enc.max_len < most {
        format!(
            "; the model was trained on {} but its positions allow {most}: --max-len {most}",
            enc.max_len
        )
    } else {
        String::new()
    };
    format!(
        "warning: {what} is longer than the {} tokens the model reads and was truncated{hint}",
        enc.max_len
    )
}

/// A causal language model (a GGUF decoder or a model attend trained) by name or path.
pub fn causal(model: &str) -> Result<Box<dyn CausalLm>> {
    if identify(model)? == Kind::Encoder {
        return Err(crate::usage!(
            "`{model}` is a sentence encoder; this command takes a causal language model \
             (e.g. smollm2, gemma3, a .gguf file, or toy-winograd)"
        ));
    }
    // `None`: the folder changed between the two looks
    open(model)?.into_causal().ok_or_else(|| {
        anyhow::anyhow!("`{model}` changed while it was read: it is no longer a language model")
    })
}

/// `--page-mib` in bytes: a positive number of MiB, at most 4096.
pub fn page_budget(mib: f64) -> Result<usize> {
    if !(mib.is_finite() && mib > 0.0 && mib <= 4096.0) {
        return Err(crate::usage!(
            "--page-mib {mib} is out of range: give a size in MiB above 0 and at most 4096"
        ));
    }
    Ok((mib * (1 << 20) as f64) as usize)
}
