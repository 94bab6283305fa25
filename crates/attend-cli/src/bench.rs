//! `attend bench`: the standard kernel cases of bench/README.md, as JSON lines or a table, next
//! to the machine's limits measured in the same run — `peak-fma` (the panel micro-kernel alone
//! in L1, per instruction set, every thread) and `copy-512MiB` (memory bandwidth, every
//! thread; `read-512MiB`, the same buffer only read) — and an sgemm (the `gemm` crate).
//! Kernel cases carry their share of `peak-fma` (`of_peak_fma`), decode cases their share of
//! the copy and the read bandwidth (`of_copy`, `of_read`); every line carries the instruction
//! set its kernels ran (`isa`).

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use attend::cases::{self, Case};
use attend::{backward, fused, reference};
use serde_json::json;

use crate::Format;

/// Arguments of `attend bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Run only this case (repeatable); `sgemm-2048` and `copy-512MiB` are cases too.
    #[arg(long = "case")]
    cases: Vec<String>,
    /// One short run per case, no reference: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Run every kernel on this instruction set (generic, avx2, avx512) instead of the best
    /// this processor has.
    #[arg(long, value_parser = ["generic", "avx2", "avx512"])]
    isa: Option<String>,
}

/// The instruction set a `--isa` name means.
fn isa_named(name: &str) -> attend::Isa {
    match name {
        "avx2" => attend::Isa::Avx2,
        "avx512" => attend::Isa::Avx512,
        _ => attend::Isa::Scalar,
    }
}

/// How the JSON names an instruction set.
fn isa_name(isa: attend::Isa) -> &'static str {
    match isa {
        attend::Isa::Scalar => "generic",
        attend::Isa::Avx2 => "avx2",
        attend::Isa::Avx512 => "avx512",
        attend::Isa::Auto => isa_name(attend::Isa::detected()),
    }
}

struct Timing {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

/// Runs `f` once to warm up, then until `budget_s` has passed (at least 3 and at most 15 runs).
fn time(quick: bool, budget_s: f64, mut f: impl FnMut()) -> Timing {
    let mut runs = Vec::new();
    if !quick {
        f();
    }
    let start = Instant::now();
    loop {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64() * 1e3);
        let done = start.elapsed().as_secs_f64();
        if quick || runs.len() >= 15 || (runs.len() >= 3 && done > budget_s) {
            break;
        }
    }
    runs.sort_by(f64::total_cmp);
    Timing {
        median_ms: runs[runs.len() / 2],
        min_ms: runs[0],
        max_ms: runs[runs.len() - 1],
    }
}

struct Out {
    format: Format,
    stdout: std::io::Stdout,
    /// `peak-fma` of the instruction set the kernels run, GFLOP/s, once measured.
    peak: Option<f64>,
    /// `copy-512MiB`, GB/s (bytes read and written), once measured.
    copy: Option<f64>,
    /// `read-512MiB`, GB/s (bytes read), once measured.
    read: Option<f64>,
}

impl Out {
    fn emit(&mut self, mut v: serde_json::Value, t: &Timing) -> Result<()> {
        let obj = v.as_object_mut().context("bench record")?;
        if !obj.contains_key("isa") {
            obj.insert("isa".into(), json!(isa_name(attend::Isa::detected())));
        }
        let case = obj.get("case").and_then(|c| c.as_str()).unwrap_or("");
        let limit = !["peak-fma", "copy-512MiB", "read-512MiB", "sgemm-2048"].contains(&case);
        if let (true, Some(peak), Some(g)) = (
            limit,
            self.peak,
            obj.get("gflops").and_then(serde_json::Value::as_f64),
        ) {
            obj.insert("of_peak_fma".into(), json!(round(g / peak)));
        }
        if let (true, Some(copy), Some(g)) = (
            limit,
            self.copy,
            obj.get("gbps").and_then(serde_json::Value::as_f64),
        ) {
            obj.insert("of_copy".into(), json!(round(g / copy)));
        }
        if let (true, Some(read), Some(g)) = (
            limit,
            self.read,
            obj.get("gbps").and_then(serde_json::Value::as_f64),
        ) {
            obj.insert("of_read".into(), json!(round(g / read)));
        }
        obj.insert("median_ms".into(), json!(round(t.median_ms)));
        obj.insert("min_ms".into(), json!(round(t.min_ms)));
        obj.insert("max_ms".into(), json!(round(t.max_ms)));
        let mut lock = self.stdout.lock();
        match self.format {
            Format::Json => writeln!(lock, "{v}")?,
            Format::Text => {
                let o = v.as_object().context("bench record")?;
                let rate = ["gflops", "gbps"]
                    .iter()
                    .find_map(|k| {
                        o.get(*k).map(|x| {
                            format!("{x} {}", if *k == "gflops" { "GFLOP/s" } else { "GB/s" })
                        })
                    })
                    .unwrap_or_default();
                let extra: Vec<String> = o
                    .iter()
                    .filter(|(k, _)| {
                        ![
                            "case",
                            "impl",
                            "threads",
                            "median_ms",
                            "min_ms",
                            "max_ms",
                            "gflops",
                            "gbps",
                            "isa",
                        ]
                        .contains(&k.as_str())
                    })
                    .map(|(k, x)| format!("{k}={x}"))
                    .collect();
                writeln!(
                    lock,
                    "{:<16} {:<19} {:>10.3} ms  [{:.3} – {:.3}]  {:<16} {}",
                    o["case"].as_str().unwrap_or(""),
                    o["impl"].as_str().unwrap_or(""),
                    t.median_ms,
                    t.min_ms,
                    t.max_ms,
                    rate,
                    extra.join(" ")
                )?
            }
        }
        lock.flush()?;
        Ok(())
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Runs the benchmark.
pub fn run(args: &BenchArgs, threads: usize) -> Result<()> {
    if let Some(name) = &args.isa {
        attend_kernels::force_isa(isa_named(name)).map_err(|_| {
            crate::usage!(
                "--isa {name}: this processor runs {}",
                attend::Isa::available()
                    .into_iter()
                    .map(isa_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    }
    let all = cases::standard();
    let baselines = [
        "peak-fma",
        "sgemm-2048",
        "copy-512MiB",
        "read-512MiB",
        "minilm-embed",
        "minilm-one",
        "minilm-embed-int8",
        "minilm-one-int8",
        "smollm2-pp128",
        "smollm2-pp512",
        "smollm2-tg64",
        "smollm2-tg64-d2048",
        "gemma3-pp128",
        "gemma3-pp512",
        "gemma3-tg64",
        "gemma3-tg64-d2048",
        "smollm2-explain-512",
        "gemma3-explain-512",
        "smollm2-effect-32",
        "gemma3-effect-32",
        "train-winograd",
        "train-text",
    ];
    for c in &args.cases {
        if !baselines.contains(&c.as_str()) && !all.iter().any(|k| k.name == c) {
            let names: Vec<&str> = baselines
                .iter()
                .copied()
                .chain(all.iter().map(|k| k.name))
                .collect();
            return Err(crate::usage!(
                "unknown case `{c}`; the cases are: {}",
                names.join(", ")
            ));
        }
    }
    let wanted = |name: &str| args.cases.is_empty() || args.cases.iter().any(|c| c == name);
    let mut out = Out {
        format: args.format,
        stdout: std::io::stdout(),
        peak: None,
        copy: None,
        read: None,
    };
    if args.format == Format::Text {
        eprintln!(
            "attend bench: {threads} threads, kernels: {:?}",
            attend::Isa::detected()
        );
    }
    // the limits first, so that every case after them can say its share: peak-fma whenever a
    // kernel case runs, the copy bandwidth whenever a decode case does
    let kernel_cases = all.iter().any(|c| wanted(c.name));
    if wanted("peak-fma") || kernel_cases {
        let active = attend::Isa::detected();
        let isas: Vec<attend::Isa> = if wanted("peak-fma") && args.isa.is_none() {
            attend::Isa::available()
        } else {
            vec![active]
        };
        for isa in isas {
            let (gflops, t) = peak_fma(isa)?;
            if isa == active {
                out.peak = Some(gflops);
            }
            out.emit(
                json!({"case": "peak-fma", "impl": "panel-kernel-L1", "threads": threads,
                       "isa": isa_name(isa), "gflops": round(gflops)}),
                &t,
            )?;
        }
    }
    // (and the generation cases: each token streams the weights)
    let decode_cases = all.iter().any(|c| wanted(c.name) && c.shape.s_q == 1)
        || LM_MODELS
            .iter()
            .any(|m| wanted(&format!("{m}-tg64")) || wanted(&format!("{m}-tg64-d2048")));
    if wanted("copy-512MiB") || wanted("read-512MiB") || decode_cases {
        let n = 512 << 17; // 512 MiB of u64
        let src = vec![1u64; n];
        let mut dst = vec![0u64; n];
        // every thread copies its share, as a kernel streaming memory would
        let chunk = n.div_ceil(rayon::current_num_threads().max(1));
        // (warmed up and repeated even with --quick: a cold first copy counts page faults,
        // and every share read against it would be wrong)
        let t = time(false, 0.5, || {
            use rayon::prelude::*;
            dst.par_chunks_mut(chunk)
                .zip(std::hint::black_box(&src).par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&mut dst);
        });
        let gbps = 2.0 * (n * 8) as f64 / t.median_ms / 1e6;
        out.copy = Some(gbps);
        if wanted("copy-512MiB") || decode_cases {
            out.emit(json!({"case": "copy-512MiB", "impl": "memcpy", "threads": threads, "gbps": round(gbps)}), &t)?;
        }
        // what a generation step does with its weights: read them once, write nothing (a
        // copy's share counts its writes too, so a read-only stream can pass half of it).
        // One word of each 64-byte line is summed: memory moves whole lines, and the loop's
        // own work stays far below them (a C loop of AVX-512 loads with prefetches measured
        // 24-25 GB/s on an Intel Xeon VM, this loop 24-26; summing every word, 19)
        let t = time(false, 0.5, || {
            use rayon::prelude::*;
            let sum: u64 = std::hint::black_box(&src)
                .par_chunks(chunk)
                .map(|s| s.iter().step_by(8).fold(0u64, |a, &x| a.wrapping_add(x)))
                .sum();
            std::hint::black_box(sum);
        });
        let gbps = (n * 8) as f64 / t.median_ms / 1e6;
        out.read = Some(gbps);
        if wanted("read-512MiB") || decode_cases {
            out.emit(json!({"case": "read-512MiB", "impl": "sum", "threads": threads, "gbps": round(gbps)}), &t)?;
        }
    }
    if wanted("sgemm-2048") {
        let n = 2048;
        let a = cases::fill(n * n, 11);
        let b = cases::fill(n * n, 12);
        let mut c = vec![0.0f32; n * n];
        let t = time(args.quick, 2.0, || sgemm(n, &a, &b, &mut c));
        let gflops = 2.0 * (n * n * n) as f64 / t.median_ms / 1e6;
        out.emit(json!({"case": "sgemm-2048", "impl": "gemm", "threads": threads, "gflops": round(gflops)}), &t)?;
    }
    for case in all.iter().filter(|c| wanted(c.name)) {
        run_case(case, args.quick, threads, &mut out)?;
    }
    let asked = |n: &str| args.cases.iter().any(|c| c == n);
    let asked_minilm = [
        "minilm-embed",
        "minilm-one",
        "minilm-embed-int8",
        "minilm-one-int8",
    ]
    .iter()
    .any(|c| asked(c));
    if asked_minilm || args.cases.is_empty() {
        let cached =
            attend_models::registry::info("minilm").is_some_and(attend_models::registry::is_cached);
        if cached || asked_minilm {
            model_cases(args, threads, &mut out, &wanted)?;
        } else {
            eprintln!("attend bench: skipping the minilm cases (run `attend fetch minilm` to include them)");
        }
    }
    for name in ["train-winograd", "train-text"] {
        if wanted(name) {
            train_case(name, args.quick, threads, &mut out)?;
        }
    }
    for model in LM_MODELS {
        let cases = lm_case_names(model);
        let lm = cases.iter().any(|n| asked(n));
        if lm || args.cases.is_empty() {
            let cached = attend_models::registry::info(model)
                .is_some_and(attend_models::registry::is_cached);
            if cached || lm {
                lm_cases(model, args, threads, &mut out, &wanted)?;
            } else {
                eprintln!(
                    "attend bench: skipping the {model} cases (run `attend fetch {model}` to include them)"
                );
            }
        }
    }
    Ok(())
}

/// The benchmark sentences: `n` sentences of 12–20 words, deterministic (bench/st_embed.py
/// builds the same ones).
pub fn sentences(n: usize) -> Vec<String> {
    const WORDS: [&str; 50] = [
        "the", "model", "attends", "to", "every", "token", "in", "a", "sentence", "and", "learns",
        "which", "words", "matter", "most", "for", "meaning", "while", "reading", "long", "texts",
        "about", "animals", "roads", "cities", "music", "science", "history", "quietly", "today",
        "because", "it", "was", "tired", "wide", "bright", "small", "people", "often", "say",
        "that", "weather", "changes", "quickly", "near", "old", "rivers", "under", "clear",
        "skies",
    ];
    (0..n)
        .map(|i| {
            let len = 12 + (i * 7) % 9;
            (0..len)
                .map(|j| WORDS[(i * 31 + j * 17 + j * j) % 50])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The decoders with language-model cases (`MODEL-pp128` … `MODEL-tg64-d2048`).
const LM_MODELS: [&str; 2] = ["smollm2", "gemma3"];

fn lm_case_names(model: &str) -> [String; 6] {
    [
        "pp128",
        "pp512",
        "tg64",
        "tg64-d2048",
        "explain-512",
        "effect-32",
    ]
    .map(|c| format!("{model}-{c}"))
}

/// `MODEL-effect-32`: a 32-token prompt (the ids of [`lm_tokens`]), every token knocked out
/// and every head ablated, with the reuse of unchanged prefixes and residual streams against
/// the naive loop that recomputes the whole prompt for each intervention, in turns
/// (bench/effect_transformers.py times transformers with hooks on the same file and ids).
fn effect_case(name: &str, model: &str, quick: bool, threads: usize, out: &mut Out) -> Result<()> {
    use attend_models::trace::effect::EffectSpec;
    let mut m = crate::input::causal(model)?;
    let infos: Vec<attend_models::TokenInfo> = lm_tokens(32)
        .into_iter()
        .enumerate()
        .map(|(i, id)| attend_models::TokenInfo {
            id,
            text: format!("t{i}"),
            start: i,
            end: i + 1,
        })
        .collect();
    let (mut reuse, mut naive) = (Vec::new(), Vec::new());
    let mut work = None;
    for _ in 0..if quick { 1 } else { 3 } {
        for (on, times) in [(true, &mut reuse), (false, &mut naive)] {
            let spec = EffectSpec {
                reuse: on,
                ..EffectSpec::default()
            };
            let t0 = Instant::now();
            let e = m.effect(&infos, &[], &spec)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            if on {
                work = Some(e.work);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, nv) = (median(&mut reuse), median(&mut naive));
    let work = work.expect("one run at least");
    // float32 activations, what transformers computes (one run: the comparison's other side)
    let exact_ms = if !quick && m.set_exact(true) {
        // (a first run makes the float32 weights; the second is timed)
        m.effect(&infos, &[], &EffectSpec::default())?;
        let t0 = Instant::now();
        m.effect(&infos, &[], &EffectSpec::default())?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        m.set_exact(false);
        Some(round(ms))
    } else {
        None
    };
    let t = Timing {
        median_ms: r,
        min_ms: reuse[0],
        max_ms: reuse[reuse.len() - 1],
    };
    let interventions = 32 + m.layers() * m.heads();
    out.emit(
        json!({"case": name, "impl": "attend", "threads": threads,
               "interventions": interventions, "naive_ms": round(nv), "exact_ms": exact_ms,
               "naive_over_reuse": round(nv / r),
               "work_ratio": round(work.naive as f64 / work.done as f64)}),
        &t,
    )
}

/// The token ids of the language-model cases (bench/llamacpp.py uses the same).
pub fn lm_tokens(n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + 13) % 49000 + 100) as u32)
        .collect()
}

fn lm_cases(
    model: &str,
    args: &BenchArgs,
    threads: usize,
    out: &mut Out,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<()> {
    use attend_models::generate::AttnCapture;
    let m = crate::generate::load(model)?;
    let mut err = None;
    for n in [128, 512] {
        let name = format!("{model}-pp{n}");
        if !wanted(&name) {
            continue;
        }
        let toks = lm_tokens(n);
        let t = time(args.quick, 5.0, || {
            let r = m
                .new_cache()
                .and_then(|mut c| m.step(&toks, &mut c, AttnCapture::None));
            if let Err(e) = r {
                err = Some(e);
            }
        });
        out.emit(
            json!({"case": name, "impl": "attend", "threads": threads,
                   "tokens_per_s": round(n as f64 / t.median_ms * 1e3)}),
            &t,
        )?;
    }
    let name = format!("{model}-explain-512");
    if wanted(&name) {
        // every layer × head × query × key of a 512-token prompt, against the plain forward
        // of the same prompt, in turns; and the viewer page made from it
        let toks = lm_tokens(512);
        let infos: Vec<attend_models::TokenInfo> = toks
            .iter()
            .enumerate()
            .map(|(i, &id)| attend_models::TokenInfo {
                id,
                text: format!("t{i}"),
                start: i,
                end: i + 1,
            })
            .collect();
        let (mut plain, mut explain) = (Vec::new(), Vec::new());
        let reps = if args.quick { 1 } else { 4 };
        let mut trace = None;
        for _ in 0..reps {
            let t0 = Instant::now();
            m.new_cache()
                .and_then(|mut c| m.step(&toks, &mut c, AttnCapture::None))?;
            plain.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            trace = Some(m.explain(&infos)?.0);
            explain.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let trace = trace.expect("at least one run");
        let t0 = Instant::now();
        let page = attend_viz::trace_page(&trace, &attend_viz::Options::new(model))?;
        let page_ms = t0.elapsed().as_secs_f64() * 1e3;
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (p, e) = (median(&mut plain), median(&mut explain));
        let t = Timing {
            median_ms: e,
            min_ms: explain[0],
            max_ms: explain[explain.len() - 1],
        };
        out.emit(
            json!({"case": name, "impl": "attend", "threads": threads,
                   "tokens_per_s": round(512.0 / e * 1e3), "forward_ms": round(p),
                   "explain_over_forward": round(e / p), "page_ms": round(page_ms),
                   "page_mib": round(page.len() as f64 / (1 << 20) as f64),
                   "trace_mib": round(trace.stored() as f64 * 4.0 / (1 << 20) as f64)}),
            &t,
        )?;
    }
    let name = format!("{model}-effect-32");
    if wanted(&name) {
        effect_case(&name, model, args.quick, threads, out)?;
    }
    for depth in [1, 2048] {
        let name = if depth == 1 {
            format!("{model}-tg64")
        } else {
            format!("{model}-tg64-d{depth}")
        };
        if !wanted(&name) {
            continue;
        }
        let toks = lm_tokens(depth + 64);
        let mut cache = m.new_cache()?;
        // the prompt is set-up, untimed; the case is the 64 single-token steps after it
        let mut runs = Vec::new();
        let reps = if args.quick { 1 } else { 4 };
        let mut kv_bytes = 0;
        for rep in 0..reps {
            cache.reset();
            m.step(&toks[..depth], &mut cache, AttnCapture::None)?;
            let start = Instant::now();
            kv_bytes = 0;
            for &tok in &toks[depth..] {
                m.step(&[tok], &mut cache, AttnCapture::None)?;
                kv_bytes += cache.live_bytes();
            }
            if rep > 0 || args.quick {
                runs.push(start.elapsed().as_secs_f64() * 1e3); // the first run warms up
            }
        }
        runs.sort_by(f64::total_cmp);
        let t = Timing {
            median_ms: runs[runs.len() / 2],
            min_ms: runs[0],
            max_ms: runs[runs.len() - 1],
        };
        let tok_s = 64.0 / t.median_ms * 1e3;
        let mut rec = json!({"case": name, "impl": "attend", "threads": threads,
                             "tokens_per_s": round(tok_s)});
        if let Some(weights) = m.weight_bytes_per_token() {
            // the weights and the cached keys and values each token streams, per second:
            // what the copy bandwidth bounds
            let kv = kv_bytes as f64 / 64.0;
            rec["weight_mb_per_token"] = json!(round(weights as f64 / 1e6));
            rec["kv_mb_per_token"] = json!(round(kv / 1e6));
            rec["gbps"] = json!(round((weights as f64 + kv) * tok_s / 1e9));
        }
        out.emit(rec, &t)?;
    }
    if let Some(e) = err {
        return Err(e.into());
    }
    Ok(())
}

/// Training throughput: `train-winograd` is the default `attend train winograd` model
/// (2 layers × 4 heads, dim 64: 115 k parameters; batch 64 of ~16 tokens), `train-text` the
/// default `attend train text` model (4 layers × 4 heads, dim 128: 0.8 M parameters; batch 32
/// of 128 bytes). One case run is one full step (forward, backward, AdamW); the record splits
/// the time into forward, attention backward (`attend::backward`), the other backward passes
/// and the optimiser.
fn train_case(name: &str, quick: bool, threads: usize, out: &mut Out) -> Result<()> {
    use attend_models::models::toy::ToyConfig;
    use attend_models::tokenize::vocab::Vocab;
    use attend_models::train::trainer::fnv_hex;
    use attend_models::train::{winograd, TaskSpec, Trainer};
    let mut trainer = if name == "train-winograd" {
        let cfg = winograd::model_config(64, 2, 4);
        Trainer::new(cfg, winograd::train_config(100_000, 1, 64, 3e-3), None)?
    } else {
        let text: Vec<u8> = sentences(2000).join(" ").into_bytes();
        let cfg = ToyConfig {
            dim: 128,
            layers: 4,
            heads: 4,
            mlp: 512,
            ctx: 128,
            vocab: Vocab::Bytes,
        };
        let mut tc = winograd::train_config(100_000, 1, 32, 1e-3);
        tc.task = TaskSpec::Text {
            file: "bench".into(),
            bytes: text.len(),
            hash: fnv_hex(&text),
        };
        Trainer::new(cfg, tc, Some(text))?
    };
    let mut err = None;
    if !quick {
        for _ in 0..3 {
            trainer.step()?;
        }
    }
    let before = trainer.times;
    let steps_before = trainer.state.step;
    let t = time(quick, 4.0, || {
        if let Err(e) = trainer.step() {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let tokens = trainer.state.tokens_per_step;
    let steps = (trainer.state.step - steps_before) as f64;
    let a = trainer.times;
    let parts = [
        a.forward - before.forward,
        a.attn_backward - before.attn_backward,
        a.other_backward - before.other_backward,
        a.optimizer - before.optimizer,
    ];
    let total: f64 = parts.iter().sum::<f64>().max(1e-12);
    let pct = |x: f64| (x / total * 1000.0).round() / 10.0;
    let params = trainer.model.params.len();
    out.emit(
        json!({"case": name, "impl": "attend-train", "threads": threads, "params": params,
               "tokens_per_step": round(tokens), "steps": steps,
               "tokens_per_s": round(tokens / t.median_ms * 1e3),
               "forward_pct": pct(parts[0]), "attn_backward_pct": pct(parts[1]),
               "other_backward_pct": pct(parts[2]), "optimizer_pct": pct(parts[3])}),
        &t,
    )
}

fn model_cases(
    args: &BenchArgs,
    threads: usize,
    out: &mut Out,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<()> {
    for (int8, embed, one) in [
        (false, "minilm-embed", "minilm-one"),
        (true, "minilm-embed-int8", "minilm-one-int8"),
    ] {
        if !wanted(embed) && !wanted(one) {
            continue;
        }
        let precision = if int8 {
            attend_models::Precision::Int8
        } else {
            attend_models::Precision::Float32
        };
        let enc = crate::input::encoder_with("minilm", precision)?;
        if wanted(embed) {
            let texts = sentences(512);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokens: usize = refs
                .iter()
                .map(|t| enc.tokenize(t).map(|x| x.tokens.len()).unwrap_or(0))
                .sum();
            let t = time(args.quick, 5.0, || {
                std::hint::black_box(enc.embed(&refs).ok());
            });
            let rec = json!({"case": embed, "impl": "minilm-embed", "threads": threads,
                "int8": int8, "sentences": 512, "mean_tokens": round(tokens as f64 / 512.0),
                "sentences_per_s": round(512.0 / t.median_ms * 1e3)});
            out.emit(rec, &t)?;
        }
        if wanted(one) {
            let text = "The animal didn't cross the road because it was tired";
            let t = time(args.quick, 2.0, || {
                std::hint::black_box(enc.embed(&[text]).ok());
            });
            out.emit(
                json!({"case": one, "impl": "minilm-embed", "threads": threads, "int8": int8}),
                &t,
            )?;
        }
    }
    Ok(())
}

fn run_case(case: &Case, quick: bool, threads: usize, out: &mut Out) -> Result<()> {
    let lengths = case.key_lengths();
    let p = case.params(&lengths);
    let sh = case.shape;
    let (q, k, v) = case.inputs();
    let flops = case.flops();
    let rate = |impl_name: &str, t: &Timing| {
        let mut r = json!({"case": case.name, "impl": impl_name, "threads": threads});
        if sh.s_q == 1 {
            r["gbps"] = json!(round(case.kv_bytes() / t.median_ms / 1e6));
        } else {
            r["gflops"] = json!(round(flops / t.median_ms / 1e6));
        }
        r
    };
    if case.backward {
        let fwd = fused::forward(&p, &q, &k, &v)?;
        let dout = cases::fill(sh.o_len(), 4);
        let t = time(quick, 3.0, || {
            std::hint::black_box(
                backward::backward(&p, &q, &k, &v, &fwd.out, &fwd.lse, &dout).ok(),
            );
        });
        out.emit(rate("backward-fused", &t), &t)?;
        if case.reference && !quick {
            let t = time(quick, 3.0, || {
                std::hint::black_box(reference::backward(&p, &q, &k, &v, &dout).ok());
            });
            out.emit(rate("backward-reference", &t), &t)?;
        }
        return Ok(());
    }
    let mut o = vec![0.0f32; sh.o_len()];
    let mut lse = vec![0.0f32; sh.lse_len()];
    // touch the outputs so that they count as resident before the peak is reset
    o.fill(0.0);
    lse.fill(0.0);
    let decode = sh.s_q * sh.group() <= 64 && sh.s_kv > sh.s_q;
    // decoding reads a KV cache whose contents were checked once, when appended; it is built
    // before the memory baseline, like the inputs
    let cache = if decode {
        let mut c = attend::LayerCache::new(sh.b, sh.h_kv, sh.d, sh.d_v)?;
        c.append(&k, &v, sh.s_kv, attend::Layout::Bhsd)?;
        Some(c)
    } else {
        None
    };
    let before = rss::current_mib();
    rss::reset_peak();
    let mut err = None;
    let t = time(quick, 3.0, || {
        let r = match &cache {
            Some(c) => c.attend_into(&p, &q, &mut o, &mut lse),
            None => fused::forward_into(&p, &q, &k, &v, &mut o, &mut lse),
        };
        if let Err(e) = r {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let impl_name = if decode { "decode" } else { "fused" };
    let mut r = rate(impl_name, &t);
    if let (Some(before), Some(peak)) = (before, rss::peak_mib()) {
        r["peak_rss_mib"] = json!(round(peak));
        r["extra_rss_mib"] = json!(round((peak - before).max(0.0)));
    }
    if case.reference && !quick {
        let reference = reference::forward(&p, &q, &k, &v)?;
        let err = o
            .iter()
            .zip(&reference.out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        r["max_abs_err"] = json!(err);
        out.emit(r, &t)?;
        let t = time(quick, 3.0, || {
            std::hint::black_box(reference::forward(&p, &q, &k, &v).ok());
        });
        out.emit(rate("reference", &t), &t)?;
    } else {
        out.emit(r, &t)?;
    }
    Ok(())
}

/// `c = a · bᵀ`, row-major `n × n`, with the `gemm` crate (through the model crate's safe
/// wrapper): the machine's sgemm peak, for scale.
fn sgemm(n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    attend_kernels::gemm::matmul_bt(a, b, c, n, n, n);
}

/// Resident memory from /proc (Linux); `None` elsewhere.
mod rss {
    fn field(name: &str) -> Option<f64> {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
    pub fn current_mib() -> Option<f64> {
        field("VmRSS:")
    }
    pub fn peak_mib() -> Option<f64> {
        field("VmHWM:")
    }
    /// Resets the peak to the current RSS (Linux ≥ 4.0: write 5 to clear_refs).
    pub fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }
}

/// The panel micro-kernel alone, in L1, on every thread of the pool: six rows of A against
/// two 16-wide panels of B over 128 keys (3 KiB + 16 KiB per thread), 50 000 times a run —
/// the most multiply-adds per second `isa`'s kernels can do here. GFLOP/s and the timing.
fn peak_fma(isa: attend::Isa) -> Result<(f64, Timing)> {
    let kern = isa.kern()?;
    let (rows, panels, k) = (6usize, 2usize, 128usize);
    let nr = attend_kernels::NR;
    // (warmed up and repeated even with --quick, as the copy: it is the yardstick)
    let reps = 50_000;
    let threads = rayon::current_num_threads().max(1);
    // every thread of the pool at once, each on its own buffers (a broadcast: no thread may
    // take two shares while another idles)
    let t = time(false, 0.5, || {
        rayon::broadcast(|ctx| {
            let i = ctx.index() as u64;
            let a = cases::fill(rows * k, 21 + i);
            let b = cases::fill(panels * k * nr, 31 + i);
            let mut c = vec![0.0f32; rows * panels * nr];
            for _ in 0..reps {
                let av = attend_kernels::MatRef::dense(&a, rows, k);
                let cv = attend_kernels::MatMut::dense(&mut c, rows, panels * nr);
                kern.gemm_a(av, &b, panels, cv, true);
            }
            std::hint::black_box(&c);
        });
    });
    let flops = 2.0 * (rows * k * panels * nr) as f64 * reps as f64 * threads as f64;
    Ok((flops / t.median_ms / 1e6, t))
}
