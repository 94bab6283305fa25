//! `effect` (knockout of source tokens, ablation of heads) against transformers with hooks on
//! the same GGUF files, float32, eager attention (tests/golden/effect.json, written by
//! scripts/golden_effect.py: a knockout puts the mask's minimum on the removed edges of each
//! chosen layer's attention mask, an ablation replaces the head's slice of `o_proj`'s input).
//!
//! In exact mode (float32 activations), Δ log p(target) of every knockout and every head
//! within `TOL` = 1e-3: every architecture's tiny GGUF (tests/tiny; windows of 8 keys),
//! SmolLM2 and Gemma 3 — on Gemma 3 also a prompt longer than its 512-key window. Knockout
//! variants: from every later position, from the predicting position only, within a range of
//! layers, several positions together; a target of several tokens; zero and mean ablation.
//! The goldens also hold a knockout that removes the source's own edge (j, j) as well: where
//! that differs from the right one by more than 3 × the tolerance (on every model, at some
//! source), attend must be more than 2 × the tolerance from it (a knockout that cut edges at
//! or before the source would fail here).
//!
//! The models are fetched into attend's cache on first run, or read from `$ATTEND_SMOLLM2` /
//! `$ATTEND_GEMMA3`.

mod common;

use attend_models::models::decoder::Decoder;
use attend_models::models::load_decoder;
use attend_models::trace::effect::{Ablation, Effect, EffectSpec, Knockout};
use common::{floats, ids, model_path};
use serde_json::Value;

const TOL: f32 = 1e-3;

fn golden() -> Value {
    common::golden(
        "golden/effect.json",
        "python3 scripts/golden_effect.py SMOLLM2.gguf GEMMA3.gguf",
    )
}

/// The golden's `{"position": delta}` map as `(position, delta)` pairs.
fn by_position(v: &Value) -> Vec<(usize, f32)> {
    let mut out: Vec<(usize, f32)> = v
        .as_object()
        .expect("a map of positions")
        .iter()
        .map(|(k, d)| (k.parse().unwrap(), d.as_f64().unwrap() as f32))
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

fn run(m: &Decoder, c: &Value, spec: EffectSpec) -> Effect {
    let prompt = m.tokenizer.encode(c["text"].as_str().unwrap()).unwrap();
    let got: Vec<u32> = prompt.iter().map(|t| t.id).collect();
    assert_eq!(got, ids(&c["prompt_ids"]), "prompt ids");
    m.effect(&prompt, &ids(&c["target_ids"]), &spec).unwrap()
}

/// Checks the knockouts of `want` (a position → Δ map) in `e`, whose sources are single
/// positions; returns the worst difference.
fn check_knockouts(name: &str, what: &str, e: &Effect, want: &Value) -> f32 {
    let mut worst = 0.0f32;
    for (j, d) in by_position(want) {
        let s = e
            .sources
            .iter()
            .find(|s| s.positions == [j])
            .expect("a source per position");
        let diff = (s.delta - d).abs();
        assert!(
            diff <= TOL,
            "{name} {what}: knockout of {j}: {} vs transformers {d}",
            s.delta
        );
        worst = worst.max(diff);
    }
    worst
}

fn check_heads(name: &str, what: &str, e: &Effect, want: &Value) -> f32 {
    let want = floats(want);
    assert_eq!(e.head_delta.len(), want.len(), "{name} {what}: heads");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in e.head_delta.iter().zip(&want).enumerate() {
        let diff = (a - b).abs();
        assert!(
            diff <= TOL,
            "{name} {what}: head {i}: {a} vs transformers {b}"
        );
        worst = worst.max(diff);
    }
    worst
}

fn spec_for(c: &Value, knockout: Knockout, heads: bool) -> EffectSpec {
    let groups = c["knockout_later"].as_object().map(|m| {
        let mut g: Vec<Vec<usize>> = m.keys().map(|k| vec![k.parse().unwrap()]).collect();
        g.sort();
        g
    });
    EffectSpec {
        knockout,
        groups,
        heads,
        ..EffectSpec::default()
    }
}

/// `mean`: check the mean ablations too (270 more exact runs on SmolLM2; the tiny models
/// check them on every architecture).
fn check_model(name: &str, m: &mut Decoder, g: &Value, mean: bool) {
    m.exact = true;
    for (ci, c) in g["cases"].as_array().unwrap().iter().enumerate() {
        let name = format!("{name} case {ci}");
        let heads = c.get("heads_zero").is_some();
        let e = run(m, c, spec_for(c, Knockout::Later, heads));
        let base = c["logp"].as_f64().unwrap() as f32;
        assert!(
            (e.logp - base).abs() <= TOL,
            "{name}: log p {} vs {base}",
            e.logp
        );
        let mut worst = check_knockouts(&name, "later", &e, &c["knockout_later"]);
        if heads {
            worst = worst.max(check_heads(&name, "zero ablation", &e, &c["heads_zero"]));
        }
        if let Some(wrong) = c.get("knockout_wrong") {
            // the goldens tell a knockout that also cuts (j, j) apart; attend is the right one
            let apart: Vec<(usize, f32)> = by_position(wrong)
                .into_iter()
                .zip(by_position(&c["knockout_later"]))
                .filter(|((_, w), (_, r))| (w - r).abs() > 3.0 * TOL)
                .map(|((j, w), _)| (j, w))
                .collect();
            assert!(
                !apart.is_empty(),
                "{name}: the wrong knockout is not told apart"
            );
            for (j, w) in apart {
                let s = e.sources.iter().find(|s| s.positions == [j]).unwrap();
                assert!(
                    (s.delta - w).abs() > 2.0 * TOL,
                    "{name}: {j} cut at the source"
                );
            }
        }
        if let Some(want) = c.get("knockout_predicting") {
            let e = run(m, c, spec_for(c, Knockout::Predicting, false));
            worst = worst.max(check_knockouts(&name, "predicting", &e, want));
        }
        if let Some(want) = c.get("knockout_layers") {
            let r = ids(&c["layers"]);
            let mut spec = spec_for(c, Knockout::Later, false);
            spec.layers = Some(r[0] as usize..r[1] as usize);
            let e = run(m, c, spec);
            worst = worst.max(check_knockouts(&name, "layer range", &e, want));
        }
        if let Some(groups) = c["groups"].as_array().filter(|g| !g.is_empty()) {
            let spec = EffectSpec {
                groups: Some(
                    groups
                        .iter()
                        .map(|g| ids(&g["positions"]).iter().map(|&p| p as usize).collect())
                        .collect(),
                ),
                heads: false,
                ..EffectSpec::default()
            };
            let e = run(m, c, spec);
            for (s, g) in e.sources.iter().zip(groups) {
                let d = g["delta"].as_f64().unwrap() as f32;
                assert!(
                    (s.delta - d).abs() <= TOL,
                    "{name}: group {:?}: {} vs {d}",
                    s.positions,
                    s.delta
                );
                worst = worst.max((s.delta - d).abs());
            }
        }
        if let Some(want) = c.get("heads_mean").filter(|_| mean) {
            let spec = EffectSpec {
                groups: Some(vec![vec![0]]),
                ablation: Ablation::Mean,
                ..EffectSpec::default()
            };
            let e = run(m, c, spec);
            worst = worst.max(check_heads(&name, "mean ablation", &e, want));
        }
        eprintln!("{name}: every Δ log p within {worst:.1e} of transformers");
    }
}

#[test]
fn tiny_decoders_knock_out_and_ablate_as_transformers_with_hooks() {
    let g = golden();
    for name in ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/tiny")
            .join(format!("{name}.gguf"));
        let mut m = load_decoder(&path).unwrap();
        check_model(name, &mut m, &g[name], true);
    }
}

#[test]
fn smollm2_knocks_out_and_ablates_as_transformers_with_hooks() {
    let mut m = load_decoder(&model_path("smollm2", "ATTEND_SMOLLM2")).unwrap();
    check_model("smollm2", &mut m, &golden()["smollm2"], false);
}

#[test]
fn gemma3_knocks_out_across_its_window_as_transformers_with_hooks() {
    let mut m = load_decoder(&model_path("gemma3", "ATTEND_GEMMA3")).unwrap();
    check_model("gemma3", &mut m, &golden()["gemma3"], false);
}

/// Reusing the unchanged prefix and the residual stream below an ablated head changes no
/// number: the sweep with reuse equals the one that recomputes everything.
#[test]
fn reuse_computes_what_recomputing_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tiny/gemma2.gguf");
    let m = load_decoder(&path).unwrap();
    let prompt = m
        .tokenizer
        .encode("the cat sat on the mat because it was tired and the dog")
        .unwrap();
    for knockout in [Knockout::Later, Knockout::Predicting] {
        for ablation in [Ablation::Zero, Ablation::Mean] {
            let spec = EffectSpec {
                knockout,
                ablation,
                ..EffectSpec::default()
            };
            let target = [prompt[3].id, prompt[4].id];
            let a = m.effect(&prompt, &target, &spec).unwrap();
            let b = m
                .effect(
                    &prompt,
                    &target,
                    &EffectSpec {
                        reuse: false,
                        ..spec
                    },
                )
                .unwrap();
            assert!(a.work.done < b.work.done && b.work.done == b.work.naive);
            assert_eq!(a.sources.len(), b.sources.len());
            assert_eq!(a.head_delta.len(), b.head_delta.len());
            assert_eq!(a.head_delta.len(), a.layers * a.heads);
            for (x, y) in a.sources.iter().zip(&b.sources) {
                assert!(
                    (x.delta - y.delta).abs() < 1e-4,
                    "{knockout:?}: {x:?} vs {y:?}"
                );
            }
            for (x, y) in a.head_delta.iter().zip(&b.head_delta) {
                assert!((x - y).abs() < 1e-4, "{ablation:?}: {x} vs {y}");
            }
        }
    }
}

/// A target id past the vocabulary (one a hostile tokenizer could hand out) is refused, not
/// indexed: the last target token is scored without being run.
#[test]
fn a_target_outside_the_vocabulary_is_refused() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tiny/gemma2.gguf");
    let m = load_decoder(&path).unwrap();
    let prompt = m.tokenizer.encode("the cat sat").unwrap();
    let vocab = m.config.vocab as u32;
    for target in [vec![vocab], vec![prompt[0].id, u32::MAX]] {
        let e = m
            .effect(&prompt, &target, &EffectSpec::default())
            .unwrap_err();
        assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    }
}

/// The encoder: MiniLM's sentence embedding with each token knocked out (its key hidden from
/// every query, in all layers and in layers 2..4), two groups of tokens knocked out together,
/// and each head zero-ablated — 1 − cos to the unedited embedding within 1e-5 of transformers'
/// BertModel with the same hooks (the embedding is a unit vector, so 1e-5 is a change of angle
/// of a few thousandths of a degree near 0).
#[test]
fn minilm_knocks_out_and_ablates_as_transformers_with_hooks() {
    use attend_models::models::encoder::SentenceEncoder;
    let enc = SentenceEncoder::load(&model_path("minilm", "ATTEND_MINILM")).expect("minilm");
    let g = golden();
    let cases = g["minilm"]["cases"].as_array().expect("minilm cases");
    let mut worst = 0.0f32;
    let mut cmp = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len(), "{what}: count");
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            worst = worst.max((a - b).abs());
            assert!(
                (a - b).abs() < 1e-5,
                "{what} {i}: attend {a} transformers {b}"
            );
        }
    };
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let layers = c["layers"]
            .as_array()
            .map(|r| r[0].as_u64().unwrap() as usize..r[1].as_u64().unwrap() as usize);
        let spec = EffectSpec {
            layers: layers.clone(),
            heads: c.get("heads").is_some(),
            ..EffectSpec::default()
        };
        let e = enc.effect(text, &spec).unwrap();
        let deltas: Vec<f32> = e.sources.iter().map(|s| s.delta).collect();
        cmp("token knockout", &deltas, &floats(&c["tokens_delta"]));
        if let Some(hd) = c.get("heads") {
            cmp("head ablation", &e.head_delta, &floats(hd));
        }
        if let Some(groups) = c["groups"].as_array() {
            let groups: Vec<Vec<usize>> = groups
                .iter()
                .map(|g| ids(g).into_iter().map(|p| p as usize).collect())
                .collect();
            let spec = EffectSpec {
                groups: Some(groups),
                layers,
                heads: false,
                ..EffectSpec::default()
            };
            let e = enc.effect(text, &spec).unwrap();
            let deltas: Vec<f32> = e.sources.iter().map(|s| s.delta).collect();
            cmp("group knockout", &deltas, &floats(&c["groups_delta"]));
        }
    }
    eprintln!("minilm effect: worst difference {worst:e}");
    // what an encoder cannot be asked
    let bad = EffectSpec {
        knockout: Knockout::Predicting,
        ..EffectSpec::default()
    };
    assert!(enc.effect("a b", &bad).is_err());
    let bad = EffectSpec {
        ablation: Ablation::Mean,
        ..EffectSpec::default()
    };
    assert!(enc.effect("a b", &bad).is_err());
}

/// The batched head ablations (`forward_from_heads`: several sequences through the linear
/// layers together, each over its own cache) are the one-at-a-time ones (`forward_from`), for
/// batches of one, two and an uneven split, on a windowed model (Mistral's tiny GGUF, window
/// 8) with a text longer than its window; edits below the starting layer are refused.
#[test]
fn batched_head_ablations_are_the_single_ones() {
    use attend_models::models::decoder::{Edit, HeadEdit, Record};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tiny/mistral.gguf");
    let m = load_decoder(&path).unwrap();
    let ids: Vec<u32> = m
        .tokenizer
        .encode("the cat sat on the mat because it was tired and the dog ran off to the river")
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert!(ids.len() > 8);
    let mut cache = m.new_cache().unwrap();
    let mut record = Record::default();
    let keep = Edit {
        keep_cache: true,
        ..Edit::default()
    };
    m.forward_edited(&ids, &mut cache, 1, &keep, Some(&mut record))
        .unwrap();
    let layers = record.inputs.len();
    let heads = 4;
    for l in [0, layers - 1] {
        let edits: Vec<HeadEdit> = (0..heads)
            .map(|h| HeadEdit {
                layer: l,
                head: h,
                value: None,
            })
            .collect();
        let single: Vec<Vec<f32>> = edits
            .iter()
            .map(|e| {
                let edit = Edit {
                    head: Some(e.clone()),
                    keep_cache: true,
                    ..Edit::default()
                };
                let mut c = m.new_cache().unwrap();
                m.forward_from(record.inputs[l].clone(), l, &mut c, 2, &edit)
                    .unwrap()
            })
            .collect();
        let mut caches = Vec::new();
        for split in [1, 2, 3, 4] {
            let mut got = Vec::new();
            for chunk in edits.chunks(split) {
                got.extend(
                    m.forward_from_heads(&record.inputs[l], l, &mut caches, 2, chunk)
                        .unwrap(),
                );
            }
            assert_eq!(got.len(), heads);
            for (h, (a, b)) in got.iter().zip(&single).enumerate() {
                assert_eq!(a.len(), b.len());
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(
                    worst < 1e-4,
                    "layer {l} head {h}, batches of {split}: {worst}"
                );
            }
        }
    }
    let below = HeadEdit {
        layer: 0,
        head: 0,
        value: None,
    };
    assert!(m
        .forward_from_heads(&record.inputs[1], 1, &mut Vec::new(), 1, &[below])
        .is_err());
}
