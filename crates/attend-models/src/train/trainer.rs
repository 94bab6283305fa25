//! Training: batches from the task, one AdamW step at a time, evaluation, and checkpoints.
//!
//! A checkpoint is a folder (`crate::models::toy::file` reads the model, for inference):
//! `config.json` (the model's shape and tokenizer, and the training state under `training`:
//! settings, step, loss history), `model.safetensors` (every parameter, float32, named as
//! [`ToyModel::specs`]) and, to resume, `optimizer.safetensors` (AdamW's moments). Files are
//! written to temporary names and renamed into place, so an interrupted save never leaves a
//! half-written file.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::backward::{backward, Scratch, StepTimes};
use super::config::{EvalPoint, TaskSpec, TrainConfig, TrainState};
use super::layers::{cross_entropy, IGNORE};
use super::optim::AdamW;
use super::winograd;
use crate::error::io;
use crate::formats::checkpoint::{check_recorded, f32_tensors, read_f32, write_atomic};
use crate::models::toy::file::{ToyFile, ARCHITECTURE};
use crate::models::toy::{Activations, ToyConfig, ToyModel};
use crate::rng::Rng;
use crate::tokenize::vocab::Vocab;
use crate::{Error, Result};

/// A model with, when it was saved by training, the state to resume from.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model.
    pub model: ToyModel,
    /// The training state (absent for a model saved without it).
    pub training: Option<TrainState>,
    /// AdamW's moments (present when `training` is).
    pub adam: Option<AdamW>,
    /// Anything else `config.json` carries (final evaluation, how it was made).
    pub notes: serde_json::Value,
}

impl Checkpoint {
    /// Whether `dir` holds a toy model's `config.json`.
    pub fn is_toy_dir(dir: &Path) -> bool {
        ToyFile::is_toy_dir(dir)
    }

    /// Reads a checkpoint folder, with its training state and optimiser when present.
    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let cfg_path = dir.join("config.json");
        let config = crate::formats::read_regular(&cfg_path)?;
        let st_path = dir.join("model.safetensors");
        let weights = crate::formats::read_regular(&st_path)?;
        let opt_path = dir.join("optimizer.safetensors");
        let optim = if opt_path.exists() {
            Some(crate::formats::read_regular(&opt_path)?)
        } else {
            None
        };
        Self::from_bytes(&config, &weights, optim.as_deref(), dir)
    }

    /// A checkpoint from the bytes of its files (`dir` names them in errors).
    pub fn from_bytes(
        config: &[u8],
        weights: &[u8],
        optim: Option<&[u8]>,
        dir: &Path,
    ) -> Result<Checkpoint> {
        let file = ToyFile::from_bytes(config, weights, dir)?;
        let cfg_path = dir.join("config.json");
        let training: Option<TrainState> = file
            .training
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Format {
                path: cfg_path.clone(),
                what: format!("not a toy model's configuration: training: {e}"),
            })?;
        let model = file.model;
        if let Some(st) = &training {
            // every number of the run, before anything is allocated from it
            st.validate(&model.config).map_err(|what| Error::Format {
                path: cfg_path.clone(),
                what: format!("training: {what}"),
            })?;
        }
        let adam = match (optim, &training) {
            (Some(bytes), Some(_)) => {
                let p = dir.join("optimizer.safetensors");
                check_recorded(&file.files, "optimizer.safetensors", bytes, dir)?;
                let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format {
                    path: p.clone(),
                    what: format!("not a valid safetensors file: {e}"),
                })?;
                let n = model.params.len();
                let mut a = AdamW::new(n);
                a.m = read_f32(&st, "m", &[n], &p)?;
                a.v = read_f32(&st, "v", &[n], &p)?;
                a.t = training.as_ref().map_or(0, |t| t.step as u64);
                Some(a)
            }
            _ => None,
        };
        Ok(Checkpoint {
            model,
            training,
            adam,
            notes: file.notes,
        })
    }

    /// Writes the folder (created if needed): `config.json`, `model.safetensors` and, with a
    /// training state, `optimizer.safetensors`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let m = &self.model;
        let weights = ToyFile::weights_bytes(m)?;
        let mut opt_bytes = Vec::new();
        if let (Some(a), Some(_)) = (&self.adam, &self.training) {
            let n = a.m.len();
            opt_bytes = f32_tensors([
                ("m".to_string(), vec![n], &a.m[..]),
                ("v".to_string(), vec![n], &a.v[..]),
            ])?;
            write_atomic(&dir.join("optimizer.safetensors"), &opt_bytes)?;
        }
        write_atomic(&dir.join("model.safetensors"), &weights)?;
        // config.json is written last and records the hashes of the others: a save cut short
        // between the renames leaves a set that `load` refuses instead of a mixed-step one
        let mut files = std::collections::BTreeMap::new();
        files.insert("model.safetensors".to_string(), fnv_hex(&weights));
        if let (Some(_), Some(_)) = (&self.adam, &self.training) {
            files.insert("optimizer.safetensors".to_string(), fnv_hex(&opt_bytes));
        }
        // `ConfigFile`'s fields in its order, the training state written as its own type (so
        // its f32s keep their shortest form)
        #[derive(Serialize)]
        struct Out<'a> {
            architecture: &'a str,
            model: &'a ToyConfig,
            #[serde(skip_serializing_if = "Option::is_none")]
            training: Option<&'a TrainState>,
            files: &'a std::collections::BTreeMap<String, String>,
            #[serde(skip_serializing_if = "serde_json::Value::is_null")]
            notes: &'a serde_json::Value,
        }
        let file = Out {
            architecture: ARCHITECTURE,
            model: &m.config,
            training: self.training.as_ref(),
            files: &files,
            notes: &self.notes,
        };
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        write_atomic(&dir.join("config.json"), &json)
    }
}

/// One batch: `b` rows of `t` inputs and their targets ([`IGNORE`] on padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Inputs, `[b × t]`.
    pub tokens: Vec<u32>,
    /// Next tokens, `[b × t]`.
    pub targets: Vec<u32>,
    /// Rows.
    pub b: usize,
    /// Positions per row.
    pub t: usize,
}

impl Batch {
    /// Texts (token ids, each at least 2 long) as rows padded to the longest with `pad`.
    fn from_rows(rows: &[Vec<u32>], pad: u32) -> Batch {
        let t = rows.iter().map(|r| r.len() - 1).max().unwrap_or(1);
        let mut tokens = Vec::with_capacity(rows.len() * t);
        let mut targets = Vec::with_capacity(rows.len() * t);
        for r in rows {
            let n = r.len() - 1;
            tokens.extend_from_slice(&r[..n]);
            tokens.extend(std::iter::repeat_n(pad, t - n));
            targets.extend_from_slice(&r[1..]);
            targets.extend(std::iter::repeat_n(IGNORE, t - n));
        }
        Batch {
            tokens,
            targets,
            b: rows.len(),
            t,
        }
    }
}

enum Data {
    Winograd { ids: HashMap<String, u32> },
    Text { train: Vec<u8>, held: Vec<u8> },
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Steps done after it.
    pub step: usize,
    /// Its training loss.
    pub loss: f32,
    /// Its learning rate.
    pub lr: f32,
    /// The gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens in its batch (padding excluded).
    pub tokens: usize,
}

/// Held-out results on the Winograd task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WinogradEval {
    /// Held-out examples.
    pub examples: usize,
    /// Share whose most likely next token (over the whole vocabulary) is the referent.
    pub accuracy: f32,
    /// Share that give the referent a higher logit than the other noun (chance: 0.5).
    pub two_way: f32,
    /// Mean cross-entropy of the referent.
    pub loss: f32,
    /// Per text, the most decisive head (the first row of `attend explain --compare`: the
    /// largest |weight on one noun − weight on the other| at the answer position): its weight
    /// on the referent, averaged over the held-out texts.
    pub decisive_correct: f32,
    /// The same head's weight on the other noun, averaged.
    pub decisive_other: f32,
    /// Share of held-out texts whose most decisive head favours the referent.
    pub decisive_agrees: f32,
    /// The best single head for every text: the (layer, head) whose answer position gives the
    /// referent the most weight over the other noun on average, chosen on training texts.
    pub head: (usize, usize),
    /// Its mean weight on the referent, held-out.
    pub head_correct: f32,
    /// Its mean weight on the other noun, held-out.
    pub head_other: f32,
    /// `[layer × head]`: held-out accuracy with that head ablated (its output zeroed before
    /// the output projection): does the weight [`WinogradEval::head`] pays matter?
    #[serde(default)]
    pub ablated_accuracy: Vec<f32>,
    /// The same, the referent over the other noun.
    #[serde(default)]
    pub ablated_two_way: Vec<f32>,
}

/// Per example: the answer position's logits, and the weights each layer × head gives the
/// referent and the other noun from there.
struct AnswerRow {
    logits: Vec<f32>,
    answer: u32,
    other: u32,
    /// `[layer × head]` (referent, other).
    weights: Vec<(f32, f32)>,
}

/// (`attention`: also the weights; without, `weights` stays empty and no probabilities are
/// computed.)
fn answer_rows(
    model: &ToyModel,
    examples: &[winograd::Example],
    attention: bool,
) -> Result<Vec<AnswerRow>> {
    answer_rows_ablating(model, examples, attention, None)
}

/// [`answer_rows`] with a head ablated ([`ToyModel::forward_ablating`]; no weights).
fn answer_rows_ablating(
    model: &ToyModel,
    examples: &[winograd::Example],
    attention: bool,
    ablate: Option<(usize, usize)>,
) -> Result<Vec<AnswerRow>> {
    let vocab = &model.config.vocab;
    let (layers, heads) = (model.config.layers, model.config.heads);
    let v = vocab.len();
    let id = |w: &str| {
        vocab
            .word_id(w)
            .ok_or_else(|| Error::Invalid(format!("`{w}` is not in the model's vocabulary")))
    };
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(64) {
        let mut rows = Vec::new();
        for e in chunk {
            let ids: Vec<u32> = vocab.encode(&e.prompt)?.iter().map(|t| t.id).collect();
            rows.push(ids);
        }
        let t = rows.iter().map(Vec::len).max().unwrap_or(1);
        let b = rows.len();
        let pad = vocab.eos().unwrap_or(0);
        let mut flat = Vec::with_capacity(b * t);
        for r in &rows {
            flat.extend_from_slice(r);
            flat.extend(std::iter::repeat_n(pad, t - r.len()));
        }
        let (att, logits) = if let Some(head) = ablate {
            (
                Vec::new(),
                model.forward_ablating(&flat, b, t, head)?.logits,
            )
        } else if attention {
            model.attention_of(&flat, b, t)?
        } else {
            (Vec::new(), model.forward(&flat, b, t)?.logits)
        };
        for (i, (e, r)) in chunk.iter().zip(&rows).enumerate() {
            let q = r.len() - 1;
            let (ans, oth) = (id(e.answer)?, id(e.other)?);
            let pa = r.iter().position(|&x| x == ans);
            let po = r.iter().position(|&x| x == oth);
            let (Some(pa), Some(po)) = (pa, po) else {
                return Err(Error::Invalid(format!("nouns not found in {:?}", e.prompt)));
            };
            let mut weights = Vec::with_capacity(layers * heads);
            for l in (0..layers).filter(|_| attention && ablate.is_none()) {
                for h in 0..heads {
                    let row = &att[(((l * b + i) * heads + h) * t + q) * t..][..t];
                    weights.push((row[pa], row[po]));
                }
            }
            out.push(AnswerRow {
                logits: logits[(i * t + q) * v..][..v].to_vec(),
                answer: ans,
                other: oth,
                weights,
            });
        }
    }
    Ok(out)
}

/// Held-out accuracy and the most decisive head of a Winograd model (on
/// [`winograd::held_out_set`]`(n)`, the head chosen on [`winograd::train_set`]`(256)`).
pub fn evaluate_winograd(model: &ToyModel, n: usize) -> Result<WinogradEval> {
    let (layers, heads) = (model.config.layers, model.config.heads);
    let train = answer_rows(model, &winograd::train_set(256), true)?;
    let mut margin = vec![0.0f64; layers * heads];
    for r in &train {
        for (m, (a, o)) in margin.iter_mut().zip(&r.weights) {
            *m += (a - o) as f64;
        }
    }
    let best = (0..margin.len())
        .max_by(|&a, &b| margin[a].total_cmp(&margin[b]))
        .unwrap_or(0);
    let held = answer_rows(model, &winograd::held_out_set(n), true)?;
    let v = model.config.vocab.len();
    let (mut right, mut two, mut loss, mut wc, mut wo) = (0usize, 0usize, 0.0f64, 0.0, 0.0);
    let (mut dc, mut dother, mut agree) = (0.0f64, 0.0f64, 0usize);
    for r in &held {
        let top = r
            .weights
            .iter()
            .max_by(|x, y| (x.0 - x.1).abs().total_cmp(&(y.0 - y.1).abs()))
            .copied()
            .unwrap_or((0.0, 0.0));
        dc += top.0 as f64;
        dother += top.1 as f64;
        agree += (top.0 > top.1) as usize;
        let top = (0..v)
            .max_by(|&a, &b| r.logits[a].total_cmp(&r.logits[b]))
            .unwrap_or(0);
        right += (top as u32 == r.answer) as usize;
        two += (r.logits[r.answer as usize] > r.logits[r.other as usize]) as usize;
        loss += cross_entropy(&r.logits, &[r.answer], v, None).0 as f64;
        wc += r.weights[best].0 as f64;
        wo += r.weights[best].1 as f64;
    }
    let k = held.len().max(1) as f64;
    // each head ablated in turn: the same held-out texts' accuracy without it
    let (mut ablated_accuracy, mut ablated_two_way) = (Vec::new(), Vec::new());
    let examples = winograd::held_out_set(n);
    for l in 0..layers {
        for h in 0..heads {
            let rows = answer_rows_ablating(model, &examples, false, Some((l, h)))?;
            let (a, t) = scores(&rows, v);
            ablated_accuracy.push(a);
            ablated_two_way.push(t);
        }
    }
    Ok(WinogradEval {
        examples: held.len(),
        accuracy: (right as f64 / k) as f32,
        two_way: (two as f64 / k) as f32,
        loss: (loss / k) as f32,
        decisive_correct: (dc / k) as f32,
        decisive_other: (dother / k) as f32,
        decisive_agrees: (agree as f64 / k) as f32,
        head: (best / heads, best % heads),
        head_correct: (wc / k) as f32,
        head_other: (wo / k) as f32,
        ablated_accuracy,
        ablated_two_way,
    })
}

/// Accuracy (the referent the likeliest token) and two-way accuracy (the referent over the
/// other noun) of answer rows.
fn scores(rows: &[AnswerRow], v: usize) -> (f32, f32) {
    let (mut right, mut two) = (0usize, 0usize);
    for r in rows {
        let top = (0..v)
            .max_by(|&a, &b| r.logits[a].total_cmp(&r.logits[b]))
            .unwrap_or(0);
        right += (top as u32 == r.answer) as usize;
        two += (r.logits[r.answer as usize] > r.logits[r.other as usize]) as usize;
    }
    let k = rows.len().max(1) as f32;
    (right as f32 / k, two as f32 / k)
}

/// Held-out referent accuracy alone (no attention probabilities), on
/// [`winograd::held_out_set`]`(n)`: what training reports as it goes.
pub fn winograd_accuracy(model: &ToyModel, n: usize) -> Result<f32> {
    let rows = answer_rows(model, &winograd::held_out_set(n), false)?;
    let v = model.config.vocab.len();
    let right = rows
        .iter()
        .filter(|r| {
            let top = (0..v).max_by(|&a, &b| r.logits[a].total_cmp(&r.logits[b]));
            top == Some(r.answer as usize)
        })
        .count();
    Ok(right as f32 / rows.len().max(1) as f32)
}

pub use crate::formats::checkpoint::fnv_hex;

/// A training run in progress.
pub struct Trainer {
    /// The model being trained.
    pub model: ToyModel,
    /// The optimiser's moments.
    pub adam: AdamW,
    /// Settings, step and history.
    pub state: TrainState,
    /// Time spent so far in each part of the steps.
    pub times: StepTimes,
    data: Data,
    grads: Vec<f32>,
    acts: Activations,
    scratch: Scratch,
}

impl Trainer {
    fn build(
        model: ToyModel,
        state: TrainState,
        adam: AdamW,
        text: Option<Vec<u8>>,
    ) -> Result<Trainer> {
        let data = match (&state.config.task, text) {
            (TaskSpec::Winograd, _) => {
                let Vocab::Words { words } = &model.config.vocab else {
                    return Err(Error::Invalid(
                        "a Winograd model needs a word vocabulary".into(),
                    ));
                };
                let ids = words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (w.clone(), i as u32))
                    .collect();
                Data::Winograd { ids }
            }
            (TaskSpec::Text { bytes, hash, .. }, Some(text)) => {
                // every byte is a token (and a target): a word list would leave ids unscored
                if model.config.vocab != Vocab::Bytes {
                    return Err(Error::Invalid(
                        "a text model needs the byte vocabulary".into(),
                    ));
                }
                if text.len() != *bytes || fnv_hex(&text) != *hash {
                    return Err(Error::Invalid(
                        "the text differs from the one this run was trained on".into(),
                    ));
                }
                let cut = text.len() - text.len() / 10;
                let ctx = model.config.ctx;
                if cut < ctx + 1 {
                    return Err(Error::Invalid(format!(
                        "the text has {} bytes; training with a context of {ctx} needs at least {}",
                        text.len(),
                        (ctx + 1) * 10 / 9 + 1
                    )));
                }
                Data::Text {
                    train: text[..cut].to_vec(),
                    held: text[cut..].to_vec(),
                }
            }
            (TaskSpec::Text { .. }, None) => {
                return Err(Error::Invalid("a text run needs its text".into()))
            }
        };
        let n = model.params.len();
        Ok(Trainer {
            model,
            adam,
            state,
            times: StepTimes::default(),
            data,
            grads: vec![0.0; n],
            acts: Activations::default(),
            scratch: Scratch::default(),
        })
    }

    /// A new run: the model initialised from `config.seed`; `text` for a text task.
    pub fn new(model: ToyConfig, config: TrainConfig, text: Option<Vec<u8>>) -> Result<Trainer> {
        model.validate()?;
        config.validate(&model).map_err(Error::Invalid)?;
        let model = ToyModel::new(model, config.seed)?;
        let adam = AdamW::new(model.params.len());
        let state = TrainState {
            config,
            step: 0,
            losses: Vec::new(),
            evals: Vec::new(),
            tokens_per_step: 0.0,
        };
        Self::build(model, state, adam, text)
    }

    /// Continues a saved run (its settings, step, moments and history), to `steps` in all
    /// when given (the schedule is stretched to the new length).
    pub fn resume(ck: Checkpoint, steps: Option<usize>, text: Option<Vec<u8>>) -> Result<Trainer> {
        let (Some(mut state), Some(adam)) = (ck.training, ck.adam) else {
            return Err(Error::Invalid(
                "this checkpoint has no training state (optimizer.safetensors) to resume from"
                    .into(),
            ));
        };
        if let Some(s) = steps {
            if s < state.step {
                return Err(Error::Invalid(format!(
                    "--steps {s} is fewer than the {} steps this run has done",
                    state.step
                )));
            }
            state.config.optim.steps = s;
            // a stretched schedule keeps its warm-up within it
            state.config.optim.warmup = state.config.optim.warmup.min(s);
        }
        // the same checks as a new run: a checkpoint cannot ask for more than a flag could
        state.validate(&ck.model.config).map_err(Error::Invalid)?;
        Self::build(ck.model, state, adam, text)
    }

    /// Whether every step of the schedule is done.
    pub fn done(&self) -> bool {
        self.state.step >= self.state.config.optim.steps
    }

    /// The batch of step `step` (a function of the seed and the step only).
    pub fn batch(&self, step: usize) -> Result<Batch> {
        let cfg = &self.state.config;
        let mut rng = Rng::for_step(cfg.seed, step as u64);
        match &self.data {
            Data::Winograd { ids } => {
                let eos = ids.get(crate::tokenize::vocab::EOS).copied().unwrap_or(0);
                let mut rows = Vec::with_capacity(cfg.batch);
                for _ in 0..cfg.batch {
                    let e = winograd::sample(&mut rng, winograd::Split::Train);
                    let text = e.text();
                    let mut r = Vec::new();
                    for (s, t) in crate::tokenize::vocab::split_words(&text) {
                        let w = &text[s..t];
                        r.push(*ids.get(w).ok_or_else(|| {
                            Error::Invalid(format!("`{w}` missing from the vocabulary"))
                        })?);
                    }
                    r.push(eos);
                    rows.push(r);
                }
                Ok(Batch::from_rows(&rows, eos))
            }
            Data::Text { train, .. } => {
                let t = self.model.config.ctx;
                let rows: Vec<Vec<u32>> = (0..cfg.batch)
                    .map(|_| {
                        let s = rng.below(train.len() - t);
                        train[s..s + t + 1].iter().map(|&b| b as u32).collect()
                    })
                    .collect();
                Ok(Batch::from_rows(&rows, 0))
            }
        }
    }

    /// One step: forward, backward, clip, AdamW.
    pub fn step(&mut self) -> Result<StepReport> {
        let step = self.state.step;
        let batch = self.batch(step)?;
        let t0 = Instant::now();
        self.model
            .forward_into(&batch.tokens, batch.b, batch.t, &mut self.acts)?;
        self.times.forward += t0.elapsed().as_secs_f64();
        self.grads.fill(0.0);
        let loss = backward(
            &self.model,
            &self.acts,
            &mut self.scratch,
            &batch.targets,
            &mut self.grads,
            &mut self.times,
        )?;
        let t1 = Instant::now();
        let cfg = &self.state.config.optim;
        let lr = cfg.lr_at(step);
        let specs = self.model.specs().to_vec();
        let grad_norm = self
            .adam
            .step(cfg, lr, &specs, &mut self.model.params, &mut self.grads);
        self.times.optimizer += t1.elapsed().as_secs_f64();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::Invalid(format!(
                "training diverged at step {step} (loss {loss}, gradient norm {grad_norm}); \
                 try a lower learning rate"
            )));
        }
        let tokens = batch.targets.iter().filter(|&&t| t != IGNORE).count();
        let st = &mut self.state;
        st.tokens_per_step =
            (st.tokens_per_step * st.step as f64 + tokens as f64) / (st.step + 1) as f64;
        st.step += 1;
        st.losses.push(loss);
        Ok(StepReport {
            step: st.step,
            loss,
            lr,
            grad_norm,
            tokens,
        })
    }

    /// The first `n` bytes of a text run's held-out tenth (a probe to watch), as text; empty
    /// for the Winograd task.
    pub fn text_head(&self, n: usize) -> String {
        match &self.data {
            Data::Text { held, .. } => {
                String::from_utf8_lossy(&held[..n.min(held.len())]).into_owned()
            }
            Data::Winograd { .. } => String::new(),
        }
    }

    /// Held-out loss: the Winograd held-out texts, or fixed windows of the text's last tenth.
    pub fn held_out_loss(&self) -> Result<f32> {
        let vocab = self.model.config.vocab.len();
        let rows: Vec<Vec<u32>> = match &self.data {
            Data::Winograd { .. } => {
                let v = &self.model.config.vocab;
                let eos = v.eos().unwrap_or(0);
                winograd::held_out_set(256)
                    .iter()
                    .map(|e| {
                        let mut r: Vec<u32> = v.encode(&e.text())?.iter().map(|t| t.id).collect();
                        r.push(eos);
                        Ok(r)
                    })
                    .collect::<Result<_>>()?
            }
            Data::Text { held, .. } => {
                let t = self.model.config.ctx.min(held.len().saturating_sub(1));
                if t == 0 {
                    return Ok(f32::NAN);
                }
                let starts = (held.len() - t).min(32);
                (0..starts)
                    .map(|i| {
                        let s = i * (held.len() - t) / starts;
                        held[s..s + t + 1].iter().map(|&b| b as u32).collect()
                    })
                    .collect()
            }
        };
        let mut total = 0.0f64;
        let mut count = 0usize;
        for chunk in rows.chunks(64) {
            let b = Batch::from_rows(chunk, 0);
            let acts = self.model.forward(&b.tokens, b.b, b.t)?;
            let (l, n) = cross_entropy(&acts.logits, &b.targets, vocab, None);
            total += l as f64 * n as f64;
            count += n;
        }
        Ok((total / count.max(1) as f64) as f32)
    }

    /// Measures the held-out loss (and accuracy, for Winograd) and records it.
    pub fn evaluate(&mut self) -> Result<EvalPoint> {
        let loss = self.held_out_loss()?;
        let accuracy = match self.state.config.task {
            TaskSpec::Winograd => Some(winograd_accuracy(&self.model, 200)?),
            TaskSpec::Text { .. } => None,
        };
        let p = EvalPoint {
            step: self.state.step,
            loss,
            accuracy,
        };
        self.state.evals.push(p.clone());
        Ok(p)
    }

    /// The run as a checkpoint.
    pub fn checkpoint(&self, notes: serde_json::Value) -> Checkpoint {
        Checkpoint {
            model: self.model.clone(),
            training: Some(self.state.clone()),
            adam: Some(self.adam.clone()),
            notes,
        }
    }
}
