//! The one error type of vidlm-media.

use std::fmt;

/// Everything that can go wrong while probing, decoding or sampling a video.
///
/// `Display` is one line that names the input (when there is one) and the reason, e.g.
/// `clip.mp4: not a media file (invalid data found when processing input: moov atom not found)`,
/// so a command line can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The path does not exist.
    #[error("{input}: no such file")]
    NotFound {
        /// The input as given.
        input: String,
    },
    /// The path is a directory, not a file.
    #[error("{input}: is a directory, not a video file")]
    IsDirectory {
        /// The input as given.
        input: String,
    },
    /// The file has zero bytes.
    #[error("{input}: empty file (0 bytes)")]
    Empty {
        /// The input as given.
        input: String,
    },
    /// The file or URL could not be opened or read (I/O, network, permissions).
    #[error("{input}: cannot open: {reason}")]
    Open {
        /// The input as given.
        input: String,
        /// FFmpeg's or the OS's reason.
        reason: String,
    },
    /// The bytes are not a media container FFmpeg understands (or a damaged one).
    #[error("{input}: not a media file ({reason})")]
    InvalidData {
        /// The input as given.
        input: String,
        /// FFmpeg's reason.
        reason: String,
    },
    /// The input has no video stream (e.g. audio only).
    #[error("{input}: no video stream (found: {found})")]
    NoVideoStream {
        /// The input as given.
        input: String,
        /// The kinds of the streams that are there, e.g. `1 audio`.
        found: String,
    },
    /// `--stream N` names a stream that does not exist or is not video.
    #[error("{input}: stream {index} {reason}")]
    BadStream {
        /// The input as given.
        input: String,
        /// The requested stream index.
        index: usize,
        /// Why it cannot be used.
        reason: String,
    },
    /// No decoder for the codec, or the decoder could not be opened.
    #[error("{input}: cannot decode stream {stream} ({codec}): {reason}")]
    Decoder {
        /// The input as given.
        input: String,
        /// Stream index.
        stream: usize,
        /// Codec name.
        codec: String,
        /// FFmpeg's reason.
        reason: String,
    },
    /// Seeking failed.
    #[error("{input}: cannot seek to {seconds:.3} s: {reason}")]
    Seek {
        /// The input as given.
        input: String,
        /// The target time in seconds.
        seconds: f64,
        /// FFmpeg's reason.
        reason: String,
    },
    /// Pixel format conversion (swscale) failed.
    #[error("{input}: cannot convert {format} {width}x{height} to RGB: {reason}")]
    Convert {
        /// The input as given.
        input: String,
        /// The source pixel format name.
        format: String,
        /// Source width.
        width: u32,
        /// Source height.
        height: u32,
        /// Reason.
        reason: String,
    },
    /// The request cannot be served for this input (e.g. `frames:N` on a stream of unknown
    /// duration).
    #[error("{input}: {reason}")]
    Unsupported {
        /// The input as given.
        input: String,
        /// What is not possible and why.
        reason: String,
    },
    /// Sampling found no frame to return although it should have: the stream has no decodable
    /// frame, or the window holds frames and none was returned (e.g. `keyframes` on a window
    /// without a keyframe).
    #[error("{input}: no frames: {reason}")]
    NoFrames {
        /// The input as given.
        input: String,
        /// Why, with the window.
        reason: String,
    },
    /// Writing an output file failed.
    #[error("{path}: cannot write: {reason}")]
    Write {
        /// The file being written.
        path: String,
        /// The reason.
        reason: String,
    },
    /// A sampling option (strategy, window, size) is malformed or contradictory.
    #[error("invalid {option} `{value}`: {reason}")]
    InvalidOption {
        /// Which option, e.g. `sampling strategy`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

impl MediaError {
    pub(crate) fn option(
        option: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        MediaError::InvalidOption {
            option,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
