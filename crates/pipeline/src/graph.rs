//! The staged worker graph: decode -> preprocess -> encode -> pool -> LLM, run by [`Graph::run`].
//!
//! Each stage (in [`crate::stages`]) runs on its own thread(s) and hands owned messages to the next
//! through a bounded `crossbeam-channel` queue, so a slow language model blocks the pooling stage,
//! which blocks the encoder, which blocks decoding: frames never pile up in memory. Decoding runs
//! `workers.decode` videos at once; the encoder batches frames from all of them into one call; one
//! thread drives the language model (the model is not `Sync`). Every message carries its job, and
//! errors travel down the graph as messages, so one failing video never stops the others.

use std::collections::HashMap;
use std::sync::Mutex;

use crossbeam_channel::{bounded, unbounded, Receiver};
use vidlm_models::VisionLanguageModel;

use crate::cache::{CacheKey, VisualCache};
use crate::chunking::Plan;
use crate::job::{Event, JobSpec};
use crate::metrics::Metrics;
use crate::source::{expected_frames, SampledFrame, SourceInfo, SourceOpener};
use crate::stages::{ChunkMsg, Encoded, Prepped};
use crate::{CancelToken, JobError, PipelineConfig, PipelineError};

/// A message between stages; `T` is the stage's payload.
pub(crate) enum Msg<T> {
    Start {
        job: usize,
        info: SourceInfo,
        plan: JobPlan,
    },
    Item {
        job: usize,
        item: T,
    },
    End {
        job: usize,
    },
    Failed {
        job: usize,
        error: JobError,
    },
    Cancelled {
        job: usize,
    },
}

impl<T> Msg<T> {
    /// The same control message with another payload type (`None` for an item).
    pub(crate) fn control<U>(self) -> Option<Msg<U>> {
        match self {
            Msg::Item { .. } => None,
            Msg::Start { job, info, plan } => Some(Msg::Start { job, info, plan }),
            Msg::End { job } => Some(Msg::End { job }),
            Msg::Failed { job, error } => Some(Msg::Failed { job, error }),
            Msg::Cancelled { job } => Some(Msg::Cancelled { job }),
        }
    }
}

/// How a job's frames become prompts, decided once its input is open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobPlan {
    /// Whole clip, fixed grid or windows.
    pub plan: Plan,
    /// Seconds between `--from` and the end, when the end is known.
    pub span: Option<f64>,
    /// Frames the sampler is expected to yield, when the rate and span are known.
    pub expected: Option<f64>,
    /// The job's end time (the duration, or `--to` when sooner), when known.
    pub end: Option<f64>,
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
    /// The encoder's pixel step, when it runs apart from the encoder (on the preprocess threads).
    pub pixel_step: Option<std::sync::Arc<dyn vidlm_models::PixelStep>>,
    pub metrics: &'a Metrics,
    pub cancel: &'a CancelToken,
    /// The visual-token cache, when the pipeline has one.
    pub cache: Option<RunCache<'a>>,
}

/// The visual-token cache as one run sees it.
pub(crate) struct RunCache<'a> {
    pub cache: &'a VisualCache,
    /// The model part of every key ([`crate::cache::model_identity`]).
    pub model: &'a str,
    /// Where tokens read from disk are put: the encoder's device.
    pub device: candle_core::Device,
    /// Keys of the jobs that missed, stored by the pool stage once their encoding is complete.
    pub pending: Mutex<HashMap<usize, CacheKey>>,
}

pub(crate) fn lock<'m>(
    m: &'m Mutex<Box<dyn VisionLanguageModel>>,
) -> std::sync::MutexGuard<'m, Box<dyn VisionLanguageModel>> {
    // A model call that panicked was caught and reported; the model itself stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Graph<'_> {
    /// Frames one prompt of the job will carry ([`clip_frames`] of its plan): how a model whose
    /// resize depends on the frame count sizes each frame.
    pub(crate) fn clip_len(&self, plan: &JobPlan) -> usize {
        clip_frames(
            plan.plan,
            plan.span,
            plan.expected,
            &self.config.sampling.strategy,
            self.max_frames,
        )
    }

    /// Visual-token groups one prompt may carry: the frame budget over the frames per group.
    pub(crate) fn group_budget(&self) -> usize {
        (self.max_frames / self.frames_per_group.max(1)).max(1)
    }

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
                // Cache hits skip preprocess and encode: their tokens go straight to pooling.
                let hits = pool_tx.clone();
                std::thread::Builder::new()
                    .name(format!("vidlm-decode-{i}"))
                    .spawn_scoped(s, move || self.decode_worker(jobs, job_rx, pre_txs, hits))
                    .expect("spawn decode thread");
            }
            drop(pre_txs);
            for (i, rx) in pre_rxs.into_iter().enumerate() {
                let tx = enc_tx.clone();
                std::thread::Builder::new()
                    .name(format!("vidlm-preprocess-{i}"))
                    .spawn_scoped(s, move || self.preprocess_worker(jobs, rx, tx))
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

    /// With `workers.overlap = false`, a stage first takes everything its upstream produces and
    /// only then starts: the stages run one after another (the baseline of the benchmark).
    pub(crate) fn barrier<T>(&self, rx: Receiver<T>) -> Receiver<T> {
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

    /// The chunk plan of a job once its input is open (computed once, by the decode stage, and
    /// carried in [`Msg::Start`]).
    pub(crate) fn plan(&self, spec: &JobSpec, info: &SourceInfo) -> JobPlan {
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
        JobPlan {
            plan,
            span,
            expected,
            end,
        }
    }
}

impl Graph<'_> {
    /// The cache key of a job, or `None` when its input is not a local file (stdin, URLs and
    /// live streams are not cached) or cannot be read (the decoder then reports why).
    pub(crate) fn cache_key(&self, rc: &RunCache<'_>, spec: &JobSpec) -> Option<CacheKey> {
        let input = spec.input.strip_prefix("file://").unwrap_or(&spec.input);
        let path = std::path::Path::new(input);
        if crate::is_live_input(input) || input.contains("://") || !path.is_file() {
            tracing::debug!(input = %spec.input, "not a local file: visual-token cache bypassed");
            return None;
        }
        let t0 = std::time::Instant::now();
        let content = match crate::cache::content_hash(path) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(input = %spec.input, error = %e, "visual-token cache bypassed");
                return None;
            }
        };
        tracing::debug!(input = %spec.input, seconds = t0.elapsed().as_secs_f64(), "content hashed");
        let cfg = self.config;
        let s = &cfg.sampling;
        let mut text = format!(
            "vidlm visual tokens v{}\ncontent={content}\nsampling={:?}|{:?}|{:?}|{:?}|{:?}\npooling={}\nmodel={}",
            crate::cache::FORMAT_VERSION,
            s.strategy,
            spec.from,
            spec.to,
            s.max_frames,
            s.size,
            cfg.pooling.method,
            rc.model,
        );
        if self.frames_per_group > 1 {
            // A frame-pair encoder sizes its calls by the frames of one prompt (`clip_len`).
            text.push_str(&format!(
                "\nchunking={}|{}",
                cfg.chunking.policy, cfg.chunking.window
            ));
        }
        Some(CacheKey::new(text))
    }
}

pub(crate) fn no_frames(input: &str) -> PipelineError {
    PipelineError::Input {
        input: input.to_string(),
        reason: "no frames were sampled (check --sample and --from/--to)".into(),
    }
}

/// A stage's error as the job's failure, naming its input.
pub(crate) fn with_input(input: &str, e: impl Into<PipelineError>) -> JobError {
    JobError::new(input, e)
}

/// Frames one prompt of `plan` will carry (the whole clip, or one chunk or window at the sampling
/// rate), at most `max_frames`; `max_frames` when the rate is unknown (`keyframes`, `scene:T`,
/// `all`). Sizes the encoder calls of models whose pixel budget covers a whole clip.
pub(crate) fn clip_frames(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
