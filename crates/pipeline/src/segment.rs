//! [`Segment`]: a time range with the text the model wrote for it, and where its times come
//! from. Shared by chunking (which makes segments) and the time parsing (which refines them).

use serde::{Deserialize, Serialize};

/// A time range with text: a described chunk, a merged segment, or a window of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, seconds from the start of the video.
    pub start: f64,
    /// End, seconds from the start of the video.
    pub end: f64,
    /// What the model said about this range.
    pub text: String,
    /// Whether `start`/`end` come from the chunk grid or from times the model wrote.
    #[serde(default)]
    pub time_source: TimeSource,
}

impl Segment {
    /// A segment whose times come from the chunk grid.
    pub fn grid(start: f64, end: f64, text: impl Into<String>) -> Self {
        Self {
            start,
            end,
            text: text.into(),
            time_source: TimeSource::Grid,
        }
    }
}

/// Where a segment's times come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSource {
    /// The chunk grid (or scene cuts, or the whole clip): known by construction.
    #[default]
    Grid,
    /// Times the model wrote in its text, checked against the clip's range.
    Model,
}
