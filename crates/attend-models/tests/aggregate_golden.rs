//! What the viewer shows next to MiniLM's attention — rollout, value norms ‖f_h(x_j)‖ and the
//! head atlas's statistics — against transformers (PyTorch, eager attention) on the same
//! weights and NumPy written from the papers (tests/golden/aggregate.json, written by
//! scripts/golden_aggregate.py).

mod common;

use attend_models::SentenceEncoder;
use common::{flat, model_path};

fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(&model_path("minilm", "ATTEND_MINILM")).expect("loading minilm")
}

#[test]
fn rollout_value_norms_and_head_statistics_match_transformers() {
    let g = common::golden(
        "golden/aggregate.json",
        "python3 scripts/golden_aggregate.py MODEL_DIR",
    );
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
        let want = flat(&case["rollout"]);
        let got = trace.rollout();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "rollout differs by {worst}");
        // value norms: relative 1e-4 (they are norms of 384-wide vectors, ~1–10)
        let want = flat(&case["value_norms"]);
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
