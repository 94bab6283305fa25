//! A training run as the CLI's `attend train` and Python's `attend.train` both make it: the
//! trainer built from what was asked (or resumed from a checkpoint), then every remaining
//! step, a held-out evaluation and a checkpoint every `eval_every` steps, and a checkpoint at
//! the step a caller stops at — one code path, so both give the same run for the same seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::trainer::{fnv_hex, StepReport};
use super::{winograd, Checkpoint, EvalPoint, TaskSpec, Trainer};
use crate::models::toy::ToyConfig;
use crate::tokenize::vocab::Vocab;
use crate::{Error, Result};

/// Snapshots asked as a count over the steps still to run: every how many steps (0: none).
pub fn snapshot_interval(snapshots: usize, remaining: usize) -> usize {
    if snapshots == 0 {
        0
    } else {
        remaining.div_ceil(snapshots).max(1)
    }
}

/// What to learn.
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    /// The built-in Winograd task ("… because it was tired. it = dog").
    Winograd,
    /// A byte-level model of a text file (its last tenth held out), `ctx` bytes of context.
    Text {
        /// The text file.
        file: PathBuf,
        /// Context length in bytes.
        ctx: usize,
    },
}

/// What a run is asked for (`attend train`'s flags, `attend.train`'s keywords); `None` takes
/// the task's default.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The task.
    pub task: Task,
    /// Steps in all [default: 1000 Winograd, 2000 text].
    pub steps: Option<usize>,
    /// Seed of the weights and of every batch.
    pub seed: u64,
    /// Blocks [default: 2 Winograd, 4 text].
    pub layers: Option<usize>,
    /// Heads per block [default: 4].
    pub heads: Option<usize>,
    /// Width [default: 64 Winograd, 128 text].
    pub dim: Option<usize>,
    /// Sequences per step [default: 64 Winograd, 32 text].
    pub batch: Option<usize>,
    /// Peak learning rate [default: 3e-3 Winograd, 1e-3 text].
    pub lr: Option<f32>,
    /// Continue the run saved in this folder (its shape and settings; `steps` may grow).
    pub resume: Option<PathBuf>,
}

impl RunSpec {
    /// The task's defaults for everything.
    pub fn new(task: Task) -> RunSpec {
        RunSpec {
            task,
            steps: None,
            seed: 1,
            layers: None,
            heads: None,
            dim: None,
            batch: None,
            lr: None,
            resume: None,
        }
    }
}

/// A training text: a regular file (a FIFO or a device would block or never end).
pub fn read_text(file: &Path) -> Result<Vec<u8>> {
    crate::formats::read_regular(file)
}

/// The trainer a spec asks for — new, or the one its checkpoint resumes — and the notes
/// `config.json` keeps besides the training state. Settings a resumed run cannot change, a
/// checkpoint of another task, bad sizes: [`Error::Invalid`].
pub fn build(spec: &RunSpec) -> Result<(Trainer, serde_json::Value)> {
    if spec.steps == Some(0) {
        return Err(Error::Invalid("steps must be at least 1".into()));
    }
    if let Some(dir) = &spec.resume {
        if spec.layers.is_some()
            || spec.heads.is_some()
            || spec.dim.is_some()
            || spec.batch.is_some()
            || spec.lr.is_some()
        {
            return Err(Error::Invalid(
                "resuming continues a run with its own shape and settings: only the steps, \
                 the evaluation interval and the output may be given with it"
                    .into(),
            ));
        }
        let ck = Checkpoint::load(dir)?;
        let text = match (&spec.task, &ck.training) {
            (Task::Text { file, .. }, Some(st))
                if matches!(st.config.task, TaskSpec::Text { .. }) =>
            {
                Some(read_text(file)?)
            }
            (Task::Winograd, Some(st)) if st.config.task == TaskSpec::Winograd => None,
            (_, Some(_)) => {
                return Err(Error::Invalid(format!(
                    "{} was trained on another task",
                    dir.display()
                )))
            }
            (_, None) => None,
        };
        let notes = ck.notes.clone();
        return Ok((Trainer::resume(ck, spec.steps, text)?, notes));
    }
    let trainer = match &spec.task {
        Task::Winograd => {
            let cfg = winograd::model_config(
                spec.dim.unwrap_or(64),
                spec.layers.unwrap_or(2),
                spec.heads.unwrap_or(4),
            );
            let tc = winograd::train_config(
                spec.steps.unwrap_or(1000),
                spec.seed,
                spec.batch.unwrap_or(64),
                spec.lr.unwrap_or(3e-3),
            );
            Trainer::new(cfg, tc, None)?
        }
        Task::Text { file, ctx } => {
            let text = read_text(file)?;
            let dim = spec.dim.unwrap_or(128);
            let cfg = ToyConfig {
                dim,
                layers: spec.layers.unwrap_or(4),
                heads: spec.heads.unwrap_or(4),
                mlp: 4 * dim,
                ctx: *ctx,
                vocab: Vocab::Bytes,
            };
            let mut tc = winograd::train_config(
                spec.steps.unwrap_or(2000),
                spec.seed,
                spec.batch.unwrap_or(32),
                spec.lr.unwrap_or(1e-3),
            );
            tc.task = TaskSpec::Text {
                file: file.display().to_string(),
                bytes: text.len(),
                hash: fnv_hex(&text),
            };
            Trainer::new(cfg, tc, Some(text))?
        }
    };
    Ok((trainer, json!({})))
}

/// What happened, told to the caller as it happens.
pub enum Event<'a> {
    /// A step was taken (`tokens_per_s`: since the run began).
    Step(&'a StepReport, f64),
    /// A held-out evaluation (every `eval_every` steps, before the last), then a checkpoint.
    Eval(&'a EvalPoint, f64),
}

/// The sentence whose attention a Winograd run's snapshots keep.
pub const WINOGRAD_PROBE: &str = "The dog didn't cross the street because it was tired. it =";

/// The probe's attention at one step: every layer × head × query × key.
pub struct Snapshot {
    /// After this many steps.
    pub step: usize,
    /// The probe's attention then.
    pub trace: crate::Trace,
}

/// The probe a run's snapshots show: the Winograd sentence, or a text run's first bytes (at
/// most its context, and 64).
pub fn probe(trainer: &Trainer) -> Result<Vec<crate::TokenInfo>> {
    let c = &trainer.model.config;
    let mut tokens = match &trainer.state.config.task {
        TaskSpec::Winograd => c.vocab.encode(WINOGRAD_PROBE)?,
        TaskSpec::Text { .. } => c.vocab.encode(&trainer.text_head(c.ctx.min(64)))?,
    };
    // (a byte that is no UTF-8 becomes three bytes of U+FFFD: the context still bounds it)
    tokens.truncate(c.ctx.clamp(1, 64));
    Ok(tokens)
}

/// What a run measured.
pub struct Run {
    /// Seconds.
    pub secs: f64,
    /// Steps taken now.
    pub steps: usize,
    /// Tokens seen now.
    pub tokens: usize,
    /// The held-out evaluation after the last step taken.
    pub final_point: EvalPoint,
    /// Whether the caller stopped it before the end (a checkpoint holds the step it
    /// stopped at: resume it to go on).
    pub stopped: bool,
    /// The probe's attention every `snapshot_every` steps (and before the first step of a
    /// new run, and after the last).
    pub snapshots: Vec<Snapshot>,
}

/// Every remaining step of `trainer`, a held-out evaluation and a checkpoint in `out_dir`
/// every `eval_every` steps (0: only at the end), the probe's attention every
/// `snapshot_every` steps (0: none), `on` told of each; `on` returning false stops the run
/// after the step (a checkpoint is saved there). The final checkpoint is the caller's to save
/// (with its notes).
pub fn run(
    trainer: &mut Trainer,
    eval_every: usize,
    snapshot_every: usize,
    out_dir: &Path,
    notes: &serde_json::Value,
    on: &mut dyn FnMut(Event) -> bool,
) -> Result<Run> {
    let total = trainer.state.config.optim.steps;
    let start = Instant::now();
    let first_step = trainer.state.step;
    let mut tokens = 0usize;
    let mut stopped = false;
    let probe = if snapshot_every > 0 {
        Some(probe(trainer)?)
    } else {
        None
    };
    let mut snapshots = Vec::new();
    let snap = |trainer: &Trainer, snapshots: &mut Vec<Snapshot>| -> Result<()> {
        if let Some(p) = &probe {
            let (trace, _) = trainer.model.trace(p)?;
            snapshots.push(Snapshot {
                step: trainer.state.step,
                trace,
            });
        }
        Ok(())
    };
    snap(trainer, &mut snapshots)?;
    while !trainer.done() {
        let r = trainer.step()?;
        if snapshot_every > 0 && (r.step % snapshot_every == 0 || r.step == total) {
            snap(trainer, &mut snapshots)?;
        }
        tokens += r.tokens;
        let rate = tokens as f64 / start.elapsed().as_secs_f64().max(1e-9);
        if !on(Event::Step(&r, rate)) {
            // stopped: the checkpoint of this step, and nothing more is computed or told
            trainer.checkpoint(notes.clone()).save(out_dir)?;
            stopped = true;
            break;
        }
        let at_eval = eval_every > 0 && r.step % eval_every == 0;
        if at_eval && r.step < total {
            let p = trainer.evaluate()?;
            // a checkpoint at every evaluation: an interrupted run loses at most eval_every steps
            trainer.checkpoint(notes.clone()).save(out_dir)?;
            if !on(Event::Eval(&p, rate)) {
                stopped = true;
                break;
            }
        }
    }
    let final_point = match (stopped, trainer.state.evals.last()) {
        // (a stopped run is not evaluated again: the caller is waiting)
        (true, Some(p)) => p.clone(),
        _ => trainer.evaluate()?,
    };
    Ok(Run {
        secs: start.elapsed().as_secs_f64(),
        steps: trainer.state.step - first_step,
        tokens,
        final_point,
        stopped,
        snapshots,
    })
}
