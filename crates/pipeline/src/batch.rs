//! Batch jobs: a manifest of items in, one JSON line per item out.
//!
//! The manifest is JSONL (one object a line) or CSV (a header line), with the fields `id`,
//! `input` (a path, URL or `-`), `task` (`summarize` or `ask`; default: `ask` when a question is
//! given, else `summarize`), `question`, and optional `from`/`to` (seconds or `[HH:]MM:SS`).
//! The output is JSONL: one record per item, each line written whole with one `write` call, so
//! an interrupted run leaves only whole lines, and `--resume` skips the ids already there.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::job::{Event, JobOutput, JobSpec, Task};
use crate::segment::Segment;
use crate::{JobOutcome, Pipeline, PipelineError, Result};

/// One manifest item.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestItem {
    /// Unique id; the output record carries it.
    pub id: String,
    /// What to run.
    pub job: JobSpec,
}

impl ManifestItem {
    /// The item as a JSONL manifest record (`id`, `input`, `task`, and `question`, `from`, `to`
    /// where set), so [`parse_manifest`] reads it back as the same item, whichever form the
    /// manifest had: a fleet sends jobs over its queue in this form.
    ///
    /// ```
    /// use vidlm_pipeline::batch::parse_manifest;
    /// let items = parse_manifest("id,input,question,from\nq,a.mp4,who?,0:05\n").unwrap();
    /// let line = items[0].record().to_string();
    /// assert_eq!(parse_manifest(&line).unwrap(), items);
    /// ```
    pub fn record(&self) -> Value {
        let job = &self.job;
        let mut r = json!({"id": self.id, "input": job.input});
        match &job.task {
            Task::Summarize => r["task"] = json!("summarize"),
            Task::Ask { question } => {
                r["task"] = json!("ask");
                r["question"] = json!(question);
            }
        }
        if let Some(f) = job.from {
            r["from"] = json!(f);
        }
        if let Some(t) = job.to {
            r["to"] = json!(t);
        }
        r
    }
}

/// One of `count` disjoint parts of a manifest (`--shard index/count`), for running a batch on
/// several machines (a Kubernetes Indexed Job): item `k` of the manifest belongs to shard
/// `k % count`, so the shards together cover the manifest exactly once, each a near-equal part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// How many shards there are (at least 1).
    pub count: usize,
}

impl Shard {
    /// Parses `index/count`, or `count` alone with the index from `index_env` (Kubernetes sets
    /// `JOB_COMPLETION_INDEX` in each pod of an Indexed Job).
    ///
    /// # Errors
    /// A message when malformed, when `index >= count`, or when the index is needed and
    /// `index_env` is `None` or not a number.
    ///
    /// ```
    /// use vidlm_pipeline::batch::Shard;
    /// assert_eq!(Shard::parse("1/3", None), Ok(Shard { index: 1, count: 3 }));
    /// assert_eq!(Shard::parse("3", Some("2")), Ok(Shard { index: 2, count: 3 }));
    /// assert!(Shard::parse("3/3", None).is_err());
    /// assert!(Shard::parse("3", None).is_err());
    /// ```
    pub fn parse(spec: &str, index_env: Option<&str>) -> std::result::Result<Self, String> {
        let number = |s: &str, what: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("shard `{spec}`: {what} `{s}` is not a number"))
        };
        let (index, count) = match spec.split_once('/') {
            Some((i, n)) => (number(i, "index")?, number(n, "count")?),
            None => {
                let count = number(spec, "count")?;
                let i = index_env.ok_or_else(|| {
                    format!(
                        "shard `{spec}`: no index (give index/count, or set JOB_COMPLETION_INDEX)"
                    )
                })?;
                (number(i, "JOB_COMPLETION_INDEX")?, count)
            }
        };
        if count == 0 || index >= count {
            return Err(format!(
                "shard {index}/{count}: the index must be below the count"
            ));
        }
        Ok(Self { index, count })
    }

    /// The items of `items` that belong to this shard, in manifest order.
    pub fn select(self, items: Vec<ManifestItem>) -> Vec<ManifestItem> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, item)| item)
            .collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    id: Option<Value>,
    input: Option<String>,
    task: Option<String>,
    question: Option<String>,
    from: Option<Value>,
    to: Option<Value>,
}

/// Reads a manifest: JSONL when the first non-blank character is `{`, CSV otherwise.
///
/// # Errors
/// [`PipelineError::File`] naming the file, the line and the problem (a missing id or input, a
/// duplicate id, an unknown task, an ask without a question, a bad time).
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
    parse_manifest(&text).map_err(|reason| PipelineError::File {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses manifest text (see [`read_manifest`]); errors are `line N: reason`.
///
/// # Errors
/// As [`read_manifest`], as a string.
pub fn parse_manifest(text: &str) -> std::result::Result<Vec<ManifestItem>, String> {
    let jsonl = text.trim_start().starts_with('{');
    let mut raws: Vec<(usize, RawItem)> = Vec::new();
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let raw: RawItem =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            raws.push((i + 1, raw));
        }
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(false)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| format!("CSV header: {e}"))?
            .clone();
        for h in headers.iter() {
            if !["id", "input", "task", "question", "from", "to"].contains(&h) {
                return Err(format!(
                    "CSV header: unknown column `{h}` (expected id, input, task, question, from, to)"
                ));
            }
        }
        for (i, rec) in reader.records().enumerate() {
            let rec = rec.map_err(|e| format!("line {}: {e}", i + 2))?;
            let get = |name: &str| {
                headers
                    .iter()
                    .position(|h| h == name)
                    .and_then(|p| rec.get(p))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            };
            raws.push((
                i + 2,
                RawItem {
                    id: get("id").map(Value::String),
                    input: get("input"),
                    task: get("task"),
                    question: get("question"),
                    from: get("from").map(Value::String),
                    to: get("to").map(Value::String),
                },
            ));
        }
    }
    let mut seen = HashSet::new();
    let mut items = Vec::with_capacity(raws.len());
    for (line, raw) in raws {
        let err = |why: String| format!("line {line}: {why}");
        let id = match raw.id {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(err("missing `id`".into())),
        };
        if !seen.insert(id.clone()) {
            return Err(err(format!("duplicate id `{id}`")));
        }
        let input = raw
            .input
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err(format!("item `{id}`: missing `input`")))?;
        let question = raw.question.filter(|q| !q.trim().is_empty());
        let task = match (raw.task.as_deref().map(str::trim), question) {
            (Some("summarize") | None, None) => Task::Summarize,
            (Some("summarize"), Some(_)) => {
                return Err(err(format!("item `{id}`: summarize takes no question")))
            }
            (Some("ask") | None, Some(question)) => Task::Ask { question },
            (Some("ask"), None) => return Err(err(format!("item `{id}`: ask needs a `question`"))),
            (Some(other), _) => {
                return Err(err(format!(
                    "item `{id}`: unknown task `{other}` (summarize or ask)"
                )))
            }
        };
        let from = time_field(raw.from).map_err(|e| err(format!("item `{id}`: from: {e}")))?;
        let to = time_field(raw.to).map_err(|e| err(format!("item `{id}`: to: {e}")))?;
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(err(format!("item `{id}`: `to` must be after `from`")));
            }
        }
        items.push(ManifestItem {
            id: id.clone(),
            job: JobSpec {
                id,
                input: input.trim().to_string(),
                task,
                from,
                to,
            },
        });
    }
    Ok(items)
}

fn time_field(v: Option<Value>) -> std::result::Result<Option<f64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Some)
            .ok_or_else(|| format!("`{n}` is not a time >= 0")),
        Some(Value::String(s)) => vidlm_media::parse_time(&s)
            .map(Some)
            .map_err(|e| e.to_string()),
        Some(other) => Err(format!("`{other}` is not a time")),
    }
}

/// The JSONL output of a batch: one line per record, appended whole.
#[derive(Debug)]
pub struct OutputLog {
    file: File,
    path: PathBuf,
}

impl OutputLog {
    /// Opens `path` for appending. With `resume`, returns the ids that already have a final
    /// record (`"status": "ok"` or `"error"`) and first cuts off a torn last line, if any. Without
    /// `resume`, the file is started empty.
    ///
    /// # Errors
    /// [`PipelineError::Io`] naming the path.
    pub fn open(path: &Path, resume: bool) -> Result<(Self, HashSet<String>)> {
        let io = |e| PipelineError::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut done = HashSet::new();
        if resume {
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(io)?;
            let whole = text.rfind('\n').map_or(0, |i| i + 1);
            if whole < text.len() {
                tracing::warn!(
                    "{}: dropping an incomplete last line from an interrupted run",
                    path.display()
                );
                file.set_len(whole as u64).map_err(io)?;
                file.seek(SeekFrom::End(0)).map_err(io)?;
            }
            for line in text[..whole].lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let final_record = matches!(v["status"].as_str(), Some("ok" | "error"));
                if let (true, Some(id)) = (final_record, v["id"].as_str()) {
                    done.insert(id.to_string());
                }
            }
        } else {
            file.set_len(0).map_err(io)?;
        }
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
            },
            done,
        ))
    }

    /// Appends one record as one line: a single `write` of the whole line, then a flush to disk.
    ///
    /// # Errors
    /// [`PipelineError::Io`] naming the path.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(record).expect("JSON values serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| PipelineError::io(&self.path, e))
    }
}

/// Counts of a finished batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSummary {
    /// Items that finished.
    pub ok: usize,
    /// Items that failed (an error record was written).
    pub failed: usize,
    /// Items skipped because the output already had them (`--resume`).
    pub skipped: usize,
    /// Items not finished when the run was cancelled (nothing written for them).
    pub cancelled: usize,
    /// Counters and stage times of the run (None when nothing ran).
    pub metrics: Option<crate::MetricsReport>,
}

/// What the batch runner tells its caller (for a progress bar).
#[derive(Debug, Clone, PartialEq)]
pub enum BatchProgress {
    /// An item's record was written; `ok` says whether it succeeded.
    ItemDone {
        /// The item id.
        id: String,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A window of a live input closed and its record was written.
    Window {
        /// The item id.
        id: String,
        /// The window.
        segment: Segment,
    },
}

/// Runs `items` (minus `skip`) through `pipeline`, appending one record per item to `out` as
/// each finishes: `{"id", "status": "ok", "task", ...}` with the summary or answer fields,
/// `{"id", "status": "error", "error"}` on failure; for live inputs also one
/// `{"id", "status": "partial", "segment"}` record per window as it closes.
///
/// # Errors
/// [`PipelineError::Io`] when the output cannot be written (the run stops: the results would be
/// lost).
pub fn run_batch(
    pipeline: &Pipeline,
    items: &[ManifestItem],
    skip: &HashSet<String>,
    out: &mut OutputLog,
    mut on_progress: impl FnMut(&BatchProgress),
) -> Result<BatchSummary> {
    let todo: Vec<&ManifestItem> = items.iter().filter(|i| !skip.contains(&i.id)).collect();
    let mut summary = run_records(pipeline, &todo, |record, progress| {
        out.append(record)?;
        on_progress(progress);
        Ok(())
    })?;
    summary.skipped = items.len() - todo.len();
    Ok(summary)
}

/// Runs `todo` through `pipeline` and hands each record [`run_batch`] would write to `sink` as it
/// is made (on the calling thread), with what it says for a progress bar. `vidlm batch` appends
/// the records to its output; a fleet worker stores them in its queue's results.
///
/// # Errors
/// The first error `sink` returns: the run is cancelled (through the pipeline's token) and no
/// further record is made.
///
/// ```no_run
/// # fn demo(pipeline: &vidlm_pipeline::Pipeline) -> vidlm_pipeline::Result<()> {
/// use vidlm_pipeline::batch::{parse_manifest, run_records};
/// let items = parse_manifest("{\"id\": \"a\", \"input\": \"clip.mp4\"}").unwrap();
/// let todo: Vec<_> = items.iter().collect();
/// let summary = run_records(pipeline, &todo, |record, _| {
///     println!("{record}");
///     Ok(())
/// })?;
/// assert_eq!(summary.ok + summary.failed + summary.cancelled, 1);
/// # Ok(()) }
/// ```
pub fn run_records(
    pipeline: &Pipeline,
    todo: &[&ManifestItem],
    mut sink: impl FnMut(&Value, &BatchProgress) -> Result<()>,
) -> Result<BatchSummary> {
    let jobs: Vec<JobSpec> = todo.iter().map(|i| i.job.clone()).collect();
    let mut summary = BatchSummary::default();
    let mut live = vec![false; jobs.len()];
    let mut write_error: Option<PipelineError> = None;
    let report = pipeline.run(&jobs, |ev| {
        if write_error.is_some() {
            return;
        }
        let (record, progress) = match ev {
            Event::Started { job, info } => {
                live[*job] = info.live;
                return;
            }
            // Batch records carry whole answers.
            Event::AnswerText { .. } => return,
            Event::Segment { job, segment } => {
                if !live[*job] {
                    return;
                }
                let id = &todo[*job].id;
                (
                    json!({"id": id, "status": "partial", "input": jobs[*job].input, "segment": segment}),
                    BatchProgress::Window {
                        id: id.clone(),
                        segment: segment.clone(),
                    },
                )
            }
            Event::Finished { job, output } => {
                let id = &todo[*job].id;
                (
                    ok_record(pipeline, id, &jobs[*job], output),
                    BatchProgress::ItemDone {
                        id: id.clone(),
                        ok: true,
                    },
                )
            }
            Event::Failed { job, error } => {
                let id = &todo[*job].id;
                (
                    json!({
                        "id": id,
                        "status": "error",
                        "input": jobs[*job].input,
                        "error": error.to_string(),
                        "error_kind": error.kind(),
                    }),
                    BatchProgress::ItemDone {
                        id: id.clone(),
                        ok: false,
                    },
                )
            }
        };
        if let Err(e) = sink(&record, &progress) {
            // Without an output there is no point going on.
            pipeline.cancel_token().cancel();
            write_error = Some(e);
        }
    });
    if let Some(e) = write_error {
        return Err(e);
    }
    summary.metrics = Some(report.metrics.clone());
    for o in &report.outcomes {
        match o {
            JobOutcome::Finished(_) => summary.ok += 1,
            JobOutcome::Failed(_) => summary.failed += 1,
            JobOutcome::Cancelled => summary.cancelled += 1,
        }
    }
    Ok(summary)
}

fn ok_record(pipeline: &Pipeline, id: &str, job: &JobSpec, output: &JobOutput) -> Value {
    let (task, body) = match output {
        JobOutput::Summary(s) => (
            "summarize",
            serde_json::to_value(pipeline.summary_report(&job.input, s.clone())),
        ),
        JobOutput::Answer(a) => (
            "ask",
            serde_json::to_value(crate::AskReport {
                video: job.input.clone(),
                model: pipeline.model_name().to_string(),
                question: match &job.task {
                    Task::Ask { question } => question.clone(),
                    Task::Summarize => String::new(),
                },
                answer: a.answer.clone(),
                token_ids: a.token_ids.clone(),
                evidence: a.evidence.clone(),
                answer_times: crate::timestamps::answer_ranges(
                    &a.answer, a.duration, job.from, job.to,
                ),
                frames: a.frames.clone(),
                chunks: a.chunks.clone(),
                timings: a.timings,
                usage: a.usage,
            }),
        ),
    };
    let mut record = json!({"id": id, "status": "ok", "task": task, "input": job.input});
    if let (Value::Object(r), Ok(Value::Object(b))) = (&mut record, body) {
        r.extend(b);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jsonl_and_csv_alike() {
        let jsonl = r#"{"id": "a", "input": "x.mp4"}
{"id": 2, "input": "y.mp4", "question": "who?", "from": "0:05", "to": 9.5}
"#;
        let csv =
            "id,input,task,question,from,to\na,x.mp4,summarize,,,\n2,y.mp4,ask,who?,0:05,9.5\n";
        let a = parse_manifest(jsonl).unwrap();
        let b = parse_manifest(csv).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[1].job.from, Some(5.0));
        assert_eq!(a[1].job.to, Some(9.5));
        assert_eq!(
            a[1].job.task,
            Task::Ask {
                question: "who?".into()
            }
        );
        assert_eq!(a[0].job.task, Task::Summarize);
    }

    #[test]
    fn manifest_errors_name_the_line() {
        for (text, want) in [
            (
                "{\"id\":\"a\",\"input\":\"x\"}\n{\"id\":\"a\",\"input\":\"y\"}\n",
                "line 2: duplicate id",
            ),
            ("{\"input\":\"x\"}\n", "line 1: missing `id`"),
            (
                "{\"id\":\"a\",\"input\":\"x\",\"task\":\"ask\"}\n",
                "needs a `question`",
            ),
            (
                "{\"id\":\"a\",\"input\":\"x\",\"task\":\"dance\"}\n",
                "unknown task",
            ),
            (
                "{\"id\":\"a\",\"input\":\"x\",\"from\":\"soon\"}\n",
                "not a time",
            ),
            (
                "{\"id\":\"a\",\"input\":\"x\",\"colour\":1}\n",
                "line 1: unknown field",
            ),
            ("id,input,speed\na,x,1\n", "unknown column `speed`"),
            ("id,input\na,x,extra\n", "line 2"),
            (
                "{\"id\":\"a\",\"input\":\"x\",\"from\":5,\"to\":2}\n",
                "after `from`",
            ),
        ] {
            let e = parse_manifest(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn output_log_resumes_and_drops_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        {
            let (mut log, done) = OutputLog::open(&p, false).unwrap();
            assert!(done.is_empty());
            log.append(&json!({"id": "a", "status": "ok"})).unwrap();
            log.append(&json!({"id": "b", "status": "error", "error": "x"}))
                .unwrap();
            log.append(&json!({"id": "c", "status": "partial"}))
                .unwrap();
        }
        // A run killed mid-line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"id\": \"d\", \"sta").unwrap();
        drop(f);
        let (mut log, done) = OutputLog::open(&p, true).unwrap();
        assert_eq!(done, HashSet::from(["a".to_string(), "b".to_string()]));
        log.append(&json!({"id": "d", "status": "ok"})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4);
        for line in text.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
        // Without resume the file starts over.
        let (_, done) = OutputLog::open(&p, false).unwrap();
        assert!(done.is_empty());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }
}
