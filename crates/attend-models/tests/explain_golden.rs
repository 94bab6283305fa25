//! `explain` on SmolLM2-135M (Q4_1) and Gemma 3 270M (Q4_K_M) against transformers loading
//! the same GGUF files, float32, eager attention, `output_attentions=True`
//! (tests/golden/explain.json, written by scripts/golden_explain.py).
//!
//! - Exact mode (float32 activations, what transformers computes): every layer × head × query
//!   × key of the seed's sentence within `EXACT` = 1e-4, the value norms ‖W_o[:, h] · v_j‖
//!   within 1e-3 relative; on Gemma 3, a 920-token prompt — longer than its 512-key window —
//!   two rows past the window of every layer × head within 1e-4, where a local layer's row
//!   is 0 before the window and a global layer's is not (a test that fails if the window were
//!   ignored, or applied everywhere).
//! - Fast mode (8-bit activations): the weights within `FAST`, the measured worst (printed)
//!   being what rounding every product's activations to 8 bits does to the scores.
//!
//! The models are fetched into attend's cache on first run, or read from `$ATTEND_SMOLLM2` /
//! `$ATTEND_GEMMA3`.

mod common;

use attend_models::models::load_decoder;
use common::{flat, ids, model_path};
use serde_json::Value;

const EXACT: f32 = 1e-4;
/// The fast path quantises every product's activations to 8 bits per 32 values (per 256 for
/// the k-quants), as llama.cpp does: the scores move by up to about a tenth (SmolLM2's fast
/// logits move by up to 0.35, see smollm2_golden.rs), and a weight with them — most in the
/// large weights of sink columns. Measured worst: 0.067 (SmolLM2), 0.026 (Gemma 3); 0.1.
const FAST: f32 = 0.1;

fn golden() -> Value {
    common::golden(
        "golden/explain.json",
        "python3 scripts/golden_explain.py SMOLLM2.gguf GEMMA3.gguf",
    )
}

/// The largest difference between `got` and the flattened `want`.
fn worst(got: &[f32], want: &Value) -> f32 {
    let w = flat(want);
    assert_eq!(got.len(), w.len());
    got.iter()
        .zip(&w)
        .map(|(&a, &b)| (a - b as f32).abs())
        .fold(0.0, f32::max)
}

fn check_full(name: &str, env: &str, g: &Value) {
    let mut m = load_decoder(&model_path(name, env)).unwrap();
    let p = &g["prompts"][0];
    let tokens = m.tokenizer.encode(p["text"].as_str().unwrap()).unwrap();
    let got_ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    assert_eq!(got_ids, ids(&p["ids"]), "{name}: token ids");
    for (exact, tol) in [(true, EXACT), (false, FAST)] {
        m.exact = exact;
        let (trace, _) = m.explain_tokens(&tokens).unwrap();
        let mut d = 0.0f32;
        for l in 0..trace.layers {
            for h in 0..trace.heads {
                d = d.max(worst(&trace.matrix(l, h), &p["attention"][l][h]));
            }
        }
        eprintln!("{name} (exact {exact}): every weight within {d:.2e}");
        assert!(d <= tol, "{name} (exact {exact}): attention off by {d}");
        if exact {
            let want = flat(&p["value_norms"]);
            let rel = trace
                .value_norms
                .iter()
                .zip(&want)
                .map(|(&a, &b)| ((a as f64 - b) / b.abs().max(1e-6)).abs())
                .fold(0.0, f64::max);
            eprintln!("{name}: value norms within {rel:.1e} (relative)");
            assert!(rel < 1e-3, "{name}: value norms off by {rel}");
        }
    }
}

#[test]
fn smollm2_explains_every_head_as_transformers_does() {
    check_full("smollm2", "ATTEND_SMOLLM2", &golden()["smollm2"]);
}

#[test]
fn gemma3_explains_every_head_as_transformers_does() {
    check_full("gemma3", "ATTEND_GEMMA3", &golden()["gemma3"]);
}

#[test]
fn gemma3_rows_past_the_window_stop_at_it_on_local_layers() {
    let g = &golden()["gemma3"];
    let mut m = load_decoder(&model_path("gemma3", "ATTEND_GEMMA3")).unwrap();
    let window = g["window"].as_u64().unwrap() as usize;
    assert_eq!(window, m.config.window);
    let p = &g["prompts"][1];
    let tokens = m.tokenizer.encode(p["text"].as_str().unwrap()).unwrap();
    let n = tokens.len();
    assert!(n > window + 100, "{n} tokens");
    let queries: Vec<usize> = p["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_u64().unwrap() as usize)
        .collect();
    m.exact = true;
    let (trace, _) = m.explain_tokens(&tokens).unwrap();
    // a local layer stores only its window: less than the causal half of the matrix
    assert!(trace.stored() < trace.layers * trace.heads * n * (n + 1) / 2 * 9 / 10);
    let mut d = 0.0f32;
    for l in 0..trace.layers {
        for h in 0..trace.heads {
            for (i, &q) in queries.iter().enumerate() {
                let row = trace.row(l, h, q);
                d = d.max(worst(&row, &p["rows"][l][h][i]));
                let before: f32 = row[..q + 1 - window].iter().sum();
                if m.config.local[l] {
                    assert_eq!(
                        before, 0.0,
                        "layer {l} head {h} query {q}: sees past the window"
                    );
                } else {
                    assert!(
                        before > 0.0,
                        "layer {l} head {h} query {q}: global, yet windowed"
                    );
                }
            }
        }
    }
    eprintln!("gemma3, {n} tokens: rows past the window within {d:.2e}");
    assert!(d <= EXACT, "off by {d}");
}
