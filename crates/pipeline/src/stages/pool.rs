//! The pool stage: temporal/spatial token pooling and chunking into prompts.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use vidlm_models::VisualTokens;

use crate::cache::{CacheKey, CachedClip};
use crate::chunking::{Chunker, Plan, RawChunk};
use crate::graph::{with_input, Graph, Msg};
use crate::job::JobSpec;
use crate::metrics::Stage;
use crate::stages::llm::thin;
use crate::stages::Encoded;
use crate::Result;

pub(crate) struct ChunkMsg {
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) whole: bool,
    pub(crate) groups: Vec<VisualTokens>,
}

impl Graph<'_> {
    pub(crate) fn pool_worker(
        &self,
        jobs: &[JobSpec],
        rx: Receiver<Msg<Encoded>>,
        tx: Sender<Msg<ChunkMsg>>,
    ) {
        struct PoolJob {
            chunker: Chunker,
            whole: bool,
            end: Option<f64>,
        }
        let rx = self.barrier(rx);
        let mut state: HashMap<usize, PoolJob> = HashMap::new();
        // Jobs that missed the cache: their encoder output as it comes, stored at their end.
        let mut storing: HashMap<usize, (CacheKey, CachedClip)> = HashMap::new();
        for msg in rx {
            let mut out: Vec<Msg<ChunkMsg>> = Vec::new();
            match &msg {
                Msg::Start { job, info, .. } => {
                    let key = self.cache.as_ref().and_then(|rc| {
                        rc.pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(job)
                    });
                    if let Some(key) = key {
                        let clip = CachedClip {
                            info: info.clone(),
                            groups: Vec::new(),
                        };
                        storing.insert(*job, (key, clip));
                    }
                }
                Msg::Item { job, item } => {
                    if let Some((_, clip)) = storing.get_mut(job) {
                        clip.groups.push((item.tokens.clone(), item.scene));
                    }
                }
                Msg::End { job } => {
                    if let (Some((key, clip)), Some(rc)) = (storing.remove(job), &self.cache) {
                        if !self.cancel.is_cancelled() && state.contains_key(job) {
                            let t0 = Instant::now();
                            rc.cache.put(&key, clip);
                            tracing::debug!(
                                job,
                                seconds = t0.elapsed().as_secs_f64(),
                                "visual tokens cached"
                            );
                        }
                    }
                }
                Msg::Failed { job, .. } | Msg::Cancelled { job } => {
                    storing.remove(job);
                }
            }
            match msg {
                Msg::Start { job, info, plan } => {
                    let from = jobs[job].from.unwrap_or(0.0);
                    tracing::debug!(job, ?plan, "chunk plan");
                    state.insert(
                        job,
                        PoolJob {
                            chunker: Chunker::new(plan.plan, from),
                            whole: plan.plan == Plan::Whole,
                            end: plan.end,
                        },
                    );
                    out.push(Msg::Start { job, info, plan });
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
                                    error: with_input(&jobs[job].input, e),
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
                                error: with_input(&jobs[job].input, e),
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
}
