//! The decode stage: opens each job's input and yields its sampled frames (decode + sample).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::error::panic_message;
use crate::graph::{with_input, Graph, Msg};
use crate::job::JobSpec;
use crate::metrics::CacheStatus;
use crate::metrics::Stage;
use crate::source::{SampleRequest, SampledFrame};
use crate::stages::Encoded;
use crate::PipelineError;

impl Graph<'_> {
    pub(crate) fn decode_worker(
        &self,
        jobs: &[JobSpec],
        job_rx: Receiver<usize>,
        out: Vec<Sender<Msg<SampledFrame>>>,
        hits: Sender<Msg<Encoded>>,
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
            match self.serve_from_cache(job, spec, &hits) {
                Some(true) => continue,
                Some(false) => {}
                None => return,
            }
            let t0 = Instant::now();
            let opened = self.opener.open(&spec.input, &request);
            self.metrics
                .add_time(Stage::Decode, Some(job), t0.elapsed());
            let mut source = match opened {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Msg::Failed {
                        job,
                        error: with_input(&spec.input, e),
                    });
                    continue;
                }
            };
            let info = source.info().clone();
            let plan = self.plan(spec, &info);
            if tx.send(Msg::Start { job, info, plan }).is_err() {
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
                        error: with_input(&spec.input, e),
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
}

impl Graph<'_> {
    /// Looks the job up in the cache: on a hit sends its tokens straight to the pool stage and
    /// returns `Some(true)`; on a miss notes its key for the pool stage and returns `Some(false)`;
    /// `None` when the pool stage is gone.
    fn serve_from_cache(
        &self,
        job: usize,
        spec: &JobSpec,
        hits: &Sender<Msg<Encoded>>,
    ) -> Option<bool> {
        let Some(rc) = &self.cache else {
            return Some(false);
        };
        let t0 = Instant::now();
        let Some(key) = self.cache_key(rc, spec) else {
            self.metrics.set_cache(job, CacheStatus::Bypass);
            return Some(false);
        };
        let found = rc.cache.get(&key, &rc.device);
        self.metrics
            .add_time(Stage::Decode, Some(job), t0.elapsed());
        let Some(clip) = found else {
            tracing::info!(input = %spec.input, "visual-token cache miss");
            self.metrics.set_cache(job, CacheStatus::Miss);
            rc.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job, key);
            return Some(false);
        };
        tracing::info!(input = %spec.input, groups = clip.groups.len(), "visual-token cache hit");
        self.metrics.set_cache(job, CacheStatus::Hit);
        let info = clip.info.clone();
        let plan = self.plan(spec, &info);
        hits.send(Msg::Start { job, info, plan }).ok()?;
        for (tokens, scene) in &clip.groups {
            if self.cancel.is_cancelled() {
                hits.send(Msg::Cancelled { job }).ok()?;
                return Some(true);
            }
            let item = Encoded {
                tokens: tokens.clone(),
                scene: *scene,
            };
            hits.send(Msg::Item { job, item }).ok()?;
        }
        hits.send(Msg::End { job }).ok()?;
        Some(true)
    }
}
