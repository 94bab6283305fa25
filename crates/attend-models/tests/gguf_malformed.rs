//! The GGUF reader on a hand-built file and on a corpus of malformed variants of it: every one
//! is a typed error naming the offset and the problem, never a panic, an out-of-bounds read or
//! a huge allocation. Plus random mutations and every truncation of the good file.

use attend_models::formats::gguf::{Gguf, GgufFile, Value};
use attend_models::quant::GgmlType;

/// Writes GGUF by hand.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
    fn kv(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        self.str(key).u32(ty);
        self.0.extend(value);
        self
    }
}

struct Spec {
    version: u32,
    n_kv_override: Option<u64>,
    extra_kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    data_len: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            version: 3,
            n_kv_override: None,
            extra_kv: Vec::new(),
            // a 4-element F32 vector at 0, a 32 × 2 Q8_0 matrix at 32
            tensors: vec![
                ("norm.weight".into(), vec![4], 0, 0),
                ("w".into(), vec![32, 2], 8, 32),
            ],
            data_len: 32 + 2 * 34,
        }
    }
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut w = W::default();
    w.str(s);
    w.0
}

fn build(spec: &Spec) -> Vec<u8> {
    let mut w = W::default();
    w.0.extend(b"GGUF");
    w.u32(spec.version);
    w.u64(spec.tensors.len() as u64);
    let mut kv: Vec<(String, u32, Vec<u8>)> = vec![
        ("general.architecture".into(), 8, string_bytes("llama")),
        ("u8".into(), 0, vec![200]),
        ("i8".into(), 1, vec![0xff]),
        ("u16".into(), 2, 500u16.to_le_bytes().to_vec()),
        ("i16".into(), 3, (-5i16).to_le_bytes().to_vec()),
        ("u32".into(), 4, 70000u32.to_le_bytes().to_vec()),
        ("i32".into(), 5, (-7i32).to_le_bytes().to_vec()),
        ("f32".into(), 6, 1.5f32.to_le_bytes().to_vec()),
        ("bool".into(), 7, vec![1]),
        ("u64".into(), 10, (1u64 << 40).to_le_bytes().to_vec()),
        ("i64".into(), 11, (-9i64).to_le_bytes().to_vec()),
        ("f64".into(), 12, 2.25f64.to_le_bytes().to_vec()),
        ("strings".into(), 9, {
            let mut a = W::default();
            a.u32(8).u64(2).str("a").str("bé");
            a.0
        }),
        ("nested".into(), 9, {
            let mut a = W::default();
            a.u32(9).u64(1).u32(4).u64(2).u32(1).u32(2);
            a.0
        }),
    ];
    kv.extend(spec.extra_kv.iter().cloned());
    w.u64(spec.n_kv_override.unwrap_or(kv.len() as u64));
    for (k, t, v) in &kv {
        w.kv(k, *t, v);
    }
    for (name, dims, ty, off) in &spec.tensors {
        w.str(name).u32(dims.len() as u32);
        for &d in dims {
            w.u64(d);
        }
        w.u32(*ty).u64(*off);
    }
    while w.0.len() % 32 != 0 {
        w.0.push(0);
    }
    w.0.extend((0..spec.data_len).map(|i| i as u8));
    w.0
}

#[test]
fn a_good_file_parses_with_every_value_type() {
    let bytes = build(&Spec::default());
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, 32);
    let m = &g.metadata;
    assert_eq!(m["general.architecture"].as_str(), Some("llama"));
    assert_eq!(m["u8"], Value::U8(200));
    assert_eq!(m["i8"], Value::I8(-1));
    assert_eq!(m["u16"], Value::U16(500));
    assert_eq!(m["i16"], Value::I16(-5));
    assert_eq!(m["u32"].as_u64(), Some(70000));
    assert_eq!(m["i32"], Value::I32(-7));
    assert_eq!(m["f32"].as_f64(), Some(1.5));
    assert_eq!(m["bool"].as_bool(), Some(true));
    assert_eq!(m["u64"].as_u64(), Some(1 << 40));
    assert_eq!(m["i64"], Value::I64(-9));
    assert_eq!(m["f64"], Value::F64(2.25));
    assert_eq!(
        m["strings"],
        Value::Array(vec![Value::Str("a".into()), Value::Str("bé".into())])
    );
    assert_eq!(
        m["nested"],
        Value::Array(vec![Value::Array(vec![Value::U32(1), Value::U32(2)])])
    );
    let t = g.tensor("w").unwrap();
    assert_eq!(
        (t.ty, t.matrix(), t.len),
        (GgmlType::Q8_0, Some((2, 32)), 68)
    );
    let data_start = bytes.len() - (32 + 68);
    assert_eq!(t.start, data_start + 32);
    assert_eq!(g.tensor("norm.weight").unwrap().start, data_start);
    // version 2 reads the same
    let v2 = build(&Spec {
        version: 2,
        ..Default::default()
    });
    assert_eq!(Gguf::parse(&v2).unwrap().tensors.len(), 2);
}

/// Parses `bytes`, expecting an error whose message holds `what`; returns its offset.
fn refuse(bytes: &[u8], what: &str) -> u64 {
    match Gguf::parse(bytes) {
        Ok(_) => panic!("accepted a file that should fail with `{what}`"),
        Err(e) => {
            assert!(
                e.to_string().contains(what),
                "error `{e}` does not say `{what}`"
            );
            e.offset
        }
    }
}

#[test]
fn malformed_files_are_refused_with_the_offset_and_the_problem() {
    let good = build(&Spec::default());
    // header
    let mut b = good.clone();
    b[..4].copy_from_slice(b"GGML");
    assert_eq!(refuse(&b, "not a GGUF file"), 0);
    for v in [1, 4, 0xffff_ffff] {
        let b = build(&Spec {
            version: v,
            ..Default::default()
        });
        assert_eq!(refuse(&b, "not supported"), 4);
    }
    assert_eq!(refuse(&good[..3], "the file ends inside the magic"), 0);
    // counts that cannot fit
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(refuse(&b, "cannot fit"), 8);
    let b = build(&Spec {
        n_kv_override: Some(1 << 40),
        ..Default::default()
    });
    assert_eq!(refuse(&b, "cannot fit"), 16);
    let b = build(&Spec {
        n_kv_override: Some(15), // one more than there are: runs into the tensor infos
        ..Default::default()
    });
    refuse(&b, "");
    // values
    let kv = |key: &str, ty: u32, v: Vec<u8>| Spec {
        extra_kv: vec![(key.into(), ty, v)],
        ..Default::default()
    };
    refuse(
        &build(&kv("big", 8, u64::MAX.to_le_bytes().to_vec())),
        "exceeds the cap",
    );
    refuse(&build(&kv("bad", 13, vec![])), "unknown value type 13");
    refuse(&build(&kv("flag", 7, vec![2])), "a bool must be 0 or 1");
    refuse(
        &build(&kv("utf", 8, {
            let mut v = 2u64.to_le_bytes().to_vec();
            v.extend([0xc3, 0x28]);
            v
        })),
        "not UTF-8",
    );
    refuse(
        &build(&kv("arr", 9, {
            let mut w = W::default();
            w.u32(4).u64(u64::MAX);
            w.0
        })),
        "an array of",
    );
    refuse(
        &build(&kv("deep", 9, {
            let mut w = W::default();
            w.u32(9).u64(1).u32(9).u64(1).u32(4).u64(1).u32(0);
            w.0
        })),
        "nested deeper",
    );
    refuse(
        &build(&kv("general.architecture", 8, string_bytes("x"))),
        "appears twice",
    );
    refuse(
        &build(&kv("general.alignment", 4, 24u32.to_le_bytes().to_vec())),
        "not a power of two",
    );
    // tensor infos
    let tensors = |t: Vec<(String, Vec<u64>, u32, u64)>, data_len: usize| Spec {
        tensors: t,
        data_len,
        ..Default::default()
    };
    refuse(
        &build(&tensors(vec![("t".into(), vec![4, 1, 1, 1, 1], 0, 0)], 16)),
        "5 dimensions",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![], 0, 0)], 16)),
        "0 dimensions",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![4], 99, 0)], 16)),
        "ggml type 99",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![4], 0, 3)], 16)),
        "not a multiple of the alignment",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![64], 0, 0)], 16)),
        "runs past the end",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![4], 0, u64::MAX - 31)], 16)),
        "overflows",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![u64::MAX, 4], 0, 0)], 16)),
        "overflow",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![4, 0], 0, 0)], 16)),
        "a zero size",
    );
    refuse(
        &build(&tensors(vec![("t".into(), vec![33, 1], 8, 0)], 64)),
        "not whole Q8_0 blocks",
    );
    refuse(
        &build(&tensors(
            vec![("t".into(), vec![4], 0, 0), ("t".into(), vec![4], 0, 32)],
            64,
        )),
        "appears twice",
    );
}

/// A tensor whose declared type or size makes its bytes run into the next one's (a Q5_0
/// tensor retyped Q8_0, say) is refused at load, naming both, not found later as a NaN.
#[test]
fn overlapping_tensors_are_refused() {
    // 16 f32 (64 bytes) at 0 run into `w` at 32
    let b = build(&Spec {
        tensors: vec![
            ("norm.weight".into(), vec![16], 0, 0),
            ("w".into(), vec![32, 2], 8, 32),
        ],
        ..Default::default()
    });
    refuse(
        &b,
        "tensor `norm.weight` (its declared type and sizes make 64 bytes) runs into tensor `w`",
    );
    // two tensors at the same offset, listed in either order
    let b = build(&Spec {
        tensors: vec![
            ("w".into(), vec![32, 2], 8, 32),
            ("v".into(), vec![4], 0, 32),
        ],
        ..Default::default()
    });
    refuse(&b, "runs into tensor");
    // the Q8_0 matrix retyped F16 (32 × 2 × 2 = 128 bytes) runs past the file
    let b = build(&Spec {
        tensors: vec![
            ("norm.weight".into(), vec![4], 0, 0),
            ("w".into(), vec![32, 2], 1, 32),
        ],
        ..Default::default()
    });
    refuse(&b, "runs past the end");
}

#[test]
fn every_truncation_and_random_mutations_never_panic() {
    let good = build(&Spec::default());
    // every prefix shorter than the data section's end is an error
    for n in 0..good.len() {
        assert!(
            Gguf::parse(&good[..n]).is_err(),
            "a prefix of {n} bytes parsed"
        );
    }
    // random byte changes: any answer but a panic (the test harness would report one)
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut refused = 0;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..1 + rnd() % 4 {
            let i = (rnd() % b.len() as u64) as usize;
            b[i] = match rnd() % 4 {
                0 => 0xff,
                1 => 0,
                _ => rnd() as u8,
            };
        }
        if Gguf::parse(&b).is_err() {
            refused += 1;
        }
    }
    assert!(
        refused > 1000,
        "only {refused} of 20000 mutations were refused"
    );
}

#[test]
fn files_name_themselves_in_errors() {
    let dir = std::env::temp_dir().join(format!("attend-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.gguf");
    let good = build(&Spec::default());
    std::fs::write(&p, &good[..good.len() - 10]).unwrap();
    let e = GgufFile::open(&p)
        .err()
        .expect("truncated file refused")
        .to_string();
    assert!(
        e.contains("broken.gguf") && e.contains("runs past the end"),
        "{e}"
    );
    let f = {
        std::fs::write(&p, &good).unwrap();
        GgufFile::open(&p).unwrap()
    };
    let t = f.header.tensor("norm.weight").unwrap().clone();
    assert_eq!(
        f.data(&t),
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    );
    // a model loader on a file that is GGUF but not a model: a clear error
    let e = attend_models::models::load_decoder(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("broken.gguf") && e.contains("`llama.") && e.contains("is missing"),
        "{e}"
    );
    // an architecture attend does not read is named, with the ones it does
    let mut other = good.clone();
    let at = other
        .windows(13)
        .position(|w| w == string_bytes("llama").as_slice())
        .unwrap();
    other[at + 8..at + 13].copy_from_slice(b"falco");
    std::fs::write(&p, &other).unwrap();
    let e = attend_models::models::load_gguf(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("broken.gguf")
            && e.contains("`falco`")
            && e.contains("llama")
            && e.contains("gemma3"),
        "{e}"
    );
    // a tensor of a type attend does not multiply by is named, with its type
    let u32v = |v: u32| v.to_le_bytes().to_vec();
    let spec = Spec {
        extra_kv: vec![
            ("llama.embedding_length".into(), 4, u32v(256)),
            ("llama.attention.head_count".into(), 4, u32v(1)),
            ("llama.block_count".into(), 4, u32v(1)),
            ("llama.feed_forward_length".into(), 4, u32v(256)),
            ("llama.vocab_size".into(), 4, u32v(8)),
        ],
        // Q3_K (type 11): 110 bytes per 256 elements
        tensors: vec![("blk.0.attn_norm.weight".into(), vec![256], 11, 0)],
        data_len: 110,
        ..Default::default()
    };
    std::fs::write(&p, build(&spec)).unwrap();
    let e = attend_models::models::load_gguf(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("blk.0.attn_norm.weight") && e.contains("Q3_K") && e.contains("Q4_K"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Tokenizer metadata is checked against the vocabulary before anything trusts it (on a real
/// tiny Qwen 2 file, each key broken in memory): a special token's id out of range, a type
/// or score that is no type or score, arrays of the wrong length, an empty vocabulary — each
/// refused naming the key.
#[test]
fn tokenizer_metadata_out_of_range_is_refused_naming_the_key() {
    use attend_models::formats::gguf::Value;
    use attend_models::tokenize::gguf::{GgufTokenizer, SpmStyle};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tiny/qwen2.gguf");
    let good = Gguf::parse(&std::fs::read(&path).unwrap()).unwrap();
    assert!(GgufTokenizer::from_gguf(&good, SpmStyle::Llama).is_ok());
    let n = good
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    let broken = |key: &str, v: Option<Value>, want: &str| {
        let mut g = Gguf::parse(&std::fs::read(&path).unwrap()).unwrap();
        match v {
            Some(v) => g.metadata.insert(key.into(), v),
            None => g.metadata.remove(key),
        };
        let e = GgufTokenizer::from_gguf(&g, SpmStyle::Llama)
            .err()
            .unwrap_or_else(|| panic!("{key} accepted"))
            .to_string();
        assert!(e.contains(want), "{key}: `{e}` does not say `{want}`");
    };
    for id in ["bos", "eos", "unknown", "eot"] {
        let key = format!("tokenizer.ggml.{id}_token_id");
        broken(&key, Some(Value::U32(1_000_000_000)), &key);
        broken(&key, Some(Value::I32(-5)), &key);
    }
    // an id attend does not use (padding), out of range as some converted files have it:
    // ignored, as llama.cpp ignores it
    let mut g = Gguf::parse(&std::fs::read(&path).unwrap()).unwrap();
    g.metadata.insert(
        "tokenizer.ggml.padding_token_id".into(),
        Value::U32(1 << 30),
    );
    if let Err(e) = GgufTokenizer::from_gguf(&g, SpmStyle::Llama) {
        panic!("an unused padding id refused: {e}");
    }
    let types = |t: Value| Value::Array(vec![t; n]);
    broken(
        "tokenizer.ggml.token_type",
        Some(types(Value::I32(99))),
        "type",
    );
    broken(
        "tokenizer.ggml.token_type",
        Some(types(Value::I32(-5))),
        "type",
    );
    broken(
        "tokenizer.ggml.token_type",
        Some(Value::Array(vec![Value::I32(1); n - 1])),
        "tokenizer.ggml.token_type",
    );
    broken(
        "tokenizer.ggml.scores",
        Some(Value::Array(vec![Value::F32(0.0); n - 1])),
        "tokenizer.ggml.scores",
    );
    broken(
        "tokenizer.ggml.scores",
        Some(Value::Array(vec![Value::F32(f32::NAN); n])),
        "tokenizer.ggml.scores",
    );
    broken(
        "tokenizer.ggml.tokens",
        Some(Value::Array(vec![])),
        "`tokenizer.ggml.tokens` is empty",
    );
    // a user-defined token spelled outside the byte alphabet (a space): the BPE vocabulary
    // holds no such spelling, so as an added token it would get an id past the end; it is
    // left to the BPE, and every id of a text holding it is within the vocabulary
    let mut g = Gguf::parse(&std::fs::read(&path).unwrap()).unwrap();
    let mut tokens = g
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_array()
        .unwrap()
        .to_vec();
    let mut types = g
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap()
        .to_vec();
    tokens.push(Value::Str("x y".into()));
    types.push(Value::I32(4));
    g.metadata
        .insert("tokenizer.ggml.tokens".into(), Value::Array(tokens));
    g.metadata
        .insert("tokenizer.ggml.token_type".into(), Value::Array(types));
    let tok = GgufTokenizer::from_gguf(&g, SpmStyle::Llama).unwrap();
    let ids = tok.encode("the x y and x y again").unwrap();
    assert!(
        !ids.is_empty() && ids.iter().all(|t| (t.id as usize) < n),
        "{ids:?}"
    );
}
