//! vidlm-media: the first two stages of vidlm -- decode video with FFmpeg (libavformat,
//! libavcodec, libswscale through `ffmpeg-next`) and sample the frames the models see.
//!
//! - [`probe`] reads container and stream facts (the fields `ffprobe` prints) without decoding.
//! - [`Sampler`] streams [`SampledFrame`]s (RGB24, timestamp in seconds from the stream's first
//!   frame, frame index, keyframe flag) for a [`SamplingStrategy`]: `fps:N`, `frames:N`
//!   (`round(linspace(0, F-1, N))` of the window's frames), `keyframes`, `scene:T` or `all`,
//!   within a time window and a frame budget ([`SampleOptions`]). Local files are scanned first
//!   (packets only, no decoding) for every frame's time and the keyframes. Sparse sampling seeks
//!   when the keyframe before the next wanted frame lies ahead and decodes in order otherwise;
//!   both give identical frames (times, indices, pixels), on every container. The exact
//!   semantics: pipelines/README.md, "Sampling".
//! - [`sample_all`] collects them.
//!
//! Inputs are files, network URLs (http(s), HLS, RTSP...) or standard input ([`Input`]). Every
//! failure is a [`MediaError`] whose message is one line naming the input and the reason. FFmpeg's
//! own log goes to `tracing` (target `ffmpeg`), not to stderr.
//!
//! ```no_run
//! use vidlm_media::{probe, sample_all, Input, SampleOptions};
//! let input = Input::parse("samples/bbb-720p-5s.mp4");
//! let info = probe(&input)?;
//! let opts = SampleOptions { size: Some((384, 384)), ..SampleOptions::new("fps:1".parse()?) };
//! let frames = sample_all(&input, opts)?;
//! println!("{} s, {} frames sampled", info.duration.unwrap_or(0.0), frames.len());
//! # Ok::<(), vidlm_media::MediaError>(())
//! ```

#![warn(missing_docs)]

mod convert;
mod decode;
mod error;
mod ffmpeg_log;
mod input;
mod options;
mod probe;
mod sampler;
pub mod scene;
mod timeline;

pub use error::MediaError;
pub use input::Input;
pub use options::{parse_size, parse_time, DecodeMode, SampleOptions, SamplingStrategy};
pub use probe::{probe, MediaInfo, StreamInfo};
pub use sampler::{sample_all, write_atomic, SampledFrame, Sampler, SamplerStats};
pub use scene::SceneDetector;

/// Initialises FFmpeg once per process (network protocols, log routing). Called by every entry
/// point; calling it again is free.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = ffmpeg_next::init() {
            tracing::warn!("FFmpeg initialisation reported: {e}");
        }
        // SAFETY: global, idempotent library initialisation.
        unsafe {
            ffmpeg_next::ffi::avformat_network_init();
        }
        ffmpeg_log::install();
    });
}

#[cfg(test)]
mod tests {
    /// The pipeline moves a sampler into a decode thread and frames through channels.
    #[test]
    fn sampler_and_frames_are_send() {
        fn send<T: Send>() {}
        send::<crate::Sampler>();
        send::<crate::SampledFrame>();
        send::<crate::MediaError>();
    }
}
