//! What `summarize` and `ask` return, and how summaries are written: JSON, Markdown, SRT, WebVTT.
//! Files are written atomically (a temporary file in the same folder, then a rename).

use std::path::Path;
use std::str::FromStr;

use serde::Serialize;

use crate::chunking::{format_clock, format_subtitle_time};
use crate::job::{TimeRange, Usage};
use crate::metrics::JobTimings;
use crate::segment::Segment;
use crate::{PipelineError, Result};

/// How the frames were chosen and grouped, as recorded in the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplingInfo {
    /// The sampling strategy (`fps:1` ...).
    pub strategy: String,
    /// The pooling chain (`none`, `mean:2` ...).
    pub pooling: String,
    /// The chunking policy (`auto`, `fixed:10` ...).
    pub chunking: String,
    /// Frame groups the language model saw.
    pub frames: usize,
}

/// The result of summarizing one video: the documented JSON schema of `vidlm summarize`
/// (`pipelines/summarize.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryReport {
    /// The input as given.
    pub video: String,
    /// The model's name.
    pub model: String,
    /// Duration in seconds (null for live inputs).
    pub duration: Option<f64>,
    /// Sampling, pooling and chunking used.
    pub sampling: SamplingInfo,
    /// Timestamped descriptions, adjacent chunks that said the same thing merged; in time order,
    /// inside `[0, duration]`.
    pub segments: Vec<Segment>,
    /// The chunks as described before merging, times on the chunk grid (or at scene cuts).
    pub chunks: Vec<Segment>,
    /// The overall summary.
    pub summary: String,
    /// Seconds per stage and in total.
    pub timings: JobTimings,
    /// Language-model usage.
    pub usage: Usage,
}

/// The answer to a question about a video: what `vidlm ask --json` prints for long videos.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AskReport {
    /// The input as given.
    pub video: String,
    /// The model's name.
    pub model: String,
    /// The question.
    pub question: String,
    /// The answer, as the model decoded it.
    pub answer: String,
    /// The answer's generated token ids.
    pub token_ids: Vec<u32>,
    /// Time ranges whose frames the answer used.
    pub evidence: Vec<TimeRange>,
    /// Times the answer itself mentions, parsed and checked against the asked range
    /// (`end == start` for a single time).
    pub answer_times: Vec<TimeRange>,
    /// Timestamps of the frame groups in the prompt.
    pub frames: Vec<f64>,
    /// Chunk descriptions used to find the evidence (empty for clips that fit one prompt).
    pub chunks: Vec<Segment>,
    /// Seconds per stage and in total.
    pub timings: JobTimings,
    /// Language-model usage.
    pub usage: Usage,
}

/// Output formats of `vidlm summarize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// The JSON schema of [`SummaryReport`].
    Json,
    /// A Markdown document: summary, then a list of timestamped segments.
    Markdown,
    /// SubRip subtitles, one cue per segment.
    Srt,
    /// WebVTT subtitles, one cue per segment.
    Vtt,
}

impl FromStr for OutputFormat {
    type Err = PipelineError;

    /// `json`, `md` (or `markdown`), `srt`, `vtt`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "md" | "markdown" => Ok(Self::Markdown),
            "srt" => Ok(Self::Srt),
            "vtt" | "webvtt" => Ok(Self::Vtt),
            _ => Err(PipelineError::Config(format!(
                "format `{s}`: expected json, md, srt or vtt"
            ))),
        }
    }
}

impl SummaryReport {
    /// Renders the report in `format` (always ends with a newline).
    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => {
                let mut s = serde_json::to_string_pretty(self).expect("plain data serializes");
                s.push('\n');
                s
            }
            OutputFormat::Markdown => self.markdown(),
            OutputFormat::Srt => subtitles(&self.segments, ',', false),
            OutputFormat::Vtt => subtitles(&self.segments, '.', true),
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.video);
        if let Some(d) = self.duration {
            s += &format!("Duration {} · model {}\n\n", format_clock(d), self.model);
        }
        s += &format!("## Summary\n\n{}\n\n## Timeline\n\n", self.summary.trim());
        for seg in &self.segments {
            s += &format!(
                "- **{}–{}** {}\n",
                format_clock(seg.start),
                format_clock(seg.end),
                seg.text.trim().replace('\n', " ")
            );
        }
        s
    }
}

fn subtitles(segments: &[Segment], sep: char, vtt: bool) -> String {
    let mut s = String::new();
    if vtt {
        s += "WEBVTT\n\n";
    }
    for (i, seg) in segments.iter().enumerate() {
        if !vtt {
            s += &format!("{}\n", i + 1);
        }
        // A cue's text may not contain an empty line (it would end the cue).
        let text: Vec<&str> = seg.text.lines().filter(|l| !l.trim().is_empty()).collect();
        let text = if text.is_empty() {
            "…".to_string()
        } else {
            text.join("\n")
        };
        s += &format!(
            "{} --> {}\n{}\n\n",
            format_subtitle_time(seg.start, sep),
            format_subtitle_time(seg.end, sep),
            text
        );
    }
    s
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, synced, then renamed over
/// it, so readers see the old file or the whole new one, never a half-written one.
///
/// # Errors
/// [`PipelineError::Io`] naming the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    vidlm_media::write_atomic(path, bytes).map_err(|e| PipelineError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> SummaryReport {
        SummaryReport {
            video: "a.mp4".into(),
            model: "m".into(),
            duration: Some(12.0),
            sampling: SamplingInfo {
                strategy: "fps:1".into(),
                pooling: "none".into(),
                chunking: "auto".into(),
                frames: 12,
            },
            segments: vec![
                Segment::grid(0.0, 5.0, "one\n\ntwo"),
                Segment::grid(5.0, 12.0, "three"),
            ],
            chunks: vec![],
            summary: "all".into(),
            timings: JobTimings::default(),
            usage: Usage::default(),
        }
    }

    #[test]
    fn renders_subtitles() {
        let srt = report().render(OutputFormat::Srt);
        assert!(
            srt.starts_with("1\n00:00:00,000 --> 00:00:05,000\none\ntwo\n\n2\n"),
            "{srt}"
        );
        let vtt = report().render(OutputFormat::Vtt);
        assert!(
            vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\n"),
            "{vtt}"
        );
        let md = report().render(OutputFormat::Markdown);
        assert!(md.contains("- **0:05–0:12** three"), "{md}");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&report().render(OutputFormat::Json)).unwrap();
        for k in [
            "video", "model", "sampling", "segments", "summary", "timings",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["segments"][1]["end"], 12.0);
        assert!(v["timings"]["encode"].is_number());
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("no/such/dir/x"), b"x").is_err());
    }
}
