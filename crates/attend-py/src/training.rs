//! `attend.train`: the run `attend train` makes (`attend_models::train::session`, the same
//! code), from Python — the GIL released between steps, progress told to a Python callable,
//! Ctrl-C (KeyboardInterrupt) stopping it after a step with a checkpoint saved there.

use std::path::PathBuf;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use attend_models::train::session::{self, Event, RunSpec, Task};
use attend_models::train::trainer::evaluate_winograd;
use attend_models::train::TaskSpec;

use crate::errors::{model_err, raise};

/// Trains a toy transformer as `attend train` does and saves it in `output` (a checkpoint
/// folder `attend.load` reads). `progress(step, total, loss, eval)` is called after every step
/// (`eval`: `(held-out loss, accuracy or None)` at an evaluation, else None).
#[pyfunction]
#[pyo3(signature = (task, output, file=None, ctx=128, steps=None, seed=1, layers=None, heads=None, dim=None, batch=None, lr=None, eval_every=100, resume=None, force=false, progress=None, snapshots=0))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn train<'py>(
    py: Python<'py>,
    task: &str,
    output: PathBuf,
    file: Option<PathBuf>,
    ctx: usize,
    steps: Option<usize>,
    seed: u64,
    layers: Option<usize>,
    heads: Option<usize>,
    dim: Option<usize>,
    batch: Option<usize>,
    lr: Option<f32>,
    eval_every: usize,
    resume: Option<PathBuf>,
    force: bool,
    progress: Option<Py<PyAny>>,
    snapshots: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let invalid = |m: String| raise(py, "InvalidArgument", m);
    let task = match (task, file) {
        ("winograd", None) => Task::Winograd,
        ("winograd", Some(_)) => return Err(invalid("the Winograd task takes no file".into())),
        ("text", Some(file)) => Task::Text { file, ctx },
        ("text", None) => return Err(invalid("task 'text' needs file=PATH".into())),
        (other, _) => {
            return Err(invalid(format!(
                "task must be 'winograd' or 'text', not {other:?}"
            )))
        }
    };
    let resuming_here = resume.as_deref() == Some(output.as_path());
    if output.join("config.json").exists() && !resuming_here && !force {
        return Err(invalid(format!(
            "{} already holds a checkpoint: continue it with resume={0:?}, or replace it with \
             force=True",
            output.display()
        )));
    }
    if output.exists() && !output.is_dir() {
        return Err(invalid(format!(
            "output={}: that is a file; give a folder for the checkpoint",
            output.display()
        )));
    }
    let spec = RunSpec {
        task,
        steps,
        seed,
        layers,
        heads,
        dim,
        batch,
        lr,
        resume,
    };
    let (mut trainer, mut notes) = py
        .detach(|| session::build(&spec))
        .map_err(|e| model_err(py, e))?;
    std::fs::create_dir_all(&output)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{}: {e}", output.display())))?;
    let winograd = trainer.state.config.task == TaskSpec::Winograd;
    let total = trainer.state.config.optim.steps;
    // as the CLI: the untrained figures first
    if trainer.state.step == 0 {
        py.detach(|| -> attend_models::Result<()> {
            trainer.evaluate()?;
            if winograd {
                let ev = evaluate_winograd(&trainer.model, 400)?;
                notes["untrained"] = serde_json::to_value(&ev).unwrap_or_default();
            }
            Ok(())
        })
        .map_err(|e| model_err(py, e))?;
    }
    let mut interrupted: Option<PyErr> = None;
    let mut callback_err: Option<PyErr> = None;
    let run = {
        let (output, notes) = (&output, &notes);
        let mut on = |e: Event| -> bool {
            Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    interrupted = Some(e);
                    return false;
                }
                let Some(cb) = &progress else { return true };
                let args = match e {
                    Event::Step(r, _) => (r.step, total, r.loss, None),
                    Event::Eval(p, _) => (p.step, total, f32::NAN, Some((p.loss, p.accuracy))),
                };
                match cb.call1(py, args) {
                    Ok(_) => true,
                    Err(err) => {
                        callback_err = Some(err);
                        false
                    }
                }
            })
        };
        let every = session::snapshot_interval(snapshots, total.saturating_sub(trainer.state.step));
        py.detach(|| session::run(&mut trainer, eval_every, every, output, notes, &mut on))
    }
    .map_err(|e| model_err(py, e))?;
    if let Some(e) = interrupted.or(callback_err) {
        // the checkpoint of the step it stopped at is saved: resume=output goes on
        return Err(e);
    }
    let held_out = if winograd {
        let ev = py
            .detach(|| evaluate_winograd(&trainer.model, 400))
            .map_err(|e| model_err(py, e))?;
        notes["held_out"] = serde_json::to_value(&ev).unwrap_or_default();
        Some(ev)
    } else {
        None
    };
    notes["made_with"] = serde_json::json!(format!(
        "attend.train({:?}, seed={}, steps={total})",
        if winograd { "winograd" } else { "text" },
        trainer.state.config.seed
    ));
    py.detach(|| trainer.checkpoint(notes.clone()).save(&output))
        .map_err(|e| model_err(py, e))?;
    // the probe's attention as it formed: the training page, and the weights
    let page = if run.snapshots.is_empty() {
        None
    } else {
        let decisive = held_out.as_ref().map(|ev| ev.head);
        Some(
            py.detach(|| attend_viz::training::run_page(&trainer, &run.snapshots, decisive))
                .map_err(|e| raise(py, "InvalidArgument", e.to_string()))?,
        )
    };
    let snapshot_steps: Vec<usize> = run.snapshots.iter().map(|s| s.step).collect();
    let snapshot_weights: Vec<f32> = run
        .snapshots
        .iter()
        .flat_map(|s| s.trace.to_dense())
        .collect();
    let probe: Vec<String> = run
        .snapshots
        .first()
        .map(|s| s.trace.tokens.iter().map(|t| t.text.clone()).collect())
        .unwrap_or_default();
    let d = PyDict::new(py);
    d.set_item(
        "losses",
        PyArray1::from_vec(py, trainer.state.losses.clone()),
    )?;
    let evals: Vec<(usize, f32, Option<f32>)> = trainer
        .state
        .evals
        .iter()
        .map(|p| (p.step, p.loss, p.accuracy))
        .collect();
    d.set_item("evals", evals)?;
    d.set_item(
        "final",
        (
            run.final_point.step,
            run.final_point.loss,
            run.final_point.accuracy,
        ),
    )?;
    d.set_item(
        "held_out",
        held_out
            .map(|ev| serde_json::to_string(&ev).unwrap_or_default())
            .unwrap_or_default(),
    )?;
    d.set_item("output", output)?;
    d.set_item("seconds", run.secs)?;
    d.set_item("tokens", run.tokens)?;
    d.set_item("heads", trainer.model.config.heads)?;
    d.set_item("layers", trainer.model.config.layers)?;
    d.set_item("page", page)?;
    d.set_item("snapshot_steps", snapshot_steps)?;
    d.set_item("snapshots", PyArray1::from_vec(py, snapshot_weights))?;
    d.set_item("probe", probe)?;
    Ok(d)
}
