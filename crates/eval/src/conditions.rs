//! The language-prior controls: every item is run under each [`Condition`], by a
//! [`SourceOpener`] that decodes a video once and hands each condition its frames.
//!
//! - `video`: the sampled frames as they are;
//! - `blind`: one black frame of the video's size at time 0. Neither SmolVLM2 nor Qwen3-VL takes a
//!   prompt without frames (`accepts_text_only` is false), so a frame that carries nothing is the
//!   closest input to "no video" they accept; the video's duration stays in the clip metadata;
//! - `single-frame`: the middle sampled frame only;
//! - `shuffled`: the sampled images in a seeded random order, each at the time of the slot it
//!   lands in (so the times still ascend and only the content is out of order).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use vidlm_pipeline::{
    FrameSource, MediaOpener, PipelineError, SampleRequest, SampledFrame, SourceInfo, SourceOpener,
};

/// One way of showing an item's video to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The sampled frames.
    Video,
    /// One black frame.
    Blind,
    /// The middle sampled frame.
    SingleFrame,
    /// The sampled frames in a seeded random order.
    Shuffled,
}

impl Condition {
    /// The name used on the command line, in record ids and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Blind => "blind",
            Self::SingleFrame => "single-frame",
            Self::Shuffled => "shuffled",
        }
    }

    /// Parses a comma-separated list (`video,blind`), keeping its order, without repeats.
    ///
    /// ```
    /// use vidlm_eval::Condition;
    /// assert_eq!(Condition::parse_list("video,blind").unwrap(), vec![Condition::Video, Condition::Blind]);
    /// assert!(Condition::parse_list("video,dark").is_err());
    /// ```
    ///
    /// # Errors
    /// [`crate::EvalError::Config`] naming an unknown condition, a repeat or an empty list.
    pub fn parse_list(s: &str) -> crate::Result<Vec<Self>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let c: Self = part.parse()?;
            if out.contains(&c) {
                return Err(crate::EvalError::Config(format!(
                    "condition `{part}` given twice"
                )));
            }
            out.push(c);
        }
        if out.is_empty() {
            return Err(crate::EvalError::Config("no conditions given".into()));
        }
        Ok(out)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Condition {
    type Err = crate::EvalError;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "video" => Self::Video,
            "blind" => Self::Blind,
            "single-frame" => Self::SingleFrame,
            "shuffled" => Self::Shuffled,
            other => {
                return Err(crate::EvalError::Config(format!(
                    "unknown condition `{other}` (video, blind, single-frame, shuffled)"
                )))
            }
        })
    }
}

/// The key of one item under one condition: the record id and the pipeline job's input.
pub fn run_key(item: &str, condition: Condition) -> String {
    format!("{item}#{condition}")
}

/// Where a run key's frames come from.
#[derive(Debug, Clone)]
pub struct Route {
    /// The video.
    pub video: String,
    /// The item id (seeds the shuffle).
    pub item: String,
    /// How its frames are shown.
    pub condition: Condition,
    /// The item's window of the video (routes of one video and window share one decode).
    pub window: Option<(f64, f64)>,
}

type Decoded = Result<Arc<(SourceInfo, Vec<SampledFrame>, u64)>, String>;

struct Entry {
    decoded: Arc<OnceLock<Decoded>>,
    remaining: usize,
}

/// Opens run keys ([`run_key`]): decodes each video (for one sampling request) once, keeps its
/// frames while other conditions of it are still to come, and gives each condition its frames.
pub struct ConditionOpener {
    inner: Box<dyn SourceOpener>,
    routes: HashMap<String, Route>,
    cache: Mutex<HashMap<String, Entry>>,
    seed: u64,
}

impl ConditionOpener {
    /// An opener for `routes` (key -> route), decoding with vidlm's [`MediaOpener`]; `seed` seeds
    /// the shuffles (with each item's id).
    pub fn new(routes: HashMap<String, Route>, seed: u64) -> Self {
        Self::with_opener(Box::new(MediaOpener), routes, seed)
    }

    /// As [`Self::new`], decoding with `inner`.
    pub fn with_opener(
        inner: Box<dyn SourceOpener>,
        routes: HashMap<String, Route>,
        seed: u64,
    ) -> Self {
        Self {
            inner,
            routes,
            cache: Mutex::new(HashMap::new()),
            seed,
        }
    }

    /// The frames and source facts of `key` under its condition, decoding the video unless
    /// another condition of it already did. Also what [`SourceOpener::open`] serves.
    ///
    /// # Errors
    /// [`PipelineError::Input`] for an unknown key or a video that cannot be decoded.
    pub fn frames(
        &self,
        key: &str,
        request: &SampleRequest,
    ) -> vidlm_pipeline::Result<(SourceInfo, Vec<SampledFrame>, u64)> {
        let route = self.routes.get(key).ok_or_else(|| PipelineError::Input {
            input: key.to_string(),
            reason: "not an item of this run".into(),
        })?;
        let cache_key = format!("{}\u{0}{request:?}", route.video);
        let cell = {
            let mut cache = self.cache.lock().expect("the cache lock is never poisoned");
            let remaining = self
                .routes
                .values()
                .filter(|r| r.video == route.video && r.window == route.window)
                .count();
            let e = cache.entry(cache_key.clone()).or_insert_with(|| Entry {
                decoded: Arc::new(OnceLock::new()),
                remaining,
            });
            e.remaining = e.remaining.saturating_sub(1);
            let cell = e.decoded.clone();
            if e.remaining == 0 {
                // The last condition of this video: nothing more to keep.
                cache.remove(&cache_key);
            }
            cell
        };
        let mut first = false;
        let decoded = cell
            .get_or_init(|| {
                first = true;
                self.decode(&route.video, request)
            })
            .clone()
            .map_err(|reason| PipelineError::Input {
                input: route.video.clone(),
                reason,
            })?;
        let (info, frames, decoded_count) = &*decoded;
        let frames = self.transform(route, frames);
        Ok((info.clone(), frames, if first { *decoded_count } else { 0 }))
    }

    fn decode(&self, video: &str, request: &SampleRequest) -> Decoded {
        let mut src = self.inner.open(video, request).map_err(|e| e.to_string())?;
        let mut frames = Vec::new();
        while let Some(f) = src.next_frame() {
            frames.push(f.map_err(|e| e.to_string())?);
        }
        if frames.is_empty() {
            return Err("no frames decoded".into());
        }
        Ok(Arc::new((src.info().clone(), frames, src.frames_decoded())))
    }

    fn transform(&self, route: &Route, frames: &[SampledFrame]) -> Vec<SampledFrame> {
        match route.condition {
            Condition::Video => frames.to_vec(),
            Condition::SingleFrame => vec![frames[frames.len() / 2].clone()],
            Condition::Blind => {
                let f = &frames[0];
                vec![SampledFrame {
                    rgb: vec![0; f.rgb.len()],
                    pts: 0.0,
                    index: Some(0),
                    keyframe: true,
                    ..f.clone()
                }]
            }
            Condition::Shuffled => {
                let order = shuffled_order(frames.len(), self.seed ^ fnv1a(&route.item));
                order
                    .iter()
                    .zip(frames)
                    .map(|(&from, slot)| SampledFrame {
                        pts: slot.pts,
                        index: slot.index,
                        ..frames[from].clone()
                    })
                    .collect()
            }
        }
    }
}

impl SourceOpener for ConditionOpener {
    fn open(
        &self,
        input: &str,
        request: &SampleRequest,
    ) -> vidlm_pipeline::Result<Box<dyn FrameSource>> {
        let (info, frames, decoded) = self.frames(input, request)?;
        Ok(Box::new(ListSource {
            info,
            frames: frames.into(),
            decoded,
        }))
    }
}

struct ListSource {
    info: SourceInfo,
    frames: VecDeque<SampledFrame>,
    decoded: u64,
}

impl FrameSource for ListSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Option<vidlm_pipeline::Result<SampledFrame>> {
        self.frames.pop_front().map(Ok)
    }

    fn frames_decoded(&self) -> u64 {
        // Only the condition that decoded the video counts its frames, so the run's metrics show
        // the decoding the cache saved.
        self.decoded
    }
}

/// FNV-1a of a string: a stable per-item seed (std's hasher is randomized per process).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64: a small deterministic generator (the same on every platform and version).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A seeded permutation of `0..n` (Fisher-Yates); for n > 1 never the identity, so a shuffled
/// condition always differs from the video.
fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix(seed);
    let mut order: Vec<usize> = (0..n).collect();
    loop {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        if n < 2 || order.iter().enumerate().any(|(i, &o)| i != o) {
            return order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(std::sync::atomic::AtomicUsize);

    impl SourceOpener for Counting {
        fn open(
            &self,
            input: &str,
            _: &SampleRequest,
        ) -> vidlm_pipeline::Result<Box<dyn FrameSource>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if input == "bad.mp4" {
                return Err(PipelineError::Input {
                    input: input.into(),
                    reason: "no such file".into(),
                });
            }
            let frames: Vec<SampledFrame> = (0..5u8)
                .map(|i| SampledFrame {
                    rgb: vec![i + 1; 2 * 2 * 3],
                    width: 2,
                    height: 2,
                    pts: f64::from(i),
                    index: Some(u64::from(i)),
                    keyframe: i == 0,
                })
                .collect();
            Ok(Box::new(ListSource {
                info: SourceInfo {
                    duration: Some(5.0),
                    fps: Some(1.0),
                    live: false,
                },
                frames: frames.into(),
                decoded: 5,
            }))
        }
    }

    fn request() -> SampleRequest {
        SampleRequest {
            strategy: "frames:5".into(),
            from: 0.0,
            to: None,
            max_frames: None,
            size: None,
        }
    }

    #[test]
    fn each_condition_gets_its_frames_from_one_decode() {
        let conds = [
            Condition::Video,
            Condition::Blind,
            Condition::SingleFrame,
            Condition::Shuffled,
        ];
        let routes: HashMap<String, Route> = conds
            .iter()
            .map(|&c| {
                (
                    run_key("q1", c),
                    Route {
                        video: "a.mp4".into(),
                        item: "q1".into(),
                        condition: c,
                        window: None,
                    },
                )
            })
            .collect();
        let counter = Arc::new(Counting(Default::default()));
        struct Shared(Arc<Counting>);
        impl SourceOpener for Shared {
            fn open(
                &self,
                i: &str,
                r: &SampleRequest,
            ) -> vidlm_pipeline::Result<Box<dyn FrameSource>> {
                self.0.open(i, r)
            }
        }
        let opener = ConditionOpener::with_opener(Box::new(Shared(counter.clone())), routes, 7);
        let get = |c| opener.frames(&run_key("q1", c), &request()).unwrap();
        let (_, video, decoded) = get(Condition::Video);
        assert_eq!(decoded, 5);
        let firsts: Vec<u8> = video.iter().map(|f| f.rgb[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 4, 5]);
        let (_, blind, decoded) = get(Condition::Blind);
        assert_eq!(decoded, 0, "reused, not decoded again");
        assert_eq!(blind.len(), 1);
        assert!(blind[0].rgb.iter().all(|&b| b == 0));
        assert_eq!((blind[0].width, blind[0].height), (2, 2));
        let (_, single, _) = get(Condition::SingleFrame);
        assert_eq!((single.len(), single[0].rgb[0], single[0].pts), (1, 3, 2.0));
        let (_, shuffled, _) = get(Condition::Shuffled);
        let times: Vec<f64> = shuffled.iter().map(|f| f.pts).collect();
        assert_eq!(times, [0.0, 1.0, 2.0, 3.0, 4.0], "times keep their order");
        let mut content: Vec<u8> = shuffled.iter().map(|f| f.rgb[0]).collect();
        assert_ne!(content, [1, 2, 3, 4, 5]);
        content.sort();
        assert_eq!(content, [1, 2, 3, 4, 5], "a permutation");
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The last condition released the frames.
        assert!(opener.cache.lock().unwrap().is_empty());
        assert!(opener.frames("q9#video", &request()).is_err());
    }

    #[test]
    fn shuffles_are_seeded() {
        assert_eq!(shuffled_order(8, 1), shuffled_order(8, 1));
        assert_ne!(shuffled_order(8, 1), shuffled_order(8, 2));
        assert_eq!(shuffled_order(1, 3), [0]);
    }

    #[test]
    fn decode_errors_reach_every_condition() {
        let routes = [Condition::Video, Condition::Blind]
            .iter()
            .map(|&c| {
                (
                    run_key("q", c),
                    Route {
                        video: "bad.mp4".into(),
                        item: "q".into(),
                        condition: c,
                        window: None,
                    },
                )
            })
            .collect();
        let opener =
            ConditionOpener::with_opener(Box::new(Counting(Default::default())), routes, 0);
        for c in [Condition::Video, Condition::Blind] {
            let e = opener.frames(&run_key("q", c), &request()).unwrap_err();
            assert!(e.to_string().contains("no such file"), "{e}");
        }
    }
}
