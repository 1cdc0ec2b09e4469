//! One served model: its worker thread (which loads the model and runs every job, off the async
//! runtime), the bounded queue in front of it, and the events a job sends back to its request.
//!
//! Video jobs that arrive together with the same settings run as one pipeline run, so the vision
//! encoder batches their frames as the batch pipeline does. A job whose client hung up is skipped
//! while queued; a running run is cancelled (at the next frame or token) once every client in it
//! has gone, and during shutdown after the timeout.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use vidlm_models::{FinishReason, LoadOptions, VideoFrame};
use vidlm_pipeline::ErrorKind;
use vidlm_pipeline::{CancelToken, Event, JobOutcome, JobOutput, JobSpec, Pipeline};

use crate::api::Prepared;
use crate::media::LocalMedia;
use crate::metrics::Metrics;
use crate::model::SharedModel;
use crate::ApiError;

/// How often a running job checks whether its clients are still there.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// What a job sends back to its request, in this order: `Started`, any `Text`, then `Done` or
/// `Error` (an error may also come first).
#[derive(Debug)]
pub(crate) enum JobEvent {
    /// The input opened; the answer follows.
    Started,
    /// A piece of the answer.
    Text(String),
    /// The whole answer.
    Done(Completion),
    /// A summarize job described a segment.
    Segment(vidlm_pipeline::Segment),
    /// A summarize job's report, rendered in the format asked for.
    Summary(String),
    /// The job failed.
    Error(ApiError),
}

/// A finished answer.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// `stop` or `length`.
    pub finish: &'static str,
}

/// The media a job runs on, resolved before it is queued.
pub(crate) enum JobInput {
    /// A video file (kept alive as long as the job).
    Video(LocalMedia),
    /// Decoded images.
    Images(Vec<VideoFrame>),
}

/// What a video job asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobTask {
    /// A chat answer to the prepared question.
    Ask,
    /// `vidlm summarize`'s report on the video, named `name` in it.
    Summarize {
        format: vidlm_pipeline::OutputFormat,
        name: String,
    },
}

/// A queued request.
pub(crate) struct Job {
    pub prepared: Prepared,
    pub task: JobTask,
    pub input: JobInput,
    pub events: UnboundedSender<JobEvent>,
}

impl Job {
    fn gone(&self) -> bool {
        self.events.is_closed()
    }

    fn send(&self, ev: JobEvent) {
        // A closed channel means the client went away; its job is being dropped.
        let _ = self.events.send(ev);
    }
}

/// Whether the model is usable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LoadState {
    Loading,
    Ready,
    Failed(String),
}

/// A served model and its queue.
pub(crate) struct ModelWorker {
    /// The id clients name it by.
    pub id: String,
    state: Mutex<LoadState>,
    tx: crossbeam_channel::Sender<Job>,
    /// Jobs accepted and not yet started.
    queued: AtomicUsize,
    max_queue: usize,
    /// Set at shutdown's deadline: running jobs are cancelled.
    stop_all: Arc<AtomicBool>,
}

/// What the worker thread needs.
pub(crate) struct WorkerSetup {
    pub spec: String,
    pub options: LoadOptions,
    /// Most video jobs in one pipeline run.
    pub max_batch: usize,
    pub metrics: Arc<Metrics>,
    /// The in-memory visual-token cache of this model, when on.
    pub cache: Option<vidlm_pipeline::VisualCache>,
}

impl ModelWorker {
    /// Starts the worker thread, which loads the model and then serves the queue.
    pub fn start(
        id: String,
        setup: WorkerSetup,
        max_queue: usize,
        stop_all: Arc<AtomicBool>,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Arc::new(Self {
            id,
            state: Mutex::new(LoadState::Loading),
            tx,
            queued: AtomicUsize::new(0),
            max_queue,
            stop_all,
        });
        let me = w.clone();
        std::thread::Builder::new()
            .name(format!("vidlm-serve-{}", w.id))
            .spawn(move || me.main(setup, rx))?;
        Ok(w)
    }

    /// Whether the model is loaded, loading or failed.
    pub fn state(&self) -> LoadState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, s: LoadState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Jobs waiting.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Queues a job.
    ///
    /// # Errors
    /// 503 while the model loads or after it failed, 429 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.state() {
            LoadState::Ready => {}
            LoadState::Loading => {
                return Err(ApiError::unavailable(format!(
                    "model {} is loading; retry when GET /health answers 200",
                    self.id
                )))
            }
            LoadState::Failed(why) => {
                return Err(ApiError::unavailable(format!(
                    "model {} failed to load: {why}",
                    self.id
                )))
            }
        }
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_queue {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::queue_full(self.max_queue));
        }
        if self.tx.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::unavailable("the model's worker has stopped"));
        }
        Ok(())
    }

    fn main(self: Arc<Self>, setup: WorkerSetup, rx: crossbeam_channel::Receiver<Job>) {
        let t0 = Instant::now();
        let model = match crate::model::load(&setup.spec, &setup.options) {
            Ok(m) => SharedModel::new(m),
            Err(e) => {
                let why = vidlm_models::error_line(&e);
                tracing::error!(model = %self.id, %why, "cannot load the model");
                self.set_state(LoadState::Failed(why));
                return;
            }
        };
        tracing::info!(model = %self.id, seconds = t0.elapsed().as_secs_f64(), "model loaded");
        self.set_state(LoadState::Ready);
        let mut pending: VecDeque<Job> = VecDeque::new();
        loop {
            let first = match pending.pop_front() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
            };
            // Everything queued is looked at: video jobs with the same settings join one run.
            while let Ok(j) = rx.try_recv() {
                pending.push_back(j);
            }
            let mut batch = vec![first];
            if matches!(batch[0].input, JobInput::Video(_)) {
                let mut i = 0;
                while i < pending.len() && batch.len() < setup.max_batch {
                    if matches!(pending[i].input, JobInput::Video(_))
                        && pending[i].prepared.config == batch[0].prepared.config
                    {
                        batch.extend(pending.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            self.queued.fetch_sub(batch.len(), Ordering::SeqCst);
            let (live, gone): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| !j.gone());
            setup.metrics.add_cancelled(gone.len());
            if live.is_empty() {
                continue;
            }
            setup.metrics.in_flight(live.len() as i64);
            if matches!(live[0].input, JobInput::Video(_)) {
                self.run_videos(&model, &setup, live);
            } else {
                for job in live {
                    self.run_direct(&model, &setup, job);
                }
            }
        }
    }

    /// Cancels `token` once every job's client is gone or shutdown's deadline passed; returns
    /// when `done` is set.
    fn watch(&self, jobs: &[Job], token: &CancelToken, done: &AtomicBool) {
        while !done.load(Ordering::SeqCst) {
            if self.stop_all.load(Ordering::SeqCst) || jobs.iter().all(Job::gone) {
                token.cancel();
                return;
            }
            std::thread::sleep(WATCH_EVERY);
        }
    }

    fn run_videos(&self, model: &SharedModel, setup: &WorkerSetup, jobs: Vec<Job>) {
        let mut cfg = jobs[0].prepared.config.clone();
        // The served checkpoint is the model part of the cache key.
        cfg.model.id = setup.spec.clone();
        let max_new = cfg.generation.max_new_tokens;
        let token = CancelToken::new();
        let mut builder = Pipeline::builder()
            .config(cfg)
            .model(Box::new(model.clone()))
            .cancel_token(token.clone());
        if let Some(cache) = &setup.cache {
            builder = builder.cache(cache.clone());
        }
        let pipeline = match builder.build() {
            Ok(p) => p,
            Err(e) => {
                for j in &jobs {
                    j.send(JobEvent::Error(ApiError::bad_request(e.to_string())));
                }
                return;
            }
        };
        let specs: Vec<JobSpec> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let path = match &j.input {
                    JobInput::Video(m) => m.path().to_string_lossy().into_owned(),
                    _ => unreachable!("a video batch holds video jobs"),
                };
                let base = match &j.task {
                    JobTask::Ask => JobSpec::ask(i.to_string(), path, j.prepared.question.clone()),
                    JobTask::Summarize { .. } => JobSpec::summarize(i.to_string(), path),
                };
                JobSpec {
                    from: j.prepared.from,
                    to: j.prepared.to,
                    ..base
                }
            })
            .collect();
        let mut filters: Vec<StopFilter> = jobs
            .iter()
            .map(|j| StopFilter::new(j.prepared.stop.clone()))
            .collect();
        let done = AtomicBool::new(false);
        let report = std::thread::scope(|s| {
            s.spawn(|| self.watch(&jobs, &token, &done));
            let report = pipeline.run(&specs, |ev| match ev {
                Event::Started { job, .. } => jobs[*job].send(JobEvent::Started),
                Event::AnswerText { job, text } => {
                    let out = filters[*job].push(text);
                    if !out.is_empty() {
                        jobs[*job].send(JobEvent::Text(out));
                    }
                }
                Event::Segment { job, segment } => {
                    if jobs[*job].task != JobTask::Ask {
                        jobs[*job].send(JobEvent::Segment(segment.clone()));
                    }
                }
                Event::Finished { job, output } => {
                    if let (JobOutput::Summary(out), JobTask::Summarize { format, name }) =
                        (output, &jobs[*job].task)
                    {
                        let report = pipeline.summary_report(name, out.clone());
                        jobs[*job].send(JobEvent::Summary(report.render(*format)));
                    }
                    if let JobOutput::Answer(a) = output {
                        let f = &mut filters[*job];
                        let rest = f.finish();
                        if !rest.is_empty() {
                            jobs[*job].send(JobEvent::Text(rest));
                        }
                        let finish = if f.hit {
                            "stop"
                        } else if a.token_ids.len() >= max_new {
                            "length"
                        } else {
                            "stop"
                        };
                        let text = if f.hit {
                            f.text.clone()
                        } else {
                            a.answer.clone()
                        };
                        jobs[*job].send(JobEvent::Done(Completion {
                            text,
                            prompt_tokens: a.usage.prompt_tokens,
                            completion_tokens: a.usage.generated_tokens,
                            finish,
                        }));
                    }
                }
                Event::Failed { job, error } => {
                    // The input's fault is the client's (400); the model's or ours is a 500.
                    let e = match error.kind() {
                        ErrorKind::Input | ErrorKind::Config => {
                            ApiError::bad_request(error.to_string())
                        }
                        _ => ApiError::internal(error.to_string()),
                    };
                    jobs[*job].send(JobEvent::Error(e))
                }
            });
            done.store(true, Ordering::SeqCst);
            report
        });
        setup.metrics.add_run(&report.metrics);
        let mut finished = 0;
        for (job, outcome) in jobs.iter().zip(&report.outcomes) {
            match outcome {
                JobOutcome::Finished(_) => finished += 1,
                JobOutcome::Failed(_) => {}
                JobOutcome::Cancelled => {
                    setup.metrics.add_cancelled(1);
                    job.send(JobEvent::Error(ApiError::unavailable(
                        "cancelled: the server is shutting down",
                    )));
                }
            }
        }
        tracing::info!(
            jobs = jobs.len(),
            finished,
            seconds = report.metrics.wall_seconds,
            "batch done"
        );
        setup.metrics.in_flight(-(jobs.len() as i64));
    }

    /// An image job: the model's own image prompt, no pipeline.
    fn run_direct(&self, model: &SharedModel, setup: &WorkerSetup, job: Job) {
        let token = CancelToken::new();
        let params = vidlm_models::GenerationParams {
            stop: Some(token.stop_flag()),
            ..job.prepared.config.generation.params()
        };
        let done = AtomicBool::new(false);
        let mut filter = StopFilter::new(job.prepared.stop.clone());
        job.send(JobEvent::Started);
        let t0 = Instant::now();
        let result = std::thread::scope(|s| {
            let jobs = std::slice::from_ref(&job);
            s.spawn(|| self.watch(jobs, &token, &done));
            let mut on_text = |t: &str| {
                let out = filter.push(t);
                if !out.is_empty() {
                    job.send(JobEvent::Text(out));
                }
            };
            let q = job.prepared.question.as_str();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                model.with(|m| match &job.input {
                    JobInput::Images(frames) => m
                        .generate_images(frames, q, &params, &mut on_text)
                        .map(|o| o.generation),
                    JobInput::Video(_) => unreachable!("videos go through the pipeline"),
                })
            }));
            done.store(true, Ordering::SeqCst);
            r
        });
        setup.metrics.in_flight(-1);
        let g = match result {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                let why = e.to_string().lines().next().unwrap_or_default().to_string();
                return job.send(JobEvent::Error(ApiError::bad_request(why)));
            }
            Err(_) => return job.send(JobEvent::Error(ApiError::internal("the model panicked"))),
        };
        setup.metrics.add_generation(
            g.prompt_tokens,
            g.token_ids.len(),
            t0.elapsed().as_secs_f64(),
        );
        let rest = filter.finish();
        if !rest.is_empty() {
            job.send(JobEvent::Text(rest));
        }
        let finish = match g.finish {
            FinishReason::Length if !filter.hit => "length",
            FinishReason::Cancelled => {
                setup.metrics.add_cancelled(1);
                return job.send(JobEvent::Error(ApiError::unavailable(
                    "cancelled: the server is shutting down",
                )));
            }
            _ => "stop",
        };
        job.send(JobEvent::Done(Completion {
            text: if filter.hit {
                filter.text.clone()
            } else {
                g.text
            },
            prompt_tokens: g.prompt_tokens,
            completion_tokens: g.token_ids.len(),
            finish,
        }));
    }
}

/// Cuts an answer at the first stop string, holding back text that may be the start of one.
#[derive(Debug, Default)]
pub(crate) struct StopFilter {
    stops: Vec<String>,
    /// The text so far (cut at the stop string once hit).
    pub text: String,
    /// Bytes of `text` already passed on.
    sent: usize,
    /// A stop string was found.
    pub hit: bool,
}

impl StopFilter {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Takes a new piece; returns the text that can be passed on.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        if self.stops.is_empty() {
            return self.take(self.text.len());
        }
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            self.hit = true;
            return self.take(at);
        }
        // Hold back the longest tail that is a prefix of a stop string.
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut keep = 0;
        for k in (1..longest.min(self.text.len() + 1)).rev() {
            let start = self.text.len() - k;
            if self.text.is_char_boundary(start)
                && self
                    .stops
                    .iter()
                    .any(|s| s.starts_with(&self.text[start..]))
            {
                keep = k;
                break;
            }
        }
        self.take(self.text.len() - keep)
    }

    /// The text held back, at the end of the answer.
    pub fn finish(&mut self) -> String {
        self.take(self.text.len())
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.sent);
        let out = self.text[self.sent..upto].to_string();
        self.sent = upto;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out += &f.push(p);
        }
        out += &f.finish();
        (out, f.text.clone(), f.hit)
    }

    #[test]
    fn stop_strings_cut_across_pieces() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), "ab".into(), false));
        assert_eq!(
            run(&["END"], &["ab", "cE", "N", "Dx"]),
            ("abc".into(), "abc".into(), true)
        );
        assert_eq!(
            run(&["END"], &["abE", "Nx"]),
            ("abENx".into(), "abENx".into(), false)
        );
        assert_eq!(
            run(&["x", "bc"], &["ab", "cx"]),
            ("a".into(), "a".into(), true)
        );
        assert_eq!(
            run(&["é!"], &["aé", "b"]),
            ("aéb".into(), "aéb".into(), false)
        );
    }
}
