//! Gemma 3 270M (GGUF Q4_K_M) against transformers loading the same file
//! (tests/golden/gemma3.json, written by scripts/golden_gemma3.py): so far the tokenizer only —
//! the model itself is not built yet. Needs the file: `ATTEND_GEMMA3=path/to/gemma-3-270m-
//! q4_k_m.gguf cargo test -p attend-models --test gemma3_golden -- --ignored` (the registry
//! entry that fetches it is not built yet either).

use attend_models::formats::gguf::GgufFile;
use attend_models::tokenize::gguf::GgufTokenizer;
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
#[ignore = "needs ATTEND_GEMMA3=path/to/gemma-3-270m-q4_k_m.gguf (no registry entry yet)"]
fn token_ids_match_transformers() {
    let path = std::env::var("ATTEND_GEMMA3").expect("ATTEND_GEMMA3: the gemma3 GGUF file");
    let f = GgufFile::open(std::path::Path::new(&path)).unwrap();
    let t0 = std::time::Instant::now();
    let tok = GgufTokenizer::from_gguf(&f.header).unwrap();
    eprintln!("tokenizer built in {:?}", t0.elapsed());
    let g: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/gemma3.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut bad = 0;
    for t in g["texts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(g["prompts"].as_array().unwrap())
    {
        let text = t.get("text").or(t.get("prompt")).unwrap().as_str().unwrap();
        let got: Vec<u32> = tok.encode(text).unwrap().iter().map(|t| t.id).collect();
        if got != ids(&t["ids"]) {
            bad += 1;
            eprintln!("{text:?}\n got  {got:?}\n want {:?}", ids(&t["ids"]));
        }
    }
    assert_eq!(bad, 0);
}
