//! The encode stage: the vision encoder, batching frames across videos.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use vidlm_models::VisualTokens;

use crate::error::panic_message;
use crate::graph::{lock, with_input, Graph, Msg};
use crate::job::JobSpec;
use crate::metrics::Stage;
use crate::stages::{Prepped, PreppedFrame};
use crate::{PipelineError, Result};

pub(crate) struct Encoded {
    pub(crate) tokens: VisualTokens,
    pub(crate) scene: Option<f32>,
}

impl Graph<'_> {
    pub(crate) fn encode_worker(
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
        let (frames, scenes): (Vec<PreppedFrame>, Vec<Option<f32>>) =
            items.into_iter().map(|p| (p.frame, p.scene)).unzip();
        let (result, frames) = self.encode(&jobs, frames, None);
        match result {
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
                    error: with_input(&specs[job].input, e),
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
            let (frames, scenes): (Vec<PreppedFrame>, Vec<Option<f32>>) =
                items.into_iter().map(|p| (p.frame, p.scene)).unzip();
            let jobs_of = vec![job; frames.len()];
            match self.encode(&jobs_of, frames, Some(clip)).0 {
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
                        error: with_input(&jobs[job].input, e),
                    }]
                }
            }
        };
        for msg in rx.iter() {
            let out: Vec<Msg<Encoded>> = match msg {
                Msg::Start { job, info, plan } => {
                    clip.insert(job, self.clip_len(&plan));
                    vec![Msg::Start { job, info, plan }]
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

    /// One encoder call; every group's times are those of its first and last frame. Frames
    /// through the pixel step go to `encode_frame_pixels`, others to `encode_(clip_)frames`.
    /// The frames are handed back (a failed batch is retried job by job).
    fn encode(
        &self,
        jobs: &[usize],
        frames: Vec<PreppedFrame>,
        clip: Option<usize>,
    ) -> (Result<Vec<VisualTokens>>, Vec<PreppedFrame>) {
        let t0 = Instant::now();
        let pts: Vec<f64> = frames.iter().map(PreppedFrame::pts).collect();
        let (mut pixels, mut raw) = (Vec::new(), Vec::new());
        for f in frames {
            match f {
                PreppedFrame::Pixels(p) => pixels.push(p),
                PreppedFrame::Frame(f) => raw.push(f),
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut model = lock(self.encoder);
            match (clip, pixels.is_empty()) {
                (_, false) if raw.is_empty() => {
                    model.encode_frame_pixels(&pixels, clip.unwrap_or(pixels.len()))
                }
                (_, false) => Err(vidlm_models::ModelError::Input(
                    "a batch mixes frames with and without the pixel step".into(),
                )),
                (Some(c), true) => model.encode_clip_frames(&raw, c),
                (None, true) => model.encode_frames(&raw),
            }
        }));
        let elapsed = t0.elapsed();
        // Attribute the batch's time to its jobs by their share of frames.
        let share = elapsed / pts.len().max(1) as u32;
        self.metrics
            .add_time(Stage::Encode, None, elapsed - share * pts.len() as u32);
        for job in jobs {
            self.metrics.add_time(Stage::Encode, Some(*job), share);
        }
        let tokens = match result {
            Ok(r) => r.map_err(PipelineError::from),
            Err(p) => Err(PipelineError::Panic {
                stage: "encode",
                message: panic_message(p.as_ref()),
            }),
        };
        let back: Vec<PreppedFrame> = pixels
            .into_iter()
            .map(PreppedFrame::Pixels)
            .chain(raw.into_iter().map(PreppedFrame::Frame))
            .collect();
        (tokens.and_then(|t| self.check_groups(t, &pts)), back)
    }

    /// The encoder's groups, checked against the frames and stamped with their times.
    fn check_groups(
        &self,
        mut tokens: Vec<VisualTokens>,
        pts: &[f64],
    ) -> Result<Vec<VisualTokens>> {
        let fpg = self.frames_per_group;
        if tokens.len() != pts.len().div_ceil(fpg) {
            return Err(PipelineError::Panic {
                stage: "encode",
                message: format!(
                    "the model returned {} token groups for {} frames ({fpg} frames a group)",
                    tokens.len(),
                    pts.len()
                ),
            });
        }
        // Times are ours by construction, whatever the model copied.
        for (t, f) in tokens.iter_mut().zip(pts.chunks(fpg)) {
            t.start = f[0];
            t.end = f[f.len() - 1];
        }
        self.metrics.add_encoded(pts.len() as u64);
        Ok(tokens)
    }
}
