//! The preprocess stage: turns sampled frames into model frames, with their scene scores.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use vidlm_models::{FramePixels, VideoFrame};

use crate::graph::{with_input, Graph, Msg};
use crate::job::JobSpec;
use crate::metrics::Stage;
use crate::source::SampledFrame;

/// A frame ready for the encoder, with its scene score.
pub(crate) struct Prepped {
    pub(crate) frame: PreppedFrame,
    pub(crate) scene: Option<f32>,
}

/// The frame as the model's pixel step left it, or as decoded when the model has none (or
/// preprocesses on its device).
pub(crate) enum PreppedFrame {
    Pixels(FramePixels),
    Frame(VideoFrame),
}

impl PreppedFrame {
    pub(crate) fn pts(&self) -> f64 {
        match self {
            Self::Pixels(p) => p.pts,
            Self::Frame(f) => f.pts,
        }
    }
}

impl Graph<'_> {
    /// Scene scores, and the model's pixel step (resize, normalize) when it has one, so the
    /// encoder's lock is held for the vision tower only.
    pub(crate) fn preprocess_worker(
        &self,
        jobs: &[JobSpec],
        rx: Receiver<Msg<SampledFrame>>,
        tx: Sender<Msg<Prepped>>,
    ) {
        let rx = self.barrier(rx);
        // Per job: the scene detector holding the previous frame's luma thumbnail, and the frames
        // of one prompt (the pixel step's clip length).
        let mut thumbs: HashMap<usize, vidlm_media::SceneDetector> = HashMap::new();
        let mut clip: HashMap<usize, usize> = HashMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        for msg in rx {
            let out = match msg {
                Msg::Item { job, item } => {
                    if self.cancel.is_cancelled() || failed.contains(&job) {
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
                    let frame = match &self.pixel_step {
                        None => Ok(PreppedFrame::Frame(frame)),
                        Some(step) => {
                            let n = clip.get(&job).copied().unwrap_or(self.max_frames);
                            step.pixels(&frame, n).map(PreppedFrame::Pixels)
                        }
                    };
                    self.metrics
                        .add_time(Stage::Preprocess, Some(job), t0.elapsed());
                    match frame {
                        Ok(frame) => Msg::Item {
                            job,
                            item: Prepped { frame, scene },
                        },
                        Err(e) => {
                            failed.insert(job);
                            Msg::Failed {
                                job,
                                error: with_input(&jobs[job].input, e),
                            }
                        }
                    }
                }
                Msg::Start { job, info, plan } => {
                    clip.insert(job, self.clip_len(&plan));
                    Msg::Start { job, info, plan }
                }
                Msg::End { job } => {
                    thumbs.remove(&job);
                    clip.remove(&job);
                    if failed.remove(&job) {
                        continue;
                    }
                    Msg::End { job }
                }
                Msg::Failed { job, error } => {
                    thumbs.remove(&job);
                    clip.remove(&job);
                    if failed.remove(&job) {
                        continue;
                    }
                    Msg::Failed { job, error }
                }
                Msg::Cancelled { job } => {
                    thumbs.remove(&job);
                    clip.remove(&job);
                    if failed.remove(&job) {
                        continue;
                    }
                    Msg::Cancelled { job }
                }
            };
            if tx.send(out).is_err() {
                return;
            }
        }
    }
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
