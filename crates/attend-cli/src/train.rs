//! `attend train`: small transformers trained from scratch on attend's kernel, by next-token
//! prediction — the built-in Winograd task, or any text file byte by byte.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use attend_models::train::trainer::{evaluate_winograd, WinogradEval};
use attend_models::train::{session, TaskSpec, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use attend_viz::picture as render;

/// Arguments of `attend train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(subcommand)]
    task: Task,
}

#[derive(clap::Subcommand, Debug)]
enum Task {
    /// The built-in Winograd task: "The dog didn't cross the street because it was tired.
    /// it = dog". Reports held-out referent accuracy and the most decisive head.
    Winograd {
        #[command(flatten)]
        common: Common,
    },
    /// A byte-level model of a text file (its last tenth held out); sample from it with
    /// `attend generate --model DIR`.
    Text {
        /// The text file.
        file: PathBuf,
        /// Context length in bytes.
        #[arg(long, default_value_t = 128)]
        ctx: usize,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Training steps [default: 1000 for winograd, 2000 for text].
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of the initial weights and of every batch.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Transformer blocks [default: 2 for winograd, 4 for text].
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads per block [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Width of the model [default: 64 for winograd, 128 for text].
    #[arg(long)]
    dim: Option<usize>,
    /// Sequences per step [default: 64 for winograd, 32 for text].
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate (after warm-up; cosine decay to a tenth of it).
    #[arg(long)]
    lr: Option<f32>,
    /// Held-out evaluation, and a checkpoint saved, every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Checkpoint folder [default: attend-winograd or attend-text].
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Continue the run saved in this folder (to --steps in all); saves to -o or back to it.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Replace a checkpoint already in the output folder.
    #[arg(long)]
    force: bool,
    /// Keep the probe sentence's attention this many times over the run (and before it):
    /// `training.html` in the output folder shows it forming, beside the loss curve.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    snapshots: u64,
}

fn usage_err(e: attend_models::Error) -> anyhow::Error {
    crate::usage!("{e}")
}

/// Runs `attend train`.
pub fn run(args: &TrainArgs, threads: usize) -> Result<()> {
    let (common, is_text) = match &args.task {
        Task::Winograd { common } => (common, false),
        Task::Text { common, .. } => (common, true),
    };
    let out_dir = common
        .output
        .clone()
        .or_else(|| common.resume.clone())
        .unwrap_or_else(|| {
            PathBuf::from(if is_text {
                "attend-text"
            } else {
                "attend-winograd"
            })
        });
    let resuming_here = common.resume.as_deref() == Some(out_dir.as_path());
    if out_dir.join("config.json").exists() && !resuming_here && !common.force {
        return Err(crate::usage!(
            "{} already holds a checkpoint: continue it with --resume {0}, or replace it with --force",
            out_dir.display()
        ));
    }
    if common.steps == Some(0) {
        return Err(crate::usage!("--steps must be at least 1"));
    }
    // where the checkpoint goes is checked before the run, not after it
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(crate::usage!(
            "-o {}: that is a file; give a folder for the checkpoint",
            out_dir.display()
        ));
    }
    let (mut trainer, mut notes) = build(args, common)?;
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating the checkpoint folder {}", out_dir.display()))?;
    let winograd_task = trainer.state.config.task == TaskSpec::Winograd;
    let c = trainer.model.config.clone();
    let total = trainer.state.config.optim.steps;
    eprintln!(
        "training {} parameters: {} layers × {} heads, dim {}, mlp {}, context {}, vocabulary {} \
         · batch {} · steps {}..{total} · seed {} · {threads} threads",
        trainer.model.params.len(),
        c.layers,
        c.heads,
        c.dim,
        c.mlp,
        c.ctx,
        c.vocab.len(),
        trainer.state.config.batch,
        trainer.state.step,
        trainer.state.config.seed
    );
    if trainer.state.step == 0 {
        let p = trainer.evaluate()?;
        if winograd_task {
            let ev = evaluate_winograd(&trainer.model, 400)?;
            eprintln!("untrained: {}", describe(&ev, trainer.model.config.heads));
            notes["untrained"] = serde_json::to_value(&ev)?;
        } else {
            eprintln!("untrained: held-out loss {:.3}", p.loss);
        }
    }
    let run = train_loop(&mut trainer, common, &out_dir, &notes)?;
    summarise(&trainer, &run, threads, &mut notes)?;
    let decisive = notes["held_out"]["head"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize)));
    save(&trainer, notes, &out_dir, threads)?;
    if !run.snapshots.is_empty() {
        let page = attend_viz::training::run_page(&trainer, &run.snapshots, decisive)?;
        crate::output::write_file(&out_dir.join("training.html"), page.as_bytes())?;
        eprintln!(
            "{} snapshots of the probe's attention: {}",
            run.snapshots.len(),
            out_dir.join("training.html").display()
        );
    }
    Ok(())
}

/// Compute: every remaining step (`session::run`), with progress, evaluations and a
/// checkpoint at each one.
fn train_loop(
    trainer: &mut Trainer,
    common: &Common,
    out_dir: &Path,
    notes: &serde_json::Value,
) -> Result<session::Run> {
    let total = trainer.state.config.optim.steps;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:32} {pos}/{len} steps · {msg} · {elapsed} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_position(trainer.state.step as u64);
        Some(b)
    } else {
        None
    };
    let mut recent: Vec<f32> = Vec::new();
    let mut last_loss = f32::NAN;
    let mut on = |e: session::Event| {
        match e {
            session::Event::Step(r, rate) => {
                recent.push(r.loss);
                last_loss = r.loss;
                if let Some(b) = &bar {
                    let k = recent.len().min(20);
                    let mean = recent[recent.len() - k..].iter().sum::<f32>() / k as f32;
                    b.set_message(format!(
                        "loss {mean:.3} · {rate:.0} tokens/s · lr {:.1e}",
                        r.lr
                    ));
                    b.set_position(r.step as u64);
                }
            }
            session::Event::Eval(p, rate) => {
                let line = format!(
                    "step {:>5}: training loss {:.3}, held-out loss {:.3}{} · {rate:.0} tokens/s",
                    p.step,
                    last_loss,
                    p.loss,
                    p.accuracy
                        .map_or(String::new(), |a| format!(", accuracy {:.1}%", a * 100.0))
                );
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
        true
    };
    let every = session::snapshot_interval(
        common.snapshots as usize,
        total.saturating_sub(trainer.state.step),
    );
    let run = session::run(trainer, common.eval_every, every, out_dir, notes, &mut on)
        .with_context(|| format!("training into {}", out_dir.display()))?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    Ok(run)
}

/// Print: the final evaluation and where the time went.
fn summarise(
    trainer: &Trainer,
    run: &session::Run,
    _threads: usize,
    notes: &mut serde_json::Value,
) -> Result<()> {
    let winograd_task = trainer.state.config.task == TaskSpec::Winograd;
    let (secs, steps_run, tokens) = (run.secs, run.steps, run.tokens);
    let final_point = &run.final_point;
    eprintln!(
        "{steps_run} steps in {secs:.1} s: {:.0} tokens/s; final training loss {:.3}, held-out loss {:.3}",
        tokens as f64 / secs.max(1e-9),
        trainer.state.losses.last().copied().unwrap_or(f32::NAN),
        final_point.loss
    );
    let t = trainer.times;
    let all = (t.forward + t.attn_backward + t.other_backward + t.optimizer).max(1e-9);
    eprintln!(
        "time: forward {:.0}%, attention backward {:.0}%, other backward {:.0}%, optimiser {:.0}%",
        100.0 * t.forward / all,
        100.0 * t.attn_backward / all,
        100.0 * t.other_backward / all,
        100.0 * t.optimizer / all
    );
    if winograd_task {
        let ev = evaluate_winograd(&trainer.model, 400)?;
        println!("{}", describe(&ev, trainer.model.config.heads));
        notes["held_out"] = serde_json::to_value(&ev)?;
    } else {
        println!(
            "held-out loss {:.3} nats/byte ({:.3} bits/byte)",
            final_point.loss,
            final_point.loss / std::f32::consts::LN_2
        );
    }
    Ok(())
}

/// Save: the checkpoint, the loss curve and (Winograd) the attention of the classic sentence.
fn save(
    trainer: &Trainer,
    mut notes: serde_json::Value,
    out_dir: &Path,
    threads: usize,
) -> Result<()> {
    let winograd_task = trainer.state.config.task == TaskSpec::Winograd;
    let c = &trainer.model.config;
    let total = trainer.state.config.optim.steps;
    let task_words = match &trainer.state.config.task {
        TaskSpec::Winograd => "winograd".to_string(),
        TaskSpec::Text { file, .. } => format!("text {file}"),
    };
    notes["made_with"] = json!(format!(
        "attend train {task_words} --seed {} --steps {} ({} threads)",
        trainer.state.config.seed, total, threads
    ));
    trainer
        .checkpoint(notes)
        .save(out_dir)
        .with_context(|| format!("saving the checkpoint to {}", out_dir.display()))?;
    let held: Vec<(usize, f32)> = trainer
        .state
        .evals
        .iter()
        .map(|p| (p.step, p.loss))
        .collect();
    let acc: Vec<(usize, f32)> = trainer
        .state
        .evals
        .iter()
        .filter_map(|p| p.accuracy.map(|a| (p.step, a)))
        .collect();
    let title = format!(
        "{} · {} layers × {} heads, dim {} · seed {}",
        if winograd_task {
            "Winograd task".to_string()
        } else {
            "text".to_string()
        },
        c.layers,
        c.heads,
        c.dim,
        trainer.state.config.seed
    );
    let svg = render::loss_curve_svg(&title, &trainer.state.losses, &held, &acc);
    let png = render::svg_to_png(&svg)?;
    crate::output::write_file(&out_dir.join("loss.svg"), svg.as_bytes())?;
    crate::output::write_file(&out_dir.join("loss.png"), &png)?;
    let mut files = "config.json, model.safetensors, optimizer.safetensors, loss.png, loss.svg";
    if winograd_task {
        // who attends to whom in the classic sentence, every head, after training
        let text = "The animal didn't cross the road because it was tired. it =";
        let tokens = c.vocab.encode(text)?;
        let (trace, _) = trainer.model.trace(&tokens)?;
        let panels: Vec<(String, Vec<f32>)> = (0..c.layers)
            .flat_map(|l| (0..c.heads).map(move |h| (l, h)))
            .map(|(l, h)| (format!("layer {l}, head {h}"), trace.matrix(l, h)))
            .collect();
        let title = format!("after {} steps: \"{text}\"", trainer.state.step);
        let svg = render::heatmaps_svg(&title, &trace.tokens, &panels);
        crate::output::write_file(&out_dir.join("attention.png"), &render::svg_to_png(&svg)?)?;
        files = "config.json, model.safetensors, optimizer.safetensors, loss.png, loss.svg, \
                 attention.png";
    }
    eprintln!("saved {} ({files})", out_dir.display());
    Ok(())
}

/// Load: a new trainer from the flags, or the one a checkpoint resumes, and the notes its
/// `config.json` keeps besides the training state (`attend_models::train::session`, which
/// Python's `attend.train` shares).
fn build(args: &TrainArgs, common: &Common) -> Result<(Trainer, serde_json::Value)> {
    let task = match &args.task {
        Task::Winograd { .. } => session::Task::Winograd,
        Task::Text { file, ctx, .. } => session::Task::Text {
            file: file.clone(),
            ctx: *ctx,
        },
    };
    let spec = session::RunSpec {
        task,
        steps: common.steps,
        seed: common.seed,
        layers: common.layers,
        heads: common.heads,
        dim: common.dim,
        batch: common.batch,
        lr: common.lr,
        resume: common.resume.clone(),
    };
    session::build(&spec).map_err(|e| match e {
        attend_models::Error::Invalid(_) => usage_err(e),
        other => anyhow::Error::from(other).context(match &common.resume {
            Some(dir) => format!("loading the checkpoint in {}", dir.display()),
            None => "setting up the run".into(),
        }),
    })
}

/// `heads`: per layer (the index of `ev.ablated_accuracy`).
fn describe(ev: &WinogradEval, heads: usize) -> String {
    let at = ev.head.0 * heads + ev.head.1;
    let ablation = match (ev.ablated_accuracy.get(at), ev.ablated_two_way.get(at)) {
        (Some(a), Some(t)) => {
            let others: Vec<f32> = ev
                .ablated_accuracy
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != at)
                .map(|(_, &a)| a)
                .collect();
            let lo = others.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = others.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let rest = if others.is_empty() {
                String::new()
            } else {
                format!(
                    "; any other head ablated: {:.1}%–{:.1}%",
                    lo * 100.0,
                    hi * 100.0
                )
            };
            format!(
                "\n  that head ablated (its output zeroed): accuracy {:.1}% (the referent over the \
                 other noun: {:.1}%){rest}",
                a * 100.0,
                t * 100.0,
            )
        }
        _ => String::new(),
    };
    format!(
        "held-out referent accuracy {:.1}% (the referent over the other noun: {:.1}%; chance 50%) \
         on {} texts\n  most decisive head of each text (explain --compare): weight on the referent \
         {:.3}, on the other noun {:.3}; it favours the referent in {:.1}% of texts\n  best single \
         head: layer {} head {}, weight on the referent {:.3}, on the other noun {:.3}{ablation}",
        ev.accuracy * 100.0,
        ev.two_way * 100.0,
        ev.examples,
        ev.decisive_correct,
        ev.decisive_other,
        ev.decisive_agrees * 100.0,
        ev.head.0,
        ev.head.1,
        ev.head_correct,
        ev.head_other
    )
}
