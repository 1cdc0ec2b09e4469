//! Running a suite: every item under every condition, through the pipeline (`generate`) or
//! by option likelihoods (`likelihood`), one record per (item, condition) in `records.jsonl`.
//!
//! Generate mode is a batch run: the (item, condition) pairs become batch items whose input is
//! their [`run_key`], served by a [`ConditionOpener`], and [`vidlm_pipeline::batch::run_batch`]
//! writes the records (whole lines, `--resume`, failures recorded) as `vidlm batch` does.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};
use vidlm_pipeline::batch::{run_batch, BatchProgress, BatchSummary, ManifestItem, OutputLog};
use vidlm_pipeline::{JobSpec, Pipeline, SampleRequest, Task};

use crate::conditions::{run_key, Condition, ConditionOpener, Route};
use crate::suite::{EvalItem, Truth, LETTERS};
use crate::{EvalError, Result};

/// How answers are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The model writes an answer; it is scored as the benchmark scores text.
    Generate,
    /// Each option's log-probability after the prompt ([`Target`]); the most likely is the
    /// answer (multiple-choice items only).
    Likelihood,
}

impl std::str::FromStr for Mode {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "generate" => Ok(Self::Generate),
            "likelihood" => Ok(Self::Likelihood),
            other => Err(EvalError::Config(format!(
                "unknown mode `{other}` (generate or likelihood)"
            ))),
        }
    }
}

/// The (item, condition) pairs still to run, as their keys, in suite order.
pub fn pending(
    items: &[EvalItem],
    conditions: &[Condition],
    done: &HashSet<String>,
) -> Vec<(usize, Condition)> {
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        for &c in conditions {
            if !done.contains(&run_key(&it.id, c)) {
                out.push((i, c));
            }
        }
    }
    out
}

/// The opener serving `todo`'s keys.
pub fn opener(items: &[EvalItem], todo: &[(usize, Condition)], seed: u64) -> ConditionOpener {
    let routes: HashMap<String, Route> = todo
        .iter()
        .map(|&(i, c)| {
            (
                run_key(&items[i].id, c),
                Route {
                    video: items[i].video.clone(),
                    item: items[i].id.clone(),
                    condition: c,
                    window: items[i].window,
                },
            )
        })
        .collect();
    ConditionOpener::new(routes, seed)
}

/// Runs `todo` through `pipeline` (built with [`opener`]'s opener for the same `todo`),
/// appending a batch record per pair to `log` (its `id` is the [`run_key`]).
///
/// # Errors
/// [`EvalError::Pipeline`] when the records cannot be written.
pub fn run_generate(
    pipeline: &Pipeline,
    items: &[EvalItem],
    todo: &[(usize, Condition)],
    log: &mut OutputLog,
    on_progress: impl FnMut(&BatchProgress),
) -> Result<BatchSummary> {
    let batch: Vec<ManifestItem> = todo
        .iter()
        .map(|&(i, c)| {
            let it = &items[i];
            let key = run_key(&it.id, c);
            ManifestItem {
                id: key.clone(),
                job: JobSpec {
                    id: key.clone(),
                    input: key,
                    task: Task::Ask {
                        question: it.prompt.clone(),
                    },
                    from: it.window.map(|w| w.0),
                    to: it.window.map(|w| w.1),
                },
            }
        })
        .collect();
    Ok(run_batch(
        pipeline,
        &batch,
        &HashSet::new(),
        log,
        on_progress,
    )?)
}

/// Turns `text` into token ids without special tokens: how [`run_likelihood`] reads the option
/// letters (the model's own tokenizer).
pub trait Tokenize {
    /// The ids of `text`.
    ///
    /// # Errors
    /// A message when the tokenizer fails.
    fn ids(&self, text: &str) -> std::result::Result<Vec<u32>, String>;
}

/// A model's `tokenizer.json` as [`Tokenize`].
pub struct HfTokenizer(tokenizers::Tokenizer);

impl HfTokenizer {
    /// Loads `tokenizer.json` of the model `spec` (a directory or a cached hub id).
    ///
    /// # Errors
    /// [`EvalError::Model`] when the checkpoint or its tokenizer cannot be read.
    pub fn for_model(spec: &str) -> Result<Self> {
        let ckpt = vidlm_models::Checkpoint::open(spec)?;
        let path = ckpt.path("tokenizer.json");
        tokenizers::Tokenizer::from_file(&path)
            .map(Self)
            .map_err(|e| {
                EvalError::Model(vidlm_models::ModelError::File {
                    path,
                    reason: e.to_string(),
                })
            })
    }
}

impl Tokenize for HfTokenizer {
    fn ids(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        self.0
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// The sampling request a pipeline configured with `sampling` makes for a whole video.
pub fn sample_request(sampling: &vidlm_pipeline::SamplingConfig) -> SampleRequest {
    SampleRequest {
        strategy: sampling.strategy.clone(),
        from: 0.0,
        to: None,
        max_frames: sampling.max_frames,
        size: sampling
            .size
            .as_deref()
            .and_then(|s| vidlm_media::parse_size(s).ok()),
    }
}

/// `log_softmax(logits)[ids]` for one position's logits, in f64 (the sum over the vocabulary is
/// done with the maximum subtracted, so large logits do not overflow).
///
/// ```
/// let lp = vidlm_eval::run::log_probs(&[0.0, 0.0], &[1]);
/// assert!((lp[0] - 0.5f64.ln()).abs() < 1e-12);
/// ```
pub fn log_probs(logits: &[f32], ids: &[u32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    ids.iter()
        .map(|&i| logits[i as usize] as f64 - lse)
        .collect()
}

/// The frames of a key as the model takes them.
fn video_frames(frames: Vec<vidlm_pipeline::SampledFrame>) -> Vec<vidlm_models::VideoFrame> {
    frames
        .into_iter()
        .map(|f| vidlm_models::VideoFrame {
            rgb: f.rgb,
            width: f.width,
            height: f.height,
            pts: f.pts,
        })
        .collect()
}

/// What likelihood mode scores each option by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The option's text as the answer: the sum of its tokens' log-probabilities after the
    /// prompt (one forward pass over prompt + option per option).
    Option,
    /// The option's letter as the first answer token (one forward pass for all options).
    Letter,
}

impl std::str::FromStr for Target {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "option" => Ok(Self::Option),
            "letter" => Ok(Self::Letter),
            other => Err(EvalError::Config(format!(
                "unknown likelihood target `{other}` (option or letter)"
            ))),
        }
    }
}

fn logit_row(logits: &candle_core::Tensor, i: usize) -> Result<Vec<f32>> {
    logits
        .get(i)
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1())
        .map_err(|e| EvalError::Model(e.into()))
}

/// Scores one multiple-choice item under its condition by likelihood: the clip through
/// `model.encode_clip_frames` once, then for [`Target::Letter`] one forward pass over the prompt
/// (`prompt_logits`) and each letter's log-probability at its last position, for
/// [`Target::Option`] one pass over the prompt and each option's tokens (`continuation_logits`)
/// and the sum of their log-probabilities. Returns one log-probability per option.
///
/// # Errors
/// [`EvalError::Config`] for an item that is not multiple choice, a letter that is not one token
/// or an option without tokens; model and input errors as they come.
pub fn likelihood_scores(
    model: &mut dyn vidlm_models::VisionLanguageModel,
    tokenizer: &dyn Tokenize,
    opener: &ConditionOpener,
    key: &str,
    item: &EvalItem,
    request: &SampleRequest,
    target: Target,
) -> Result<Vec<f64>> {
    let Truth::Choice { options, .. } = &item.truth else {
        return Err(EvalError::Config(format!(
            "{}: likelihood mode scores multiple-choice items only",
            item.id
        )));
    };
    let conts: Vec<Vec<u32>> = match target {
        Target::Letter => LETTERS[..options.len()]
            .iter()
            .map(|&l| (l as char).to_string())
            .collect(),
        Target::Option => options.clone(),
    }
    .iter()
    .map(|t| {
        let ids = tokenizer.ids(t).map_err(EvalError::Config)?;
        let ok = match target {
            Target::Letter => ids.len() == 1,
            Target::Option => !ids.is_empty(),
        };
        if ok {
            Ok(ids)
        } else {
            Err(EvalError::Config(format!(
                "{}: `{t}` is {} tokens ({})",
                item.id,
                ids.len(),
                match target {
                    Target::Letter => "a letter must be one",
                    Target::Option => "an option needs some",
                }
            )))
        }
    })
    .collect::<Result<_>>()?;
    let (info, frames, _) = opener.frames(key, request)?;
    let frames = video_frames(frames);
    let groups = model.encode_clip_frames(&frames, frames.len())?;
    let clip = vidlm_models::Clip::new(groups).with_video(info.duration, info.fps);
    match target {
        Target::Letter => {
            let scored = model.prompt_logits(&clip, &item.prompt)?;
            let row = logit_row(&scored.logits, scored.ids.len() - 1)?;
            let ids: Vec<u32> = conts.iter().map(|c| c[0]).collect();
            Ok(log_probs(&row, &ids))
        }
        Target::Option => conts
            .iter()
            .map(|cont| {
                let scored = model.continuation_logits(&clip, &item.prompt, cont)?;
                let first = scored.ids.len() - cont.len() - 1;
                let mut sum = 0.0;
                for (k, &id) in cont.iter().enumerate() {
                    sum += log_probs(&logit_row(&scored.logits, first + k)?, &[id])[0];
                }
                Ok(sum)
            })
            .collect(),
    }
}

/// Runs `todo` in likelihood mode, appending one record per pair to `log`:
/// `{"id", "status": "ok", "answer": letter, "logprobs": [...]}` or an error record. Stops early
/// (returning what it did) when `stop` says so.
///
/// # Errors
/// [`EvalError::Pipeline`] when the records cannot be written.
#[allow(clippy::too_many_arguments)]
pub fn run_likelihood(
    model: &mut dyn vidlm_models::VisionLanguageModel,
    tokenizer: &dyn Tokenize,
    items: &[EvalItem],
    todo: &[(usize, Condition)],
    request: &SampleRequest,
    target: Target,
    seed: u64,
    log: &mut OutputLog,
    mut on_done: impl FnMut(&str, bool),
    stop: &dyn Fn() -> bool,
) -> Result<BatchSummary> {
    let opener = opener(items, todo, seed);
    let mut summary = BatchSummary::default();
    for (n, &(i, c)) in todo.iter().enumerate() {
        if stop() {
            summary.cancelled = todo.len() - n;
            break;
        }
        let item = &items[i];
        let key = run_key(&item.id, c);
        let mut req = request.clone();
        if let Some((from, to)) = item.window {
            req.from = from;
            req.to = Some(to);
        }
        let record = match likelihood_scores(model, tokenizer, &opener, &key, item, &req, target) {
            Ok(lp) => {
                let best = lp
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                summary.ok += 1;
                json!({
                    "id": key, "status": "ok", "input": item.video,
                    "answer": (LETTERS[best] as char).to_string(), "logprobs": lp,
                })
            }
            Err(e) => {
                summary.failed += 1;
                json!({"id": key, "status": "error", "input": item.video, "error": e.to_string()})
            }
        };
        log.append(&record)?;
        on_done(&key, record["status"] == "ok");
    }
    Ok(summary)
}

/// Reads the final records of a run (`ok` and `error`, by id; the last one of an id wins).
///
/// # Errors
/// [`EvalError::Io`] when unreadable.
pub fn read_records(path: &Path) -> Result<HashMap<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if matches!(v["status"].as_str(), Some("ok" | "error")) {
            if let Some(id) = v["id"].as_str() {
                out.insert(id.to_string(), v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probs_hand_computed() {
        // logits [1, 2, 3]: lse = 3 + ln(e^-2 + e^-1 + 1) = 3.40760596.
        let lp = log_probs(&[1.0, 2.0, 3.0], &[0, 2]);
        assert!((lp[0] - (1.0 - 3.407_605_964_4)).abs() < 1e-9);
        assert!((lp[1] - (3.0 - 3.407_605_964_4)).abs() < 1e-9);
        // Large logits do not overflow.
        let lp = log_probs(&[1000.0, 1000.0], &[0]);
        assert!((lp[0] - 0.5f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn pending_skips_done_keys() {
        let (_, items) = crate::suite::parse_suite(
            "{\"id\":\"a\",\"video\":\"x\",\"question\":\"q\",\"answer\":\"1\"}\n{\"id\":\"b\",\"video\":\"y\",\"question\":\"q\",\"answer\":\"1\"}\n",
            "s",
            Path::new("."),
        )
        .unwrap();
        let done = HashSet::from(["a#video".to_string()]);
        let todo = pending(&items, &[Condition::Video, Condition::Blind], &done);
        assert_eq!(
            todo,
            [
                (0, Condition::Blind),
                (1, Condition::Video),
                (1, Condition::Blind)
            ]
        );
    }
}
