//! A missing, corrupt or truncated model file is an error that names the file and the problem;
//! never a panic. A tiny BERT written here stands in for a real one.

use std::collections::HashMap;
use std::path::Path;

use attend_models::models::bert::BertModel;
use attend_models::{Error, SentenceEncoder};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const CONFIG: &str = r#"{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
  "intermediate_size": 16, "max_position_embeddings": 12, "vocab_size": 10, "type_vocab_size": 2,
  "layer_norm_eps": 1e-12, "hidden_act": "gelu", "model_type": "bert"}"#;

fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![10, 8]),
        ("embeddings.position_embeddings.weight".into(), vec![12, 8]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, 8]),
        ("embeddings.LayerNorm.weight".into(), vec![8]),
        ("embeddings.LayerNorm.bias".into(), vec![8]),
    ];
    for (n, s) in [
        ("attention.self.query.weight", vec![8, 8]),
        ("attention.self.query.bias", vec![8]),
        ("attention.self.key.weight", vec![8, 8]),
        ("attention.self.key.bias", vec![8]),
        ("attention.self.value.weight", vec![8, 8]),
        ("attention.self.value.bias", vec![8]),
        ("attention.output.dense.weight", vec![8, 8]),
        ("attention.output.dense.bias", vec![8]),
        ("attention.output.LayerNorm.weight", vec![8]),
        ("attention.output.LayerNorm.bias", vec![8]),
        ("intermediate.dense.weight", vec![16, 8]),
        ("intermediate.dense.bias", vec![16]),
        ("output.dense.weight", vec![8, 16]),
        ("output.dense.bias", vec![8]),
        ("output.LayerNorm.weight", vec![8]),
        ("output.LayerNorm.bias", vec![8]),
    ] {
        t.push((format!("encoder.layer.0.{n}"), s));
    }
    t
}

/// Writes a tiny model into `dir`; `skip` leaves one tensor out, `bad_shape` gives one a
/// wrong shape.
fn write_model(dir: &Path, skip: Option<&str>, bad_shape: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let specs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors()
        .into_iter()
        .filter(|(n, _)| Some(n.as_str()) != skip)
        .map(|(n, mut s)| {
            if Some(n.as_str()) == bad_shape {
                s[0] += 1;
            }
            let count: usize = s.iter().product();
            let bytes = (0..count)
                .flat_map(|i| ((i % 7) as f32 * 0.1 - 0.3).to_le_bytes())
                .collect();
            (n, s, bytes)
        })
        .collect();
    save_f32(&specs, &dir.join("model.safetensors"));
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("attend-bad-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_tiny_valid_model_runs() {
    let d = tmp("valid");
    write_model(&d, None, None);
    let m = BertModel::load(&d).unwrap();
    let out = m.forward(&[vec![1, 2, 3], vec![4, 5]], true).unwrap();
    assert_eq!(out.hidden.len(), 5 * 8);
    assert!(out.hidden.iter().all(|x| x.is_finite()));
    // attention rows sum to 1: [layer][head][q][k] for a 3-token sequence
    for row in out.attention[0].chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    // out-of-vocabulary ids and over-long sequences are errors, not panics
    assert!(matches!(
        m.forward(&[vec![10]], false),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.forward(&[vec![1; 13]], false),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        m.forward(&[vec![]], false),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn missing_files_are_named() {
    let d = tmp("missing");
    std::fs::create_dir_all(&d).unwrap();
    let e = BertModel::load(&d).err().unwrap();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("config.json")),
        "{e}"
    );
    write_model(&d, None, None);
    let e = SentenceEncoder::load(&d).err().unwrap();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    let e = SentenceEncoder::load(&d.join("nope")).err().unwrap();
    assert!(e.to_string().contains("not a model folder"), "{e}");
}

#[test]
fn corrupt_config_and_weights_are_named() {
    let d = tmp("corrupt");
    write_model(&d, None, None);
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    let e = BertModel::load(&d).err().unwrap();
    assert!(
        matches!(&e, Error::Format { path, .. } if path.ends_with("config.json")),
        "{e}"
    );
    std::fs::write(
        d.join("config.json"),
        CONFIG.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
    )
    .unwrap();
    assert!(BertModel::load(&d)
        .err()
        .unwrap()
        .to_string()
        .contains("multiple"));
    std::fs::write(d.join("config.json"), CONFIG).unwrap();

    // every truncation of the weights file is refused with its name, never a panic
    let good = std::fs::read(d.join("model.safetensors")).unwrap();
    for cut in [0, 4, 8, 9, 50, good.len() / 2, good.len() - 1] {
        std::fs::write(d.join("model.safetensors"), &good[..cut]).unwrap();
        let e = BertModel::load(&d)
            .err()
            .expect("a truncated file must not load");
        assert!(
            matches!(&e, Error::Format { path, .. } if path.ends_with("model.safetensors")),
            "cut {cut}: {e}"
        );
    }
    // garbage bytes, and a header that claims more than the file holds
    let mut bad = good.clone();
    bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(d.join("model.safetensors"), &bad).unwrap();
    assert!(matches!(
        BertModel::load(&d).err().unwrap(),
        Error::Format { .. }
    ));
    let mut flipped = good.clone();
    for i in (8..flipped.len().min(400)).step_by(7) {
        flipped[i] ^= 0x5a;
    }
    std::fs::write(d.join("model.safetensors"), &flipped).unwrap();
    assert!(BertModel::load(&d).is_err());
}

#[test]
fn wrong_or_missing_tensors_are_named() {
    let d = tmp("tensors");
    write_model(&d, Some("encoder.layer.0.attention.self.key.bias"), None);
    let e = BertModel::load(&d).err().unwrap();
    assert!(
        matches!(&e, Error::MissingTensor { name, .. } if name == "encoder.layer.0.attention.self.key.bias"),
        "{e}"
    );
    write_model(&d, None, Some("encoder.layer.0.intermediate.dense.weight"));
    let e = BertModel::load(&d).err().unwrap();
    assert!(
        matches!(&e, Error::TensorShape { name, .. } if name == "encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );
}

/// Every number of config.json is checked against its range and the tensors before anything
/// is allocated from it; the error names the file and the field.
#[test]
fn every_config_number_is_checked_naming_the_field() {
    let d = tmp("fields");
    write_model(&d, None, None);
    let cases = [
        ("num_hidden_layers", "1", "0"),
        ("num_hidden_layers", "1", "2"),
        ("num_hidden_layers", "1", "1000000000"),
        ("hidden_size", "8", "0"),
        ("hidden_size", "8", "100000000000"),
        ("num_attention_heads", "2", "0"),
        ("num_attention_heads", "2", "16"),
        ("intermediate_size", "16", "0"),
        ("max_position_embeddings", "12", "0"),
        ("vocab_size", "10", "0"),
        ("type_vocab_size", "2", "0"),
        ("layer_norm_eps", "1e-12", "-1"),
        ("layer_norm_eps", "1e-12", "0"),
        ("layer_norm_eps", "1e-12", "1e300"),
    ];
    for (field, good, bad) in cases {
        let cfg = CONFIG.replace(
            &format!("\"{field}\": {good}"),
            &format!("\"{field}\": {bad}"),
        );
        assert_ne!(cfg, CONFIG, "{field}");
        std::fs::write(d.join("config.json"), &cfg).unwrap();
        let e = BertModel::load(&d)
            .err()
            .unwrap_or_else(|| panic!("{field} = {bad} loaded"));
        let msg = e.to_string();
        assert!(
            msg.contains("config.json") && msg.contains(field),
            "{field} = {bad}: {msg}"
        );
    }
    // hidden sizes that disagree with the tensors are refused by the tensors' shapes
    std::fs::write(
        d.join("config.json"),
        CONFIG.replace("\"vocab_size\": 10", "\"vocab_size\": 11"),
    )
    .unwrap();
    assert!(BertModel::load(&d).is_err());
    std::fs::write(d.join("config.json"), CONFIG).unwrap();
    BertModel::load(&d).unwrap();
}

/// Broken weights (a NaN) fail at the layer where they surface, naming it; never an answer.
#[test]
fn non_finite_activations_name_the_layer() {
    let d = tmp("nan");
    write_model(&d, None, None);
    // rewrite one weight of layer 0's value projection as NaN
    let path = d.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut specs: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (n, _, data) in &mut specs {
        if n == "encoder.layer.0.attention.self.value.weight" {
            data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    }
    save_f32(&specs, &path);
    let m = BertModel::load(&d).unwrap();
    let e = m.forward(&[vec![1, 2, 3]], false).err().unwrap();
    assert!(
        matches!(&e, Error::NonFinite { at, .. } if at.contains("layer 0")),
        "{e}"
    );
}

/// A folder where a file should be, and a sentence-transformers config with a bad number.
#[test]
fn folders_for_files_and_bad_sbert_numbers_are_named() {
    let d = tmp("dir-for-file");
    write_model(&d, None, None);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::create_dir_all(d.join("model.safetensors")).unwrap();
    let e = BertModel::load(&d).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("folder"),
        "{e}"
    );
    assert!(!e.contains("os error"), "{e}");

    let d = tmp("sbert");
    write_model(&d, None, None);
    for bad in ["0", "\"long\"", "-3", "1.5"] {
        std::fs::write(
            d.join("sentence_bert_config.json"),
            format!("{{\"max_seq_length\": {bad}}}"),
        )
        .unwrap();
        let e = SentenceEncoder::load(&d).err().unwrap().to_string();
        assert!(
            e.contains("sentence_bert_config.json") && e.contains("max_seq_length"),
            "{bad}: {e}"
        );
    }
}

/// Writes float32 tensors `(name, shape, little-endian bytes)` as a safetensors file.
fn save_f32(specs: &[(String, Vec<usize>, Vec<u8>)], path: &Path) {
    let views: HashMap<String, TensorView> = specs
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(&views, None, path).unwrap();
}
