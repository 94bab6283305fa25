//! `attend embed`: sentence embeddings, and their cosine similarities.

use std::io::Write;

use anyhow::Result;
use serde_json::json;

use crate::Format;

/// Arguments of `attend embed`.
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    /// Model: a name (`attend models`) or a BERT-family folder.
    #[arg(long, default_value = "minilm")]
    model: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print the cosine-similarity matrix of the inputs instead of the vectors.
    #[arg(long)]
    similarity: bool,
    /// Read up to this many tokens per text (at most the model's position table, 512 for
    /// MiniLM) instead of the length it was trained on (256 for MiniLM).
    #[arg(long)]
    max_len: Option<usize>,
    /// Quantise the encoder's linear layers to 8 bits (`Q8_0` weights, activations per row,
    /// integer dot products): faster, within cosine 0.999 of the float32 embeddings on the
    /// texts tried (bench/README.md).
    #[arg(long)]
    int8: bool,
    /// Texts; none or `-` reads standard input, one text per line.
    texts: Vec<String>,
}

/// Runs `attend embed`.
pub fn run(a: &EmbedArgs) -> Result<()> {
    let texts = crate::input::texts(&a.texts)?;
    if texts.is_empty() {
        return Err(crate::usage!(
            "no text to embed: give texts as arguments or lines on standard input"
        ));
    }
    let precision = if a.int8 {
        attend_models::Precision::Int8
    } else {
        attend_models::Precision::Float32
    };
    let enc = crate::input::encoder_reading(&a.model, a.max_len, precision)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let e = enc.embed(&refs)?;
    for &i in &e.truncated {
        eprintln!(
            "{}",
            crate::input::truncated_warning(&enc, &format!("text {}", i + 1))
        );
    }
    let cos = |x: &[f32], y: &[f32]| {
        let d: f32 = x.iter().zip(y).map(|(a, b)| a * b).sum();
        let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        d / (n(x) * n(y))
    };
    // n × n: only when asked for (a corpus's vectors must not cost its square)
    let sim: Vec<Vec<f32>> = if a.similarity {
        e.vectors
            .iter()
            .map(|x| e.vectors.iter().map(|y| cos(x, y)).collect())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = std::io::stdout().lock();
    match (a.format, a.similarity) {
        (Format::Json, false) => writeln!(
            out,
            "{}",
            json!({"model": a.model, "int8": a.int8, "dim": e.dim, "embeddings": e.vectors})
        )?,
        (Format::Json, true) => writeln!(
            out,
            "{}",
            json!({"model": a.model, "texts": texts, "similarity": sim})
        )?,
        (Format::Text, false) => {
            for (t, v) in texts.iter().zip(&e.vectors) {
                let nums: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
                writeln!(out, "# {t}\n{}", nums.join(" "))?;
            }
        }
        (Format::Text, true) => {
            for (i, t) in texts.iter().enumerate() {
                writeln!(out, "[{}] {t}", i + 1)?;
            }
            write!(out, "{:>6}", "")?;
            for j in 0..texts.len() {
                write!(out, "{:>7}", format!("[{}]", j + 1))?;
            }
            writeln!(out)?;
            for (i, row) in sim.iter().enumerate() {
                write!(out, "{:>6}", format!("[{}]", i + 1))?;
                for x in row {
                    write!(out, "{x:>7.3}")?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
