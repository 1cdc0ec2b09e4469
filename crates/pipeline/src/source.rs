//! The first stage's input: an opened video that yields sampled frames in time order.
//!
//! [`MediaOpener`] opens files, URLs and stdin with vidlm-media's decoder and sampler. Library users
//! with frames from elsewhere (a camera SDK, frames already in memory) can implement
//! [`FrameSource`] and [`SourceOpener`] and hand the opener to the [`crate::PipelineBuilder`].

pub use vidlm_media::SampledFrame;

use crate::{PipelineError, Result};

/// What is known about an input once it is opened, before its frames.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// Duration in seconds when the container knows it (None for live streams and pipes): the
    /// video stream's own duration, else the container's.
    pub duration: Option<f64>,
    /// The video stream's frame rate (frames per second), when known.
    pub fps: Option<f64>,
    /// A live or non-seekable input (rtsp, udp, http(s) streams, HLS, stdin): processed in rolling
    /// windows.
    pub live: bool,
}

/// An opened input that yields its sampled frames in time order.
pub trait FrameSource: Send {
    /// Facts known at open time.
    fn info(&self) -> &SourceInfo;

    /// The next sampled frame; `None` at the end.
    ///
    /// # Errors
    /// [`PipelineError::Input`] when decoding fails for good (a damaged file past the point
    /// where frames can still be recovered).
    fn next_frame(&mut self) -> Option<Result<SampledFrame>>;

    /// Frames decoded so far (including those the sampler skipped), when the source counts them.
    fn frames_decoded(&self) -> u64 {
        0
    }
}

/// What a job asks of its source.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// Sampling strategy string (`fps:1`, `frames:32`, `keyframes`, `scene:0.3`, `all`).
    pub strategy: String,
    /// Start of the window, seconds.
    pub from: f64,
    /// End of the window, seconds (exclusive).
    pub to: Option<f64>,
    /// Frame budget.
    pub max_frames: Option<usize>,
    /// Resize to `(width, height)` while decoding.
    pub size: Option<(u32, u32)>,
}

/// Opens inputs for the decode stage. Called from the decode worker threads.
pub trait SourceOpener: Send + Sync {
    /// Opens `input` (a path, URL or `-`) for `request`.
    ///
    /// # Errors
    /// [`PipelineError::Input`] naming the input and the reason.
    fn open(&self, input: &str, request: &SampleRequest) -> Result<Box<dyn FrameSource>>;
}

/// Whether an input string names a live or streaming source (processed in rolling windows).
///
/// ```
/// use vidlm_pipeline::is_live_input;
/// assert!(is_live_input("-"));
/// assert!(is_live_input("rtsp://camera/1"));
/// assert!(is_live_input("https://example.com/live.m3u8"));
/// assert!(!is_live_input("clip.mp4"));
/// ```
pub fn is_live_input(input: &str) -> bool {
    if input == "-" {
        return true;
    }
    let lower = input.to_ascii_lowercase();
    let Some((scheme, _)) = lower.split_once("://") else {
        return false;
    };
    match scheme {
        "file" => false,
        // A plain http(s) file download is not live, but an HLS playlist is.
        "http" | "https" => lower
            .split('?')
            .next()
            .is_some_and(|p| p.ends_with(".m3u8")),
        _ => true,
    }
}

/// Checks a sampling strategy string.
///
/// # Errors
/// [`PipelineError::Config`] with vidlm-media's reason.
pub(crate) fn check_strategy(s: &str) -> Result<()> {
    s.parse::<vidlm_media::SamplingStrategy>()
        .map(|_| ())
        .map_err(|e| PipelineError::Config(e.to_string()))
}

/// The number of frames `strategy` gives over `span` seconds, when that is known in advance.
pub(crate) fn expected_frames(strategy: &str, span: f64, max: Option<usize>) -> Option<f64> {
    let (name, arg) = strategy.trim().split_once(':').unwrap_or((strategy, ""));
    let n = match name.trim().to_ascii_lowercase().as_str() {
        "fps" => arg
            .trim()
            .parse::<f64>()
            .ok()
            .map(|r| (span * r).ceil().max(1.0)),
        "frames" => arg.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    Some(match max {
        Some(m) => n.min(m as f64),
        None => n,
    })
}

/// Opens files, URLs and stdin with vidlm-media (FFmpeg): decode, sample, convert to RGB24.
#[derive(Debug, Clone, Copy, Default)]
pub struct MediaOpener;

impl SourceOpener for MediaOpener {
    fn open(&self, input: &str, request: &SampleRequest) -> Result<Box<dyn FrameSource>> {
        let strategy: vidlm_media::SamplingStrategy = request.strategy.parse()?;
        let opts = vidlm_media::SampleOptions {
            from: request.from,
            to: request.to,
            max_frames: request.max_frames,
            size: request.size,
            ..vidlm_media::SampleOptions::new(strategy)
        };
        let sampler = vidlm_media::Sampler::open(&vidlm_media::Input::parse(input), opts)?;
        let media = sampler.info();
        let stream = media
            .streams
            .iter()
            .find(|s| s.index == sampler.stream_index());
        // The frames' own span when the sampler knows every frame (local files); else what the
        // container declares.
        let duration = sampler
            .duration()
            .or(stream.and_then(|s| s.duration))
            .or(media.duration)
            .filter(|d| d.is_finite() && *d > 0.0);
        let info = SourceInfo {
            duration,
            fps: stream
                .and_then(|s| s.fps)
                .filter(|f| f.is_finite() && *f > 0.0),
            live: is_live_input(input) || duration.is_none(),
        };
        Ok(Box::new(MediaSource { sampler, info }))
    }
}

struct MediaSource {
    sampler: vidlm_media::Sampler,
    info: SourceInfo,
}

impl FrameSource for MediaSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Option<Result<SampledFrame>> {
        Some(self.sampler.next()?.map_err(PipelineError::from))
    }

    fn frames_decoded(&self) -> u64 {
        self.sampler.stats().decoded
    }
}
