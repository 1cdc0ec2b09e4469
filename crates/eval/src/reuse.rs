//! Encodings shared across conditions: a model wrapper that remembers the visual tokens of the
//! frame groups it encoded lately and hands them out again for a group of the same pixels, so the
//! `shuffled` and `single-frame` conditions (the video's own images) and `blind` (the same black
//! frame for every item of a size) do not run the vision encoder again.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vidlm_models::{
    AskOutput, Clip, FramePixels, Generation, GenerationParams, ModelError, PixelStep,
    PromptLogits, VideoFrame, VisionLanguageModel, VisualTokens,
};

/// How many frame groups' tokens are kept (oldest dropped first). A run goes item by item with
/// all of an item's conditions together, so only the latest items' groups are ever asked again.
pub const KEEP_GROUPS: usize = 256;

/// Counts of [`ReuseEncodings`], readable while the pipeline owns the model.
#[derive(Debug, Clone, Default)]
pub struct ReuseCounts {
    encoded: Arc<AtomicU64>,
    reused: Arc<AtomicU64>,
}

impl ReuseCounts {
    /// Frame groups the wrapped encoder ran on.
    pub fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// Frame groups whose tokens were handed out again instead.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

type Key = u64;

/// A [`VisionLanguageModel`] whose `encode_clip_frames`/`encode_frames` reuse the tokens of a
/// frame group already encoded (same pixels, same size, same clip length: the key is a 64-bit
/// hash of them). Everything else is the wrapped model's.
pub struct ReuseEncodings {
    inner: Box<dyn VisionLanguageModel>,
    cache: HashMap<Key, VisualTokens>,
    order: VecDeque<Key>,
    counts: ReuseCounts,
}

impl ReuseEncodings {
    /// Wraps `inner`; the counts handle stays readable after the model is handed to a pipeline.
    pub fn new(inner: Box<dyn VisionLanguageModel>) -> (Self, ReuseCounts) {
        let counts = ReuseCounts::default();
        (
            Self {
                inner,
                cache: HashMap::new(),
                order: VecDeque::new(),
                counts: counts.clone(),
            },
            counts,
        )
    }

    fn key(group: &[VideoFrame], clip_frames: Option<usize>) -> Key {
        // std's SipHash with its fixed default keys: the same in every process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        clip_frames.hash(&mut h);
        for f in group {
            (f.width, f.height).hash(&mut h);
            f.rgb.hash(&mut h);
        }
        h.finish()
    }

    fn encode(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: Option<usize>,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        let fpg = self.inner.frames_per_group().max(1);
        let groups: Vec<&[VideoFrame]> = frames.chunks(fpg).collect();
        let keys: Vec<Key> = groups.iter().map(|g| Self::key(g, clip_frames)).collect();
        // Only whole groups go to the encoder, in order (a short last group stays last), and
        // each distinct one once: a call may hold the same pixels twice (a still scene, or two
        // videos of one batch that open on the same frame).
        let mut missing: Vec<Key> = Vec::new();
        let mut miss_frames: Vec<VideoFrame> = Vec::new();
        for (g, &k) in groups.iter().zip(&keys) {
            if !self.cache.contains_key(&k) && !missing.contains(&k) {
                missing.push(k);
                miss_frames.extend(g.iter().cloned());
            }
        }
        let fresh = if miss_frames.is_empty() {
            Vec::new()
        } else {
            match clip_frames {
                Some(c) => self.inner.encode_clip_frames(&miss_frames, c)?,
                None => self.inner.encode_frames(&miss_frames)?,
            }
        };
        if fresh.len() != missing.len() {
            return Err(ModelError::Input(format!(
                "the encoder returned {} groups for {}",
                fresh.len(),
                missing.len()
            )));
        }
        let fresh: HashMap<Key, VisualTokens> = missing.iter().copied().zip(fresh).collect();
        let reused = groups.len() - missing.len();
        self.counts
            .encoded
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        self.counts
            .reused
            .fetch_add(reused as u64, Ordering::Relaxed);
        // Read every group before caching the new ones, so eviction cannot drop a hit.
        let mut out = Vec::with_capacity(groups.len());
        for (g, k) in groups.iter().zip(&keys) {
            let mut t = fresh
                .get(k)
                .or_else(|| self.cache.get(k))
                .expect("every key is cached or fresh")
                .clone();
            // The times are this call's frames', whatever group the tokens came from.
            t.start = g[0].pts;
            t.end = g[g.len() - 1].pts;
            out.push(t);
        }
        for k in missing {
            let t = fresh.get(&k).expect("one per missing group").clone();
            self.cache.insert(k, t);
            self.order.push_back(k);
            if self.order.len() > KEEP_GROUPS {
                if let Some(old) = self.order.pop_front() {
                    self.cache.remove(&old);
                }
            }
        }
        Ok(out)
    }
}

impl VisionLanguageModel for ReuseEncodings {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn family(&self) -> &'static str {
        self.inner.family()
    }
    fn max_frames(&self) -> usize {
        self.inner.max_frames()
    }
    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        self.encode(frames, None)
    }
    fn frames_per_group(&self) -> usize {
        self.inner.frames_per_group()
    }
    fn encode_clip_frames(
        &mut self,
        frames: &[VideoFrame],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        self.encode(frames, Some(clip_frames))
    }
    fn pixel_step(&self) -> Option<Arc<dyn PixelStep>> {
        // None on purpose: reuse is keyed on the decoded frames, so they must reach
        // `encode_clip_frames` here rather than be resized on the preprocess threads first.
        None
    }
    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        clip_frames: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        self.inner.encode_frame_pixels(frames, clip_frames)
    }
    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.inner.generate(clip, prompt, params, on_text)
    }
    fn accepts_text_only(&self) -> bool {
        self.inner.accepts_text_only()
    }
    fn max_images(&self) -> usize {
        self.inner.max_images()
    }
    fn generate_images(
        &mut self,
        images: &[VideoFrame],
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<AskOutput, ModelError> {
        self.inner.generate_images(images, prompt, params, on_text)
    }
    fn prompt_logits(&mut self, clip: &Clip, prompt: &str) -> Result<PromptLogits, ModelError> {
        self.inner.prompt_logits(clip, prompt)
    }
    fn continuation_logits(
        &mut self,
        clip: &Clip,
        prompt: &str,
        continuation: &[u32],
    ) -> Result<PromptLogits, ModelError> {
        self.inner.continuation_logits(clip, prompt, continuation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Encodes a frame to one token whose value is its first byte; counts the frames it saw.
    struct Fake {
        seen: Arc<AtomicU64>,
        fpg: usize,
    }

    impl VisionLanguageModel for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn max_frames(&self) -> usize {
            8
        }
        fn frames_per_group(&self) -> usize {
            self.fpg
        }
        fn encode_frames(
            &mut self,
            frames: &[VideoFrame],
        ) -> Result<Vec<VisualTokens>, ModelError> {
            self.seen.fetch_add(frames.len() as u64, Ordering::Relaxed);
            frames
                .chunks(self.fpg)
                .map(|g| {
                    let v: Vec<f32> = g.iter().map(|f| f32::from(f.rgb[0])).collect();
                    Ok(VisualTokens {
                        embeddings: Tensor::from_vec(v, (1, g.len()), &Device::Cpu)?,
                        grid_h: 1,
                        grid_w: 1,
                        start: -1.0,
                        end: -1.0,
                    })
                })
                .collect()
        }
        fn generate(
            &mut self,
            _: &Clip,
            _: &str,
            _: &GenerationParams,
            _: &mut dyn FnMut(&str),
        ) -> Result<Generation, ModelError> {
            Err(ModelError::Input("no".into()))
        }
    }

    fn frame(v: u8, pts: f64) -> VideoFrame {
        VideoFrame {
            rgb: vec![v; 12],
            width: 2,
            height: 2,
            pts,
        }
    }

    fn wrapped(fpg: usize) -> (ReuseEncodings, ReuseCounts, Arc<AtomicU64>) {
        let seen = Arc::new(AtomicU64::new(0));
        let fake = Fake {
            seen: seen.clone(),
            fpg,
        };
        let (m, counts) = ReuseEncodings::new(Box::new(fake));
        (m, counts, seen)
    }

    fn values(t: &[VisualTokens]) -> Vec<Vec<f32>> {
        t.iter()
            .map(|t| t.embeddings.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn same_pixels_are_encoded_once_with_their_own_times() {
        let (mut m, counts, seen) = wrapped(1);
        let video: Vec<VideoFrame> = (1..=4).map(|i| frame(i, f64::from(i))).collect();
        let a = m.encode_clip_frames(&video, 4).unwrap();
        assert_eq!(values(&a), [[1.0], [2.0], [3.0], [4.0]]);
        // The same images in another order, and one new one.
        let shuffled = vec![frame(3, 1.0), frame(9, 2.0), frame(1, 3.0), frame(2, 4.0)];
        let b = m.encode_clip_frames(&shuffled, 4).unwrap();
        assert_eq!(values(&b), [[3.0], [9.0], [1.0], [2.0]]);
        assert_eq!(
            b.iter().map(|t| t.start).collect::<Vec<_>>(),
            [1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(seen.load(Ordering::Relaxed), 5);
        assert_eq!((counts.encoded(), counts.reused()), (5, 3));
        // Another clip length is another key (models may size frames by it).
        m.encode_clip_frames(&video[..1], 1).unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn groups_of_two_stay_whole() {
        let (mut m, counts, seen) = wrapped(2);
        let v: Vec<VideoFrame> = (1..=5).map(|i| frame(i, f64::from(i))).collect();
        let a = m.encode_clip_frames(&v, 5).unwrap();
        assert_eq!(values(&a), [vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]]);
        // The first pair again, a new pair between, the short last group again.
        let w = vec![
            frame(1, 0.0),
            frame(2, 0.5),
            frame(7, 1.0),
            frame(8, 1.5),
            frame(5, 2.0),
        ];
        let b = m.encode_clip_frames(&w, 5).unwrap();
        assert_eq!(values(&b), [vec![1.0, 2.0], vec![7.0, 8.0], vec![5.0]]);
        assert_eq!((b[1].start, b[1].end), (1.0, 1.5));
        assert_eq!((counts.encoded(), counts.reused()), (4, 2));
        assert_eq!(seen.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn the_same_pixels_twice_in_one_call_keep_the_others_aligned() {
        // Two videos batched together that open on the same frame: before, the second copy took
        // the cached tokens and every later group in the call got its neighbour's.
        let (mut m, counts, seen) = wrapped(1);
        let batch = vec![
            frame(1, 0.0),
            frame(2, 1.0),
            frame(1, 0.0),
            frame(3, 1.0),
            frame(4, 2.0),
        ];
        let a = m.encode_clip_frames(&batch, 5).unwrap();
        assert_eq!(values(&a), [[1.0], [2.0], [1.0], [3.0], [4.0]]);
        assert_eq!(seen.load(Ordering::Relaxed), 4);
        assert_eq!((counts.encoded(), counts.reused()), (4, 1));
        // Groups of two, one pair repeated inside the call.
        let (mut m, _, seen) = wrapped(2);
        let v: Vec<VideoFrame> = [5u8, 6, 5, 6, 7, 8, 9]
            .iter()
            .map(|&i| frame(i, 0.0))
            .collect();
        let b = m.encode_clip_frames(&v, 7).unwrap();
        assert_eq!(
            values(&b),
            [vec![5.0, 6.0], vec![5.0, 6.0], vec![7.0, 8.0], vec![9.0]]
        );
        assert_eq!(seen.load(Ordering::Relaxed), 5);
    }
}
