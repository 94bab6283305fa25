//! Training small transformers: the Winograd task is learned (held-out accuracy and the
//! attention that decides it), the shipped `toy-winograd` is what the default run makes, runs
//! resume exactly, and bad checkpoints are errors.

use attend_models::models::embedded;
use attend_models::models::toy::ToyConfig;
use attend_models::tokenize::vocab::Vocab;
use attend_models::train::trainer::{evaluate_winograd, fnv_hex};
use attend_models::train::{winograd, Checkpoint, TaskSpec, Trainer};

/// The default run of `attend train winograd` (1000 steps, seed 1): held-out referent accuracy
/// ≥ 95% (chance 50%), and the most decisive head of each held-out text gives the referent
/// ≥ 0.5 of its weight at the answer position. The untrained model scores at chance. Where the
/// arithmetic is the shipped model's (AVX2 + FMA, no AVX-512: the matrix kernels differ), the
/// trained weights are the shipped ones, bit for bit.
#[test]
fn winograd_is_learned_and_the_shipped_model_is_reproduced() {
    let cfg = winograd::model_config(64, 2, 4);
    let mut t = Trainer::new(cfg, winograd::train_config(1000, 1, 64, 3e-3), None).unwrap();
    let before = evaluate_winograd(&t.model, 400).unwrap();
    assert!(before.two_way > 0.3 && before.two_way < 0.7, "{before:?}");
    assert!(before.accuracy < 0.2, "{before:?}");
    assert!(before.decisive_correct < 0.3, "{before:?}");
    while !t.done() {
        t.step().unwrap();
    }
    let after = evaluate_winograd(&t.model, 400).unwrap();
    eprintln!("untrained: {before:?}\ntrained: {after:?}");
    assert!(after.accuracy >= 0.95, "{after:?}");
    assert!(after.decisive_correct >= 0.5, "{after:?}");
    assert!(after.decisive_agrees >= 0.9, "{after:?}");

    let shipped = embedded::get("toy-winograd").unwrap().unwrap();
    assert_eq!(shipped.model.config, t.model.config);
    {
        // the shipped weights were made by the AVX2 kernels, and by the `gemm` crate's sgemm
        // without AVX-512 (it detects that itself)
        let f = attend_kernels::Features::get();
        let same_kernels =
            attend_kernels::Isa::detected() == attend_kernels::Isa::Avx2 && !f.avx512f;
        if same_kernels {
            let differ = shipped
                .model
                .params
                .iter()
                .zip(&t.model.params)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "parameters differ from the shipped toy-winograd");
        }
    }
}

fn small_run(steps: usize) -> Trainer {
    let cfg = winograd::model_config(16, 1, 2);
    Trainer::new(cfg, winograd::train_config(steps, 7, 8, 3e-3), None).unwrap()
}

/// Ten steps, saved, loaded and resumed for ten more, are the twenty steps of one run.
#[test]
fn a_resumed_run_is_the_same_run() {
    let mut straight = small_run(20);
    for _ in 0..20 {
        straight.step().unwrap();
    }
    let mut first = small_run(20);
    for _ in 0..10 {
        first.step().unwrap();
    }
    let dir = std::env::temp_dir().join(format!("attend-resume-{}", std::process::id()));
    first
        .checkpoint(serde_json::json!({"x": 1}))
        .save(&dir)
        .unwrap();
    let ck = Checkpoint::load(&dir).unwrap();
    assert_eq!(ck.notes["x"], 1);
    let mut resumed = Trainer::resume(ck, None, None).unwrap();
    assert_eq!(resumed.state.step, 10);
    while !resumed.done() {
        resumed.step().unwrap();
    }
    assert_eq!(resumed.state.losses, straight.state.losses);
    assert!(resumed.model.params == straight.model.params);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A byte-level model of a text learns it (the loss falls well below ln 256 ≈ 5.5 nats).
#[test]
fn a_text_model_learns_its_text() {
    let text = b"to be or not to be, that is the question. ".repeat(40);
    let cfg = ToyConfig {
        dim: 32,
        layers: 2,
        heads: 2,
        mlp: 128,
        ctx: 32,
        vocab: Vocab::Bytes,
    };
    let mut tc = winograd::train_config(150, 3, 16, 3e-3);
    tc.task = TaskSpec::Text {
        file: "hamlet.txt".into(),
        bytes: text.len(),
        hash: fnv_hex(&text),
    };
    let mut t = Trainer::new(cfg.clone(), tc.clone(), Some(text.clone())).unwrap();
    let start = t.held_out_loss().unwrap();
    while !t.done() {
        t.step().unwrap();
    }
    let end = t.held_out_loss().unwrap();
    assert!(start > 5.0 && end < 1.0, "held-out loss {start} → {end}");
    // another text is refused on resume
    let ck = t.checkpoint(serde_json::Value::Null);
    let other = b"something else entirely, at some length. ".repeat(40);
    assert!(Trainer::resume(ck, Some(200), Some(other)).is_err());
    // too short a text is an error, not a panic
    assert!(Trainer::new(cfg.clone(), tc.clone(), Some(b"short".to_vec())).is_err());
    // a word list on a text (a crafted checkpoint): its bytes past the list would be targets
    // outside the vocabulary; refused, not indexed
    let words = Vocab::Words {
        words: (0..200).map(|i| format!("w{i}")).collect(),
    };
    let cfg = ToyConfig {
        vocab: words,
        ..cfg
    };
    let Err(e) = Trainer::new(cfg, tc, Some(text)) else {
        panic!("a word vocabulary trained on a text");
    };
    assert!(e.to_string().contains("byte vocabulary"), "{e}");
}

/// Corrupt or mismatched checkpoint files are errors naming the problem.
#[test]
fn bad_checkpoints_are_errors() {
    let mut t = small_run(2);
    t.step().unwrap();
    let dir = std::env::temp_dir().join(format!("attend-badck-{}", std::process::id()));
    t.checkpoint(serde_json::Value::Null).save(&dir).unwrap();
    let config = std::fs::read(dir.join("config.json")).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let err = |c: &[u8], w: &[u8]| {
        Checkpoint::from_bytes(c, w, None, &dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(Checkpoint::from_bytes(&config, &weights, None, &dir).is_ok());
    for cut in [0, 7, weights.len() / 2, weights.len() - 1] {
        assert!(
            err(&config, &weights[..cut]).contains("model.safetensors"),
            "cut {cut}"
        );
    }
    assert!(err(b"{", &weights).contains("config.json"));
    let text = String::from_utf8(config.clone()).unwrap();
    let other_arch = text.replacen("attend-toy", "bert", 1);
    assert!(err(other_arch.as_bytes(), &weights).contains("architecture"));
    let wider = text.replacen("\"dim\": 16", "\"dim\": 32", 1);
    assert!(err(wider.as_bytes(), &weights).contains("the configuration needs"));
    let huge = text.replacen("\"dim\": 16", "\"dim\": 4096", 1);
    assert!(err(huge.as_bytes(), &weights).contains("the configuration needs"));
    let longer = text.replacen("\"ctx\": 32", "\"ctx\": 31", 1);
    assert!(err(longer.as_bytes(), &weights).contains("expected F32"));
    let bad_heads = text.replacen("\"heads\": 2", "\"heads\": 5", 1);
    assert!(err(bad_heads.as_bytes(), &weights).contains("multiple of heads"));
    // a NaN in the weights
    let mut nan = weights.clone();
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    // (with config.json's record of the weights' hash, the mismatch is found first)
    assert!(err(&config, &nan).contains("mixes two saves"));
    let mut unrecorded: serde_json::Value = serde_json::from_slice(&config).unwrap();
    unrecorded.as_object_mut().unwrap().remove("files");
    let unrecorded = serde_json::to_vec(&unrecorded).unwrap();
    assert!(err(&unrecorded, &nan).contains("non-finite"));
    // a folder with no optimiser state cannot be resumed
    std::fs::remove_file(dir.join("optimizer.safetensors")).unwrap();
    let ck = Checkpoint::load(&dir).unwrap();
    assert!(Trainer::resume(ck, None, None).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every number of a checkpoint's training state is checked like a flag would be, naming
/// config.json and the field; a batch that would need gigabytes is refused before it is
/// allocated; a folder whose files come from two saves is refused.
#[test]
fn hostile_checkpoint_numbers_and_mixed_saves_are_refused() {
    let mut t = small_run(4);
    t.step().unwrap();
    let dir = std::env::temp_dir().join(format!("attend-hostile-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    t.checkpoint(serde_json::Value::Null).save(&dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let optim = std::fs::read(dir.join("optimizer.safetensors")).unwrap();
    let cases: [(&str, serde_json::Value); 12] = [
        ("/training/config/batch", 1_000_000_000.into()),
        ("/training/config/batch", 0.into()),
        ("/training/config/optim/lr", (-1.0).into()),
        ("/training/config/optim/lr", 0.0.into()),
        ("/training/config/optim/lr", 1e30.into()),
        ("/training/config/optim/beta2", 1.5.into()),
        ("/training/config/optim/eps", (-1e-8).into()),
        ("/training/config/optim/steps", 0.into()),
        ("/training/config/optim/steps", u64::MAX.into()),
        ("/training/config/optim/warmup", 100.into()),
        ("/training/step", 3.into()),
        ("/training/step", 1_000_000.into()),
    ];
    for (ptr, v) in cases {
        let mut c = config.clone();
        *c.pointer_mut(ptr).unwrap() = v.clone();
        let bytes = serde_json::to_vec(&c).unwrap();
        let e = Checkpoint::from_bytes(&bytes, &weights, Some(&optim), &dir)
            .err()
            .unwrap_or_else(|| panic!("{ptr} = {v} was accepted"))
            .to_string();
        assert!(e.contains("config.json"), "{ptr} = {v}: {e}");
        let field = ptr.rsplit('/').next().unwrap();
        assert!(
            e.contains(field) || e.contains("losses"),
            "{ptr} = {v}: {e}"
        );
    }
    // new runs refuse the same numbers (the CLI maps these to usage errors)
    let cfg = winograd::model_config(16, 1, 2);
    for (batch, lr) in [
        (1_000_000_000, 3e-3),
        (8, f32::NAN),
        (8, -1.0),
        (8, f32::INFINITY),
    ] {
        let tc = winograd::train_config(10, 7, batch, lr);
        assert!(Trainer::new(cfg.clone(), tc, None).is_err(), "{batch} {lr}");
    }

    // a save interrupted between its renames: new optimizer, old model and config
    let old = Checkpoint::load(&dir).unwrap();
    let mut t2 = Trainer::resume(old, None, None).unwrap();
    t2.step().unwrap();
    let dir2 = dir.join("later");
    t2.checkpoint(serde_json::Value::Null).save(&dir2).unwrap();
    std::fs::copy(
        dir2.join("optimizer.safetensors"),
        dir.join("optimizer.safetensors"),
    )
    .unwrap();
    let e = Checkpoint::load(&dir).err().unwrap().to_string();
    assert!(
        e.contains("optimizer.safetensors") && e.contains("mixes two saves"),
        "{e}"
    );
    std::fs::copy(
        dir2.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let e = Checkpoint::load(&dir).err().unwrap().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("mixes two saves"),
        "{e}"
    );
    // the complete later save loads, and no temporary file is left in either folder
    Checkpoint::load(&dir2).unwrap();
    for d in [&dir, &dir2] {
        for f in std::fs::read_dir(d).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains("partial"), "{name} left in {}", d.display());
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The thread count does not change a step's result (fixed task sizes and summation orders).
#[test]
fn training_is_the_same_on_any_number_of_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let cfg = winograd::model_config(32, 2, 4);
            let mut t = Trainer::new(cfg, winograd::train_config(6, 5, 96, 3e-3), None).unwrap();
            while !t.done() {
                t.step().unwrap();
            }
            t.model.params
        })
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert!(run(threads) == one, "{threads} threads differ from 1");
    }
}

/// Random damage to either file of a checkpoint: an error, or a model whose forward returns
/// (logits or an error), never a panic.
#[test]
fn damaged_checkpoints_never_panic() {
    let mut t = small_run(2);
    t.step().unwrap();
    let dir = std::env::temp_dir().join(format!("attend-fuzzck-{}", std::process::id()));
    t.checkpoint(serde_json::Value::Null).save(&dir).unwrap();
    let config = std::fs::read(dir.join("config.json")).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (mut ok, mut refused) = (0, 0);
    for i in 0..3000 {
        let (mut c, mut w) = (config.clone(), weights.clone());
        let target = if i % 2 == 0 { &mut c } else { &mut w };
        // damage near the front (headers, keys, numbers) more often than deep in the data
        for _ in 0..1 + next() % 3 {
            let span = if next() % 2 == 0 {
                target.len().min(200)
            } else {
                target.len()
            };
            let at = (next() % span as u64) as usize;
            target[at] = match next() % 3 {
                0 => next() as u8,
                1 => b"0123456789"[(next() % 10) as usize],
                _ => target[at] ^ 1,
            };
        }
        match Checkpoint::from_bytes(&c, &w, None, &dir) {
            Ok(ck) => {
                ok += 1;
                let m = &ck.model;
                let n = m.config.ctx.min(4);
                let ids: Vec<u32> = (0..n as u32)
                    .map(|x| x % m.config.vocab.len() as u32)
                    .collect();
                // huge but finite weights may overflow: an error then, not a panic
                let _ = m.logits(&ids);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

/// Generation through the cache picks what a full forward over the text would, and carries on
/// past the context (the window restarts from its last half).
#[test]
fn cached_generation_matches_full_forwards_and_passes_the_context() {
    use attend_models::generate::{Sampler, SamplerConfig};
    // a byte model has no end token, so generation runs to the end, past the context of 16
    let cfg = ToyConfig {
        dim: 16,
        layers: 2,
        heads: 2,
        mlp: 32,
        ctx: 16,
        vocab: Vocab::Bytes,
    };
    let mut m = attend_models::models::toy::ToyModel::new(cfg, 9).unwrap();
    // larger weights than at initialisation, so that the choices depend on the text
    let mut rng = attend_models::rng::Rng::new(4);
    m.params.iter_mut().for_each(|p| *p += 0.5 * rng.normal());
    let m = &m;
    let prompt: Vec<u32> = b"to be".iter().map(|&b| b as u32).collect();
    let mut sampler = Sampler::new(SamplerConfig::default()).unwrap();
    let mut got = Vec::new();
    let mut rows = Vec::new();
    let stats = attend_models::generate::generate(m, &prompt, 60, &mut sampler, true, &mut |g| {
        got.push(g.id);
        rows.push(g.attention.len());
        true
    })
    .unwrap();
    assert_eq!(stats.gen_tokens, got.len());
    // greedy by hand, full forwards, while the text fits the context
    let mut seq = prompt.clone();
    let v = m.config.vocab.len();
    for (i, &id) in got.iter().enumerate() {
        if seq.len() > m.config.ctx {
            break;
        }
        let logits = m.logits(&seq).unwrap();
        let last = &logits[(seq.len() - 1) * v..];
        let best = (0..v).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
        assert_eq!(id, best, "token {i}");
        assert_eq!(rows[i], 4 * seq.len(), "attention over every earlier token");
        seq.push(id);
    }
    assert!(!stats.stopped_at_eos);
    assert_eq!(got.len(), 60, "generation goes past the context");
    assert!(got.iter().collect::<std::collections::HashSet<_>>().len() > 1);
}

/// Does the weight matter? On the shipped `toy-winograd`, each head ablated in turn (its output
/// zeroed before the output projection) on 400 held-out texts. The head that attends most to
/// the referent (chosen on training texts) is not the one the answer depends on: without it the
/// model still answers ≥ 95% right, while ablating some head of the first layer costs more than
/// 20 points (measured: 97.5% and 70.3% of 100%; the README's worked example).
#[test]
fn ablating_the_decisive_head_of_toy_winograd() {
    let shipped = embedded::get("toy-winograd").unwrap().unwrap();
    let ev = evaluate_winograd(&shipped.model, 400).unwrap();
    let heads = shipped.model.config.heads;
    let at = ev.head.0 * heads + ev.head.1;
    eprintln!(
        "decisive head {:?}: accuracy {} → {} (two-way {} → {}); every head ablated: {:?}",
        ev.head,
        ev.accuracy,
        ev.ablated_accuracy[at],
        ev.two_way,
        ev.ablated_two_way[at],
        ev.ablated_accuracy
    );
    assert_eq!(
        ev.ablated_accuracy.len(),
        shipped.model.config.layers * heads
    );
    assert!(ev.accuracy >= 0.95, "{ev:?}");
    assert!(ev.ablated_accuracy[at] >= 0.95, "{ev:?}");
    let worst = ev.ablated_accuracy.iter().copied().fold(1.0f32, f32::min);
    assert!(worst < ev.accuracy - 0.2, "{ev:?}");
    let first_layer = &ev.ablated_accuracy[..heads];
    assert!(first_layer.contains(&worst), "{ev:?}");
}
