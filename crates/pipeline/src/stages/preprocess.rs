//! The preprocess stage: turns sampled frames into model frames, with their scene scores.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use vidlm_models::VideoFrame;

use crate::graph::{Graph, Msg};
use crate::metrics::Stage;
use crate::source::SampledFrame;

pub(crate) struct Prepped {
    pub(crate) frame: VideoFrame,
    pub(crate) scene: Option<f32>,
}

impl Graph<'_> {
    pub(crate) fn preprocess_worker(
        &self,
        rx: Receiver<Msg<SampledFrame>>,
        tx: Sender<Msg<Prepped>>,
    ) {
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
                Msg::Start { job, info, plan } => Msg::Start { job, info, plan },
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
