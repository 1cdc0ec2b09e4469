//! The decode stage: opens each job's input and yields its sampled frames (decode + sample).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::error::panic_message;
use crate::graph::{with_input, Graph, Msg};
use crate::job::JobSpec;
use crate::metrics::Stage;
use crate::source::{SampleRequest, SampledFrame};
use crate::PipelineError;

impl Graph<'_> {
    pub(crate) fn decode_worker(
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
