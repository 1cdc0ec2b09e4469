//! The staged worker graph: decode -> preprocess -> encode -> pool -> LLM.
//!
//! Each stage runs on its own thread(s) and hands owned messages to the next through a bounded
//! `crossbeam-channel` queue, so a slow language model blocks the pooling stage, which blocks the
//! encoder, which blocks decoding: frames never pile up in memory. Decoding runs `workers.decode`
//! videos at once; the encoder batches frames from all of them into one call; one thread drives
//! the language model (the model is not `Sync`). Every message carries its job, and errors travel
//! down the graph as messages, so one failing video never stops the others.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TryRecvError};
use vidlm_models::{Clip, Generation, VideoFrame, VisionLanguageModel, VisualTokens};

use crate::chunking::{format_clock, merge_similar, words, Chunker, Plan, RawChunk, Segment};
use crate::error::panic_message;
use crate::metrics::{JobTimings, Metrics, Stage};
use crate::source::{expected_frames, SampleRequest, SampledFrame, SourceInfo, SourceOpener};
use crate::timestamps::model_segments;
use crate::{CancelToken, PipelineConfig, PipelineError, Result};

/// What a job asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Timestamped descriptions and an overall summary.
    Summarize,
    /// An answer to a question, with the time ranges it used.
    Ask {
        /// The question.
        question: String,
    },
}

/// One unit of work: an input and what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The caller's name for the job (a manifest id, a file name).
    pub id: String,
    /// A path, URL or `-`.
    pub input: String,
    /// Summarize or ask.
    pub task: Task,
    /// Start of the time range, seconds.
    pub from: Option<f64>,
    /// End of the time range, seconds.
    pub to: Option<f64>,
}

impl JobSpec {
    /// A summarize job over the whole input.
    pub fn summarize(id: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            input: input.into(),
            task: Task::Summarize,
            from: None,
            to: None,
        }
    }

    /// An ask job over the whole input.
    pub fn ask(
        id: impl Into<String>,
        input: impl Into<String>,
        question: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            input: input.into(),
            task: Task::Ask {
                question: question.into(),
            },
            from: None,
            to: None,
        }
    }
}

/// Language-model usage of one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Model calls (descriptions, summaries, answers).
    pub calls: usize,
    /// Prompt tokens over all calls.
    pub prompt_tokens: usize,
    /// Generated tokens over all calls.
    pub generated_tokens: usize,
}

impl Usage {
    fn add(&mut self, g: &Generation) {
        self.calls += 1;
        self.prompt_tokens += g.prompt_tokens;
        self.generated_tokens += g.token_ids.len();
    }
}

/// The result of a summarize job.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOutput {
    /// The input's duration as the container gives it (None for live inputs).
    pub duration: Option<f64>,
    /// The chunks as described, one per chunk, times on the chunk grid (or at scene cuts).
    pub chunks: Vec<Segment>,
    /// The chunks after merging adjacent ones that say the same thing.
    pub segments: Vec<Segment>,
    /// The overall summary.
    pub summary: String,
    /// Frame groups given to the language model.
    pub frames: usize,
    /// Language-model usage.
    pub usage: Usage,
    /// Where the job's time went.
    pub timings: JobTimings,
}

/// A time range, seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

/// The result of an ask job.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerOutput {
    /// The input's duration (None for live inputs).
    pub duration: Option<f64>,
    /// The answer text, as the model decoded it.
    pub answer: String,
    /// The answer's generated token ids.
    pub token_ids: Vec<u32>,
    /// The time ranges whose frames the answer was given over.
    pub evidence: Vec<TimeRange>,
    /// Timestamps of the frame groups in the final prompt.
    pub frames: Vec<f64>,
    /// Descriptions of the chunks when the video was too long for one prompt (empty otherwise).
    pub chunks: Vec<Segment>,
    /// Language-model usage.
    pub usage: Usage,
    /// Where the job's time went.
    pub timings: JobTimings,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutput {
    /// From [`Task::Summarize`].
    Summary(SummaryOutput),
    /// From [`Task::Ask`].
    Answer(AnswerOutput),
}

/// What the graph reports while it runs. `job` indexes the job list given to the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The input was opened.
    Started {
        /// Job index.
        job: usize,
        /// What is known about the input.
        info: SourceInfo,
    },
    /// A chunk (for live inputs: a window) was described.
    Segment {
        /// Job index.
        job: usize,
        /// The chunk's range and description.
        segment: Segment,
    },
    /// A piece of an ask job's answer as the model writes it (whole UTF-8 characters; the pieces
    /// in order make up the answer). Only the final answer streams, not the chunk descriptions
    /// made on the way.
    AnswerText {
        /// Job index.
        job: usize,
        /// The new text.
        text: String,
    },
    /// The job finished.
    Finished {
        /// Job index.
        job: usize,
        /// Its result.
        output: JobOutput,
    },
    /// The job failed; the others go on.
    Failed {
        /// Job index.
        job: usize,
        /// One-line reason naming the input.
        error: String,
    },
}

/// A message between stages; `T` is the stage's payload.
enum Msg<T> {
    Start { job: usize, info: SourceInfo },
    Item { job: usize, item: T },
    End { job: usize },
    Failed { job: usize, error: String },
    Cancelled { job: usize },
}

impl<T> Msg<T> {
    /// The same control message with another payload type (`None` for an item).
    fn control<U>(self) -> Option<Msg<U>> {
        match self {
            Msg::Item { .. } => None,
            Msg::Start { job, info } => Some(Msg::Start { job, info }),
            Msg::End { job } => Some(Msg::End { job }),
            Msg::Failed { job, error } => Some(Msg::Failed { job, error }),
            Msg::Cancelled { job } => Some(Msg::Cancelled { job }),
        }
    }
}

struct Prepped {
    frame: VideoFrame,
    scene: Option<f32>,
}

struct Encoded {
    tokens: VisualTokens,
    scene: Option<f32>,
}

struct ChunkMsg {
    start: f64,
    end: f64,
    whole: bool,
    groups: Vec<VisualTokens>,
}

/// Everything the stages share for one run.
pub(crate) struct Graph<'a> {
    pub opener: &'a dyn SourceOpener,
    pub encoder: &'a Mutex<Box<dyn VisionLanguageModel>>,
    pub llm: &'a Mutex<Box<dyn VisionLanguageModel>>,
    pub config: &'a PipelineConfig,
    /// The model's frame budget per prompt (frames, not groups).
    pub max_frames: usize,
    /// Frames per visual-token group of the encoder (2 for Qwen3-VL's frame pairs).
    pub frames_per_group: usize,
    pub metrics: &'a Metrics,
    pub cancel: &'a CancelToken,
}

fn lock<'m>(
    m: &'m Mutex<Box<dyn VisionLanguageModel>>,
) -> std::sync::MutexGuard<'m, Box<dyn VisionLanguageModel>> {
    // A model call that panicked was caught and reported; the model itself stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Graph<'_> {
    /// Runs `jobs` through the graph, calling `on_event` on the calling thread as results come.
    /// Returns when every job finished, failed, or was dropped by cancellation.
    pub(crate) fn run(&self, jobs: &[JobSpec], on_event: &mut dyn FnMut(Event)) {
        let w = &self.config.workers;
        let (job_tx, job_rx) = unbounded::<usize>();
        for j in 0..jobs.len() {
            job_tx.send(j).expect("receiver alive");
        }
        drop(job_tx);
        let mut pre_txs = Vec::with_capacity(w.preprocess);
        let mut pre_rxs = Vec::with_capacity(w.preprocess);
        for _ in 0..w.preprocess {
            let (tx, rx) = bounded::<Msg<SampledFrame>>(w.queue);
            pre_txs.push(tx);
            pre_rxs.push(rx);
        }
        let (enc_tx, enc_rx) = bounded::<Msg<Prepped>>(w.queue);
        let (pool_tx, pool_rx) = bounded::<Msg<Encoded>>(w.queue);
        let (llm_tx, llm_rx) = bounded::<Msg<ChunkMsg>>(w.queue.div_ceil(4).max(1));
        let (ev_tx, ev_rx) = unbounded::<Event>();

        std::thread::scope(|s| {
            for i in 0..w.decode {
                let (job_rx, pre_txs) = (job_rx.clone(), pre_txs.clone());
                std::thread::Builder::new()
                    .name(format!("vidlm-decode-{i}"))
                    .spawn_scoped(s, move || self.decode_worker(jobs, job_rx, pre_txs))
                    .expect("spawn decode thread");
            }
            drop(pre_txs);
            for (i, rx) in pre_rxs.into_iter().enumerate() {
                let tx = enc_tx.clone();
                std::thread::Builder::new()
                    .name(format!("vidlm-preprocess-{i}"))
                    .spawn_scoped(s, move || self.preprocess_worker(rx, tx))
                    .expect("spawn preprocess thread");
            }
            drop(enc_tx);
            std::thread::Builder::new()
                .name("vidlm-encode".into())
                .spawn_scoped(s, move || self.encode_worker(jobs, enc_rx, pool_tx))
                .expect("spawn encode thread");
            std::thread::Builder::new()
                .name("vidlm-pool".into())
                .spawn_scoped(s, move || self.pool_worker(jobs, pool_rx, llm_tx))
                .expect("spawn pool thread");
            std::thread::Builder::new()
                .name("vidlm-llm".into())
                .spawn_scoped(s, move || self.llm_worker(jobs, llm_rx, ev_tx))
                .expect("spawn llm thread");
            for ev in ev_rx {
                on_event(ev);
            }
        });
    }

    fn decode_worker(
        &self,
        jobs: &[JobSpec],
        job_rx: Receiver<usize>,
        out: Vec<Sender<Msg<SampledFrame>>>,
    ) {
        let sampling = &self.config.sampling;
        let size = sampling
            .size
            .as_deref()
            .and_then(|s| vidlm_media::parse_size(s).ok());
        for job in job_rx {
            if self.cancel.is_cancelled() {
                break;
            }
            let spec = &jobs[job];
            let tx = &out[job % out.len()];
            let request = SampleRequest {
                strategy: sampling.strategy.clone(),
                from: spec.from.unwrap_or(0.0),
                to: spec.to,
                max_frames: sampling.max_frames,
                size,
            };
            self.metrics.job_started(job);
            let t0 = Instant::now();
            let opened = self.opener.open(&spec.input, &request);
            self.metrics
                .add_time(Stage::Decode, Some(job), t0.elapsed());
            let mut source = match opened {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Msg::Failed {
                        job,
                        error: with_input(&spec.input, &e),
                    });
                    continue;
                }
            };
            let info = source.info().clone();
            if tx.send(Msg::Start { job, info }).is_err() {
                return;
            }
            loop {
                if self.cancel.is_cancelled() {
                    let _ = tx.send(Msg::Cancelled { job });
                    break;
                }
                let t0 = Instant::now();
                let next =
                    catch_unwind(AssertUnwindSafe(|| source.next_frame())).unwrap_or_else(|p| {
                        Some(Err(PipelineError::Panic {
                            stage: "decode",
                            message: panic_message(p.as_ref()),
                        }))
                    });
                self.metrics
                    .add_time(Stage::Decode, Some(job), t0.elapsed());
                let msg = match next {
                    None => Msg::End { job },
                    Some(Err(e)) => Msg::Failed {
                        job,
                        error: with_input(&spec.input, &e),
                    },
                    Some(Ok(frame)) => {
                        self.metrics.add_sampled(1);
                        Msg::Item { job, item: frame }
                    }
                };
                let last = !matches!(msg, Msg::Item { .. });
                if tx.send(msg).is_err() {
                    return;
                }
                if last {
                    break;
                }
            }
            self.metrics.add_decoded(source.frames_decoded());
        }
    }

    /// With `workers.overlap = false`, a stage first takes everything its upstream produces and
    /// only then starts: the stages run one after another (the baseline of the benchmark).
    fn barrier<T>(&self, rx: Receiver<T>) -> Receiver<T> {
        if self.config.workers.overlap {
            return rx;
        }
        let all: Vec<T> = rx.iter().collect();
        let (tx, rx) = unbounded();
        for m in all {
            let _ = tx.send(m);
        }
        rx
    }

    fn preprocess_worker(&self, rx: Receiver<Msg<SampledFrame>>, tx: Sender<Msg<Prepped>>) {
        let rx = self.barrier(rx);
        // Per job: the scene detector holding the previous frame's luma thumbnail.
        let mut thumbs: HashMap<usize, vidlm_media::SceneDetector> = HashMap::new();
        for msg in rx {
            let out = match msg {
                Msg::Item { job, item } => {
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    let t0 = Instant::now();
                    // FFmpeg's scene measure on a small luma picture: cheap, and the same scale
                    // as the `scene:T` sampler's threshold.
                    let thumb = luma_thumbnail(&item.rgb, item.width, item.height);
                    let scene = Some(thumbs.entry(job).or_default().push(&thumb) as f32);
                    let frame = VideoFrame {
                        rgb: item.rgb,
                        width: item.width,
                        height: item.height,
                        pts: item.pts,
                    };
                    self.metrics
                        .add_time(Stage::Preprocess, Some(job), t0.elapsed());
                    Msg::Item {
                        job,
                        item: Prepped { frame, scene },
                    }
                }
                Msg::Start { job, info } => Msg::Start { job, info },
                Msg::End { job } => {
                    thumbs.remove(&job);
                    Msg::End { job }
                }
                Msg::Failed { job, error } => {
                    thumbs.remove(&job);
                    Msg::Failed { job, error }
                }
                Msg::Cancelled { job } => {
                    thumbs.remove(&job);
                    Msg::Cancelled { job }
                }
            };
            if tx.send(out).is_err() {
                return;
            }
        }
    }

    fn encode_worker(
        &self,
        jobs: &[JobSpec],
        rx: Receiver<Msg<Prepped>>,
        tx: Sender<Msg<Encoded>>,
    ) {
        let rx = self.barrier(rx);
        if self.frames_per_group > 1 {
            return self.encode_worker_grouped(jobs, rx, tx);
        }
        let batch_size = self.config.workers.encode_batch;
        let mut failed: HashSet<usize> = HashSet::new();
        loop {
            let Ok(first) = rx.recv() else { return };
            let mut batch: Vec<(usize, Prepped)> = Vec::with_capacity(batch_size);
            let mut control = None;
            match first {
                Msg::Item { job, item } => batch.push((job, item)),
                other => control = Some(other),
            }
            // Fill the batch with what is already queued, from any video; stop at a control
            // message so a job's end never overtakes its frames.
            while control.is_none() && batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(Msg::Item { job, item }) => batch.push((job, item)),
                    Ok(other) => control = Some(other),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            batch.retain(|(job, _)| !failed.contains(job));
            if !batch.is_empty() && !self.cancel.is_cancelled() {
                for msg in self.encode_batch(jobs, batch, &mut failed) {
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
            if let Some(c) = control {
                let forward = match c {
                    Msg::End { job } if failed.contains(&job) => None,
                    Msg::Failed { job, .. } | Msg::Cancelled { job } if failed.contains(&job) => {
                        None
                    }
                    other => other.control(),
                };
                if let Some(m) = forward {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Encodes one batch; on failure retries each job's frames alone so only the bad job fails.
    fn encode_batch(
        &self,
        specs: &[JobSpec],
        batch: Vec<(usize, Prepped)>,
        failed: &mut HashSet<usize>,
    ) -> Vec<Msg<Encoded>> {
        let mut jobs_in_batch: Vec<usize> = batch.iter().map(|(j, _)| *j).collect();
        jobs_in_batch.dedup();
        let (jobs, items): (Vec<usize>, Vec<Prepped>) = batch.into_iter().unzip();
        let (frames, scenes): (Vec<VideoFrame>, Vec<Option<f32>>) =
            items.into_iter().map(|p| (p.frame, p.scene)).unzip();
        match self.encode(&jobs, &frames, None) {
            Ok(tokens) => tokens
                .into_iter()
                .zip(jobs)
                .zip(scenes)
                .map(|((tokens, job), scene)| Msg::Item {
                    job,
                    item: Encoded { tokens, scene },
                })
                .collect(),
            Err(e) if jobs_in_batch.len() <= 1 => {
                let job = jobs[0];
                failed.insert(job);
                vec![Msg::Failed {
                    job,
                    error: with_input(&specs[job].input, &e),
                }]
            }
            Err(_) => {
                // Split by job: a frame of one bad video must not fail the others.
                let mut out = Vec::new();
                let mut groups: Vec<(usize, Vec<(usize, Prepped)>)> = Vec::new();
                for ((job, frame), scene) in jobs.into_iter().zip(frames).zip(scenes) {
                    let item = (job, Prepped { frame, scene });
                    match groups.iter_mut().find(|(j, _)| *j == job) {
                        Some((_, v)) => v.push(item),
                        None => groups.push((job, vec![item])),
                    }
                }
                for (_, batch) in groups {
                    out.extend(self.encode_batch(specs, batch, failed));
                }
                out
            }
        }
    }

    /// The frame-group encoder's path: frames are batched per job, in whole groups (an odd frame
    /// only at the job's end), each call sized for the frames of one prompt (`clip_frames`), so
    /// groups never straddle two videos and a clip encoded in batches gives the tokens of
    /// encoding it at once.
    fn encode_worker_grouped(
        &self,
        jobs: &[JobSpec],
        rx: Receiver<Msg<Prepped>>,
        tx: Sender<Msg<Encoded>>,
    ) {
        let fpg = self.frames_per_group;
        let target = self.config.workers.encode_batch.div_ceil(fpg) * fpg;
        let mut pending: HashMap<usize, Vec<Prepped>> = HashMap::new();
        let mut clip: HashMap<usize, usize> = HashMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        let flush = |job: usize,
                     items: Vec<Prepped>,
                     clip: usize,
                     failed: &mut HashSet<usize>|
         -> Vec<Msg<Encoded>> {
            if items.is_empty() || self.cancel.is_cancelled() {
                return Vec::new();
            }
            let (frames, scenes): (Vec<VideoFrame>, Vec<Option<f32>>) =
                items.into_iter().map(|p| (p.frame, p.scene)).unzip();
            let jobs_of = vec![job; frames.len()];
            match self.encode(&jobs_of, &frames, Some(clip)) {
                Ok(tokens) => tokens
                    .into_iter()
                    .zip(scenes.chunks(fpg))
                    .map(|(tokens, sc)| Msg::Item {
                        job,
                        // The group's scene score: the largest change inside it.
                        item: Encoded {
                            tokens,
                            scene: sc.iter().flatten().copied().reduce(f32::max),
                        },
                    })
                    .collect(),
                Err(e) => {
                    failed.insert(job);
                    vec![Msg::Failed {
                        job,
                        error: with_input(&jobs[job].input, &e),
                    }]
                }
            }
        };
        for msg in rx.iter() {
            let out: Vec<Msg<Encoded>> = match msg {
                Msg::Start { job, info } => {
                    let (plan, span, expected, _) = self.plan(&jobs[job], &info);
                    let n = clip_frames(
                        plan,
                        span,
                        expected,
                        &self.config.sampling.strategy,
                        self.max_frames,
                    );
                    clip.insert(job, n);
                    vec![Msg::Start { job, info }]
                }
                Msg::Item { job, item } => {
                    if failed.contains(&job) || self.cancel.is_cancelled() {
                        continue;
                    }
                    let buf = pending.entry(job).or_default();
                    buf.push(item);
                    if buf.len() < target {
                        continue;
                    }
                    let items = std::mem::take(buf);
                    let c = clip.get(&job).copied().unwrap_or(self.max_frames);
                    flush(job, items, c, &mut failed)
                }
                Msg::End { job } => {
                    let items = pending.remove(&job).unwrap_or_default();
                    let c = clip.remove(&job).unwrap_or(self.max_frames);
                    let mut out = flush(job, items, c, &mut failed);
                    if !failed.contains(&job) {
                        out.push(Msg::End { job });
                    }
                    out
                }
                Msg::Failed { job, error } => {
                    pending.remove(&job);
                    clip.remove(&job);
                    if failed.contains(&job) {
                        continue;
                    }
                    vec![Msg::Failed { job, error }]
                }
                Msg::Cancelled { job } => {
                    pending.remove(&job);
                    clip.remove(&job);
                    if failed.contains(&job) {
                        continue;
                    }
                    vec![Msg::Cancelled { job }]
                }
            };
            let mut out = out;
            // Nothing else queued: encode the whole groups waiting rather than wait for a full
            // batch (a live window or a slow decoder must not hold frames back).
            if rx.is_empty() {
                let ready: Vec<usize> = pending
                    .iter()
                    .filter(|(_, b)| b.len() >= fpg)
                    .map(|(j, _)| *j)
                    .collect();
                for job in ready {
                    let buf = pending.get_mut(&job).expect("listed above");
                    let whole = buf.len() / fpg * fpg;
                    let items: Vec<Prepped> = buf.drain(..whole).collect();
                    let c = clip.get(&job).copied().unwrap_or(self.max_frames);
                    out.extend(flush(job, items, c, &mut failed));
                }
            }
            for m in out {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
    }

    /// The chunk plan of a job once its input is open: (plan, span, expected frames, end time).
    fn plan(
        &self,
        spec: &JobSpec,
        info: &SourceInfo,
    ) -> (Plan, Option<f64>, Option<f64>, Option<f64>) {
        let cfg = self.config;
        let from = spec.from.unwrap_or(0.0);
        let end = match (info.duration.filter(|_| !info.live), spec.to) {
            (Some(d), Some(t)) => Some(d.min(t)),
            (Some(d), None) => Some(d),
            (None, _) => None,
        };
        let span = end.map(|e| (e - from).max(0.0));
        let expected =
            span.and_then(|s| expected_frames(&cfg.sampling.strategy, s, cfg.sampling.max_frames));
        let plan = Plan::resolve(
            cfg.chunking.policy,
            span,
            expected,
            self.max_frames,
            cfg.chunking.window,
        );
        (plan, span, expected, end)
    }

    /// One encoder call; every group's times are those of its first and last frame.
    fn encode(
        &self,
        jobs: &[usize],
        frames: &[VideoFrame],
        clip: Option<usize>,
    ) -> Result<Vec<VisualTokens>> {
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut model = lock(self.encoder);
            match clip {
                Some(c) => model.encode_clip_frames(frames, c),
                None => model.encode_frames(frames),
            }
        }));
        let elapsed = t0.elapsed();
        // Attribute the batch's time to its jobs by their share of frames.
        let share = elapsed / frames.len().max(1) as u32;
        self.metrics
            .add_time(Stage::Encode, None, elapsed - share * frames.len() as u32);
        for job in jobs {
            self.metrics.add_time(Stage::Encode, Some(*job), share);
        }
        let mut tokens = match result {
            Ok(r) => r?,
            Err(p) => {
                return Err(PipelineError::Panic {
                    stage: "encode",
                    message: panic_message(p.as_ref()),
                })
            }
        };
        let fpg = self.frames_per_group;
        if tokens.len() != frames.len().div_ceil(fpg) {
            return Err(PipelineError::Panic {
                stage: "encode",
                message: format!(
                    "the model returned {} token groups for {} frames ({fpg} frames a group)",
                    tokens.len(),
                    frames.len()
                ),
            });
        }
        // Times are ours by construction, whatever the model copied.
        for (t, f) in tokens.iter_mut().zip(frames.chunks(fpg)) {
            t.start = f[0].pts;
            t.end = f[f.len() - 1].pts;
        }
        self.metrics.add_encoded(frames.len() as u64);
        Ok(tokens)
    }

    fn pool_worker(&self, jobs: &[JobSpec], rx: Receiver<Msg<Encoded>>, tx: Sender<Msg<ChunkMsg>>) {
        struct PoolJob {
            chunker: Chunker,
            whole: bool,
            end: Option<f64>,
        }
        let rx = self.barrier(rx);
        let mut state: HashMap<usize, PoolJob> = HashMap::new();
        for msg in rx {
            let mut out: Vec<Msg<ChunkMsg>> = Vec::new();
            match msg {
                Msg::Start { job, info } => {
                    let from = jobs[job].from.unwrap_or(0.0);
                    let (plan, span, expected, end) = self.plan(&jobs[job], &info);
                    tracing::debug!(job, ?plan, ?span, ?expected, "chunk plan");
                    state.insert(
                        job,
                        PoolJob {
                            chunker: Chunker::new(plan, from),
                            whole: plan == Plan::Whole,
                            end,
                        },
                    );
                    out.push(Msg::Start { job, info });
                }
                Msg::Item { job, item } => {
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    let Some(st) = state.get_mut(&job) else {
                        continue;
                    };
                    let t0 = Instant::now();
                    let mut tokens = item.tokens;
                    if let Some(end) = st.end {
                        // A last frame may carry a pts a hair past the container's duration.
                        tokens.start = tokens.start.min(end);
                        tokens.end = tokens.end.min(end);
                    }
                    let whole = st.whole;
                    let closed = st.chunker.push(tokens, item.scene);
                    if let Some(raw) = closed {
                        match self.pool_chunk(raw, whole) {
                            Ok(c) => out.push(Msg::Item { job, item: c }),
                            Err(e) => {
                                state.remove(&job);
                                out.push(Msg::Failed {
                                    job,
                                    error: with_input(&jobs[job].input, &e),
                                });
                            }
                        }
                    }
                    self.metrics.add_time(Stage::Pool, Some(job), t0.elapsed());
                }
                Msg::End { job } => {
                    let Some(st) = state.remove(&job) else {
                        continue;
                    };
                    let t0 = Instant::now();
                    match st.chunker.finish(st.end) {
                        Some(raw) => match self.pool_chunk(raw, st.whole) {
                            Ok(c) => {
                                out.push(Msg::Item { job, item: c });
                                out.push(Msg::End { job });
                            }
                            Err(e) => out.push(Msg::Failed {
                                job,
                                error: with_input(&jobs[job].input, &e),
                            }),
                        },
                        None => out.push(Msg::End { job }),
                    }
                    self.metrics.add_time(Stage::Pool, Some(job), t0.elapsed());
                }
                Msg::Failed { job, error } => {
                    state.remove(&job);
                    out.push(Msg::Failed { job, error });
                }
                Msg::Cancelled { job } => {
                    state.remove(&job);
                    out.push(Msg::Cancelled { job });
                }
            }
            for m in out {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
    }

    fn pool_chunk(&self, raw: RawChunk, whole: bool) -> Result<ChunkMsg> {
        let groups = self.config.pooling.method.apply(raw.groups)?;
        let groups = thin(groups, self.group_budget());
        self.metrics.add_groups(groups.len() as u64);
        tracing::debug!(
            index = raw.index,
            start = raw.start,
            end = raw.end,
            groups = groups.len(),
            "chunk closed"
        );
        Ok(ChunkMsg {
            start: raw.start,
            end: raw.end,
            whole,
            groups,
        })
    }

    fn llm_worker(&self, jobs: &[JobSpec], rx: Receiver<Msg<ChunkMsg>>, events: Sender<Event>) {
        let rx = self.barrier(rx);
        let mut state: HashMap<usize, LlmJob> = HashMap::new();
        // Jobs with a final event: later messages for them (an upstream error after the model
        // already failed the job) are dropped, so every job ends exactly once.
        let mut ended: HashSet<usize> = HashSet::new();
        for msg in rx {
            if let Msg::Failed { job, .. } = &msg {
                if !ended.insert(*job) {
                    continue;
                }
            }
            match msg {
                Msg::Start { job, info } => {
                    state.insert(
                        job,
                        LlmJob {
                            duration: info.duration,
                            fps: info.fps,
                            ..LlmJob::default()
                        },
                    );
                    let _ = events.send(Event::Started { job, info });
                }
                Msg::Item { job, item } => {
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    let Some(st) = state.get_mut(&job) else {
                        continue;
                    };
                    match self.on_chunk(job, &jobs[job], st, item) {
                        Ok(Some(segment)) => {
                            let _ = events.send(Event::Segment { job, segment });
                        }
                        Ok(None) => {}
                        // Cancelled mid-generation: no event, the run reports it as cancelled.
                        Err(PipelineError::Cancelled) => {
                            state.remove(&job);
                        }
                        Err(e) => {
                            state.remove(&job);
                            ended.insert(job);
                            let _ = events.send(Event::Failed {
                                job,
                                error: with_input(&jobs[job].input, &e),
                            });
                        }
                    }
                }
                Msg::End { job } => {
                    let Some(st) = state.remove(&job) else {
                        continue;
                    };
                    if self.cancel.is_cancelled() {
                        continue;
                    }
                    ended.insert(job);
                    let ev = match self.finish(job, &jobs[job], st, &events) {
                        Ok(output) => Event::Finished { job, output },
                        Err(PipelineError::Cancelled) => continue,
                        Err(e) => Event::Failed {
                            job,
                            error: with_input(&jobs[job].input, &e),
                        },
                    };
                    let _ = events.send(ev);
                }
                Msg::Failed { job, error } => {
                    state.remove(&job);
                    let _ = events.send(Event::Failed { job, error });
                }
                Msg::Cancelled { job } => {
                    state.remove(&job);
                }
            }
        }
    }

    /// One model call; the text trimmed (descriptions and summaries).
    fn generate(
        &self,
        st: &mut LlmJob,
        groups: &[VisualTokens],
        prompt: &str,
        job: usize,
    ) -> Result<String> {
        Ok(self
            .generate_raw(st, groups, prompt, job, &mut |_| {})?
            .text
            .trim()
            .to_string())
    }

    /// One model call over `groups` of the job's video (the model is told the video's duration and
    /// frame rate with them), counted in the job's usage and the run's metrics; `on_text` gets the
    /// text as it is decoded.
    fn generate_raw(
        &self,
        st: &mut LlmJob,
        groups: &[VisualTokens],
        prompt: &str,
        job: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let params = vidlm_models::GenerationParams {
            stop: Some(self.cancel.stop_flag()),
            ..self.config.generation.params()
        };
        let clip = Clip::new(groups.to_vec()).with_video(st.duration, st.fps);
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            lock(self.llm).generate(&clip, prompt, &params, on_text)
        }));
        self.metrics.add_time(Stage::Llm, Some(job), t0.elapsed());
        let usage = &mut st.usage;
        let g = match result {
            Ok(r) => r?,
            Err(p) => {
                return Err(PipelineError::Panic {
                    stage: "llm",
                    message: panic_message(p.as_ref()),
                })
            }
        };
        usage.add(&g);
        self.metrics
            .add_tokens(g.prompt_tokens as u64, g.token_ids.len() as u64);
        if g.finish == vidlm_models::FinishReason::Cancelled {
            // A cut-off text is not a result: the job ends as cancelled.
            return Err(PipelineError::Cancelled);
        }
        Ok(g)
    }

    /// Handles one chunk: describes it (summaries, and the map step of long asks) or keeps it.
    fn on_chunk(
        &self,
        job: usize,
        spec: &JobSpec,
        st: &mut LlmJob,
        chunk: ChunkMsg,
    ) -> Result<Option<Segment>> {
        st.frames += chunk.groups.len();
        let range = TimeRange {
            start: chunk.start,
            end: chunk.end,
        };
        if chunk.whole {
            st.whole = true;
        }
        match &spec.task {
            Task::Ask { .. } if chunk.whole => {
                st.kept.push((range, chunk.groups));
                Ok(None)
            }
            task => {
                let prompts = &self.config.prompts;
                let template = if chunk.whole {
                    &prompts.describe_clip
                } else {
                    &prompts.describe_chunk
                };
                let prompt = fill(
                    template,
                    &[
                        ("start", format_clock(chunk.start)),
                        ("end", format_clock(chunk.end)),
                        (
                            "duration",
                            st.duration.map(format_clock).unwrap_or_default(),
                        ),
                    ],
                );
                let text = self.generate(st, &chunk.groups, &prompt, job)?;
                let segment = Segment::grid(chunk.start, chunk.end, text);
                st.described.push(segment.clone());
                if let Some(first) = chunk.groups.first() {
                    st.reps.push(first.clone());
                }
                if matches!(task, Task::Ask { .. }) {
                    st.kept.push((range, chunk.groups));
                }
                Ok(Some(segment))
            }
        }
    }

    fn finish(
        &self,
        job: usize,
        spec: &JobSpec,
        mut st: LlmJob,
        events: &Sender<Event>,
    ) -> Result<JobOutput> {
        match &spec.task {
            Task::Summarize => {
                if st.described.is_empty() {
                    return Err(no_frames(&spec.input));
                }
                let chunks = std::mem::take(&mut st.described);
                // Where a description says when things happen, its times replace the grid's
                // (checked against the chunk's range).
                let timed: Vec<Segment> = chunks
                    .iter()
                    .flat_map(|c| {
                        model_segments(&c.text, c.start, c.end).unwrap_or_else(|| vec![c.clone()])
                    })
                    .collect();
                let segments = merge_similar(timed, self.config.chunking.merge_threshold);
                let summary = if chunks.len() == 1 {
                    chunks[0].text.clone()
                } else {
                    self.reduce(&mut st, &segments, job)?
                };
                Ok(JobOutput::Summary(SummaryOutput {
                    duration: st.duration,
                    chunks,
                    segments,
                    summary,
                    frames: st.frames,
                    usage: st.usage,
                    timings: self.timings(job),
                }))
            }
            Task::Ask { question } => {
                if st.kept.is_empty() {
                    return Err(no_frames(&spec.input));
                }
                let selected: Vec<usize> = if st.whole {
                    (0..st.kept.len()).collect()
                } else {
                    select_chunks(question, &st.described, &st.kept, self.group_budget())
                };
                let mut evidence = Vec::new();
                let mut groups = Vec::new();
                for i in selected {
                    let (range, g) = &st.kept[i];
                    evidence.push(*range);
                    groups.extend(g.iter().cloned());
                }
                let groups = thin(groups, self.group_budget());
                let prompt = fill(&self.config.prompts.ask, &[("question", question.clone())]);
                let mut stream = |text: &str| {
                    let _ = events.send(Event::AnswerText {
                        job,
                        text: text.to_string(),
                    });
                };
                let g = self.generate_raw(&mut st, &groups, &prompt, job, &mut stream)?;
                Ok(JobOutput::Answer(AnswerOutput {
                    duration: st.duration,
                    answer: g.text,
                    token_ids: g.token_ids,
                    evidence,
                    frames: groups.iter().map(|g| g.start).collect(),
                    chunks: st.described,
                    usage: st.usage,
                    timings: self.timings(job),
                }))
            }
        }
    }

    /// A text-only prompt (the reduce step). A model that needs frames in every prompt gets one
    /// frame group per chunk (thinned to its budget) along with the text.
    fn generate_text(&self, st: &mut LlmJob, prompt: &str, job: usize) -> Result<String> {
        match self.generate(st, &[], prompt, job) {
            Err(PipelineError::Model(vidlm_models::ModelError::Input(why)))
                if !st.reps.is_empty() =>
            {
                tracing::debug!("text-only prompt refused ({why}); adding one frame per chunk");
                let reps = thin(st.reps.clone(), self.group_budget());
                self.generate(st, &reps, prompt, job)
            }
            other => other,
        }
    }

    /// Visual-token groups one prompt may carry: the frame budget over the frames per group.
    fn group_budget(&self) -> usize {
        (self.max_frames / self.frames_per_group.max(1)).max(1)
    }

    fn timings(&self, job: usize) -> JobTimings {
        JobTimings {
            stages: self.metrics.job_seconds(job),
            total: self.metrics.job_elapsed(job),
        }
    }

    /// The overall summary from timestamped segment texts, in rounds when they are too long for
    /// one prompt: consecutive segments are summarized in groups, then the group summaries.
    fn reduce(&self, st: &mut LlmJob, segments: &[Segment], job: usize) -> Result<String> {
        let max_chars = self.config.chunking.reduce_max_chars.max(1);
        let line = |s: &Segment| {
            format!(
                "[{} - {}] {}",
                format_clock(s.start),
                format_clock(s.end),
                s.text
            )
        };
        let duration = st
            .duration
            .or(segments.last().map(|s| s.end))
            .map(format_clock)
            .unwrap_or_default();
        let mut level: Vec<Segment> = segments.to_vec();
        loop {
            let total: usize = level.iter().map(|s| line(s).len() + 1).sum();
            let mut groups: Vec<Vec<Segment>> = Vec::new();
            if total > max_chars && level.len() > 1 {
                let mut cur: Vec<Segment> = Vec::new();
                let mut chars = 0;
                for s in level.iter() {
                    let n = line(s).len() + 1;
                    if !cur.is_empty() && chars + n > max_chars {
                        groups.push(std::mem::take(&mut cur));
                        chars = 0;
                    }
                    chars += n;
                    cur.push(s.clone());
                }
                groups.push(cur);
            }
            // One group left (or no progress possible): the final summary.
            if groups.len() <= 1 || groups.len() == level.len() {
                let text = level.iter().map(line).collect::<Vec<_>>().join("\n");
                let prompt = fill(
                    &self.config.prompts.summarize,
                    &[("segments", text), ("duration", duration.clone())],
                );
                return self.generate_text(st, &prompt, job);
            }
            let mut next = Vec::with_capacity(groups.len());
            for g in groups {
                let text = g.iter().map(line).collect::<Vec<_>>().join("\n");
                let prompt = fill(
                    &self.config.prompts.summarize,
                    &[("segments", text), ("duration", duration.clone())],
                );
                let summary = self.generate_text(st, &prompt, job)?;
                next.push(Segment::grid(g[0].start, g[g.len() - 1].end, summary));
            }
            level = next;
        }
    }
}

#[derive(Default)]
struct LlmJob {
    duration: Option<f64>,
    fps: Option<f64>,
    whole: bool,
    frames: usize,
    described: Vec<Segment>,
    kept: Vec<(TimeRange, Vec<VisualTokens>)>,
    /// The first group of each described chunk, for models that cannot take text-only prompts.
    reps: Vec<VisualTokens>,
    usage: Usage,
}

fn no_frames(input: &str) -> PipelineError {
    PipelineError::Input {
        input: input.to_string(),
        reason: "no frames were sampled (check --sample and --from/--to)".into(),
    }
}

/// An error message that names the input (media errors already do).
fn with_input(input: &str, e: &dyn std::fmt::Display) -> String {
    // One line: candle may append a backtrace to its messages.
    let full = e.to_string();
    let s = full.lines().next().unwrap_or_default().to_string();
    if s.starts_with(input) {
        s
    } else {
        format!("{input}: {s}")
    }
}

/// Frames one prompt of `plan` will carry (the whole clip, or one chunk or window at the sampling
/// rate), at most `max_frames`; `max_frames` when the rate is unknown (`keyframes`, `scene:T`,
/// `all`). Sizes the encoder calls of models whose pixel budget covers a whole clip.
fn clip_frames(
    plan: Plan,
    span: Option<f64>,
    expected: Option<f64>,
    strategy: &str,
    max_frames: usize,
) -> usize {
    // The strategy's rate, unless sampling.max_frames lowered it for this job: then the job's.
    let uncapped = span.and_then(|s| expected_frames(strategy, s, None));
    let per = |secs: f64| match (span, expected) {
        (Some(s), Some(n)) if s > 0.0 && uncapped != expected => Some((n / s * secs).ceil()),
        _ => expected_frames(strategy, secs, None),
    };
    let n = match plan {
        Plan::Whole => expected,
        Plan::Grid { len } => per(len),
        Plan::Scene { max, .. } => per(max),
    };
    n.map_or(max_frames, |n| (n.max(1.0) as usize).min(max_frames))
}

/// Replaces `{name}` placeholders.
pub(crate) fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Keeps at most `max` groups, spread uniformly (their own times kept).
pub(crate) fn thin<T>(groups: Vec<T>, max: usize) -> Vec<T> {
    let n = groups.len();
    if n <= max || max == 0 {
        return groups;
    }
    let keep: HashSet<usize> = (0..max).map(|k| ((2 * k + 1) * n) / (2 * max)).collect();
    groups
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, g)| g)
        .collect()
}

/// Ranks chunks by how many of the question's words their descriptions contain (rarer words
/// weigh more; words in every description weigh nothing) and takes the best ones while their frames fit the budget; returns chunk indices
/// in time order. With no word in common, the first chunk wins (ties keep time order).
pub(crate) fn select_chunks(
    question: &str,
    described: &[Segment],
    kept: &[(TimeRange, Vec<VisualTokens>)],
    max_frames: usize,
) -> Vec<usize> {
    const STOP: &[&str] = &[
        "the", "a", "an", "is", "are", "was", "were", "what", "who", "when", "where", "which",
        "how", "why", "does", "do", "did", "in", "on", "of", "to", "and", "or", "this", "that",
        "video", "there", "it", "its", "with", "for", "at", "by", "from", "be",
    ];
    let docs: Vec<HashSet<String>> = described
        .iter()
        .map(|s| words(&s.text).into_iter().collect())
        .collect();
    let query: HashSet<String> = words(question)
        .into_iter()
        .filter(|w| !STOP.contains(&w.as_str()))
        .collect();
    let n = docs.len() as f64;
    let mut scored: Vec<(f64, usize)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let score = query
                .iter()
                .filter(|w| d.contains(*w))
                .map(|w| {
                    // A word every description has tells the chunks apart not at all.
                    let df = docs.iter().filter(|o| o.contains(w)).count() as f64;
                    (n / df).ln()
                })
                .sum::<f64>();
            (score, i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen = Vec::new();
    let mut frames = 0;
    for (score, i) in scored {
        let len = kept.get(i).map_or(0, |k| k.1.len());
        if chosen.is_empty() || (score > 0.0 && frames + len <= max_frames) {
            chosen.push(i);
            frames += len;
        }
    }
    chosen.sort_unstable();
    chosen
}

/// A 32x32 picture of mean luma (BT.601), for cheap scene scores.
fn luma_thumbnail(rgb: &[u8], width: u32, height: u32) -> Vec<u8> {
    const N: usize = 32;
    let (w, h) = (width as usize, height as usize);
    let mut sums = vec![0f32; N * N];
    let mut counts = vec![0u32; N * N];
    if w == 0 || h == 0 || rgb.len() < w * h * 3 {
        return vec![0; N * N];
    }
    // Every other row and column is plenty for a 32x32 average of a large picture.
    let step = if w >= 4 * N && h >= 4 * N { 2 } else { 1 };
    for y in (0..h).step_by(step) {
        let cy = y * N / h;
        let row = &rgb[y * w * 3..(y + 1) * w * 3];
        for x in (0..w).step_by(step) {
            let cx = x * N / w;
            let p = &row[x * 3..x * 3 + 3];
            sums[cy * N + cx] += 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            counts[cy * N + cx] += 1;
        }
    }
    sums.iter()
        .zip(&counts)
        .map(|(s, c)| (s / (*c).max(1) as f32).round().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thin_keeps_a_uniform_subset_in_order() {
        assert_eq!(thin((0..10).collect::<Vec<_>>(), 4), vec![1, 3, 6, 8]);
        assert_eq!(thin((0..3).collect::<Vec<_>>(), 4), vec![0, 1, 2]);
        assert_eq!(thin((0..5).collect::<Vec<_>>(), 1), vec![2]);
    }

    #[test]
    fn clip_frames_follow_the_plan_and_the_rate() {
        // A 5.28 s clip at fps:2 in one prompt: the 11 expected frames.
        assert_eq!(
            clip_frames(Plan::Whole, Some(5.28), Some(11.0), "fps:2", 768),
            11
        );
        // A 2 s grid at fps:2: 4 frames.
        let grid = |len, span, n| clip_frames(Plan::Grid { len }, span, n, "fps:2", 768);
        assert_eq!(grid(2.0, Some(5.28), Some(11.0)), 4);
        // sampling.max_frames lowered the rate (600 s at fps:2 capped to 300 frames): the job's.
        assert_eq!(grid(30.0, Some(600.0), Some(300.0)), 15);
        // Live: 30 s windows at fps:2.
        assert_eq!(
            clip_frames(Plan::Grid { len: 30.0 }, None, None, "fps:2", 768),
            60
        );
        // Capped by the budget; unknown rates take the budget.
        assert_eq!(
            clip_frames(Plan::Whole, Some(600.0), Some(1200.0), "fps:2", 768),
            768
        );
        assert_eq!(
            clip_frames(Plan::Grid { len: 30.0 }, None, None, "keyframes", 64),
            64
        );
    }

    #[test]
    fn fill_replaces_placeholders() {
        assert_eq!(
            fill(
                "from {start} to {end}: {start}",
                &[("start", "0:01".into()), ("end", "0:02".into())]
            ),
            "from 0:01 to 0:02: 0:01"
        );
    }

    #[test]
    fn selects_chunks_that_mention_the_question() {
        let seg = |t: &str| Segment::grid(0.0, 1.0, t);
        let described = vec![
            seg("a dog sleeps"),
            seg("a red car drives"),
            seg("the dog runs to a car"),
        ];
        let kept: Vec<(TimeRange, Vec<VisualTokens>)> = (0..3)
            .map(|i| {
                (
                    TimeRange {
                        start: i as f64,
                        end: i as f64 + 1.0,
                    },
                    Vec::new(),
                )
            })
            .collect();
        assert_eq!(
            select_chunks("Where is the red car?", &described, &kept, 8),
            vec![1, 2]
        );
        assert_eq!(select_chunks("zebra?", &described, &kept, 8), vec![0]);
    }

    #[test]
    fn scene_score_sees_a_cut() {
        let black = luma_thumbnail(&vec![0u8; 64 * 48 * 3], 64, 48);
        let white = luma_thumbnail(&vec![255u8; 64 * 48 * 3], 64, 48);
        assert!(white.iter().all(|v| *v == 255));
        let mut d = vidlm_media::SceneDetector::default();
        assert_eq!(d.push(&black), 0.0);
        assert_eq!(d.push(&black), 0.0);
        assert!(d.push(&white) > 0.9);
    }
}
