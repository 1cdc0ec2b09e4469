//! How a video is cut into chunks for the language model, and how chunk descriptions are merged.
//!
//! Chunk times are known by construction: a fixed grid (`fixed:SECONDS`, relative to the start of
//! the requested range), the frames where the picture changes (`scene:T`), or the whole clip when
//! it fits the model's frame budget. The chunker runs online, as frames arrive, so the language
//! model can describe the first chunk while later frames are still being decoded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vidlm_models::VisualTokens;

use crate::segment::Segment;
use crate::{PipelineError, Result};

/// The chunking policy a job asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunking {
    /// One chunk when the sampled frames fit the model's frame budget, else a fixed grid sized so
    /// each chunk fits it; rolling windows for live inputs.
    Auto,
    /// Always one chunk (frames beyond the budget are thinned uniformly).
    Whole,
    /// A fixed grid of this many seconds.
    Fixed(f64),
    /// A new chunk at a frame whose scene score exceeds `threshold`, once the current chunk is
    /// `min` seconds long; chunks never exceed `max` seconds.
    Scene {
        /// Scene score threshold in [0, 1] (mean absolute luma difference of small thumbnails).
        threshold: f32,
        /// Shortest chunk, seconds.
        min: f64,
        /// Longest chunk, seconds.
        max: f64,
    },
}

impl FromStr for Chunking {
    type Err = PipelineError;

    /// `auto`, `whole`, `fixed:30` (or `30s`), `scene:0.3`, `scene:0.3:2:60` (threshold:min:max).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| PipelineError::Config(format!("chunking `{s}`: {why}"));
        let s = s.trim();
        let num = |v: &str| -> Result<f64> {
            let v = v.trim().trim_end_matches('s');
            let x: f64 = v.parse().map_err(|_| bad("expected a number"))?;
            if x.is_finite() && x > 0.0 {
                Ok(x)
            } else {
                Err(bad("expected a positive number"))
            }
        };
        match s.split_once(':') {
            None if s == "auto" => Ok(Self::Auto),
            None if s == "whole" || s == "none" => Ok(Self::Whole),
            None if s.ends_with('s') => Ok(Self::Fixed(num(s)?)),
            Some(("fixed", v)) => Ok(Self::Fixed(num(v)?)),
            Some(("scene", v)) => {
                let parts: Vec<&str> = v.split(':').collect();
                let threshold = num(parts[0])? as f32;
                if threshold > 1.0 {
                    return Err(bad("scene threshold must lie in (0, 1]"));
                }
                let min = parts.get(1).map(|v| num(v)).transpose()?.unwrap_or(2.0);
                let max = parts.get(2).map(|v| num(v)).transpose()?.unwrap_or(60.0);
                if parts.len() > 3 || min > max {
                    return Err(bad("scene:T[:MIN[:MAX]] with MIN <= MAX"));
                }
                Ok(Self::Scene {
                    threshold,
                    min,
                    max,
                })
            }
            _ => Err(bad(
                "expected auto, whole, fixed:SECONDS, or scene:T[:MIN[:MAX]]",
            )),
        }
    }
}

impl fmt::Display for Chunking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Whole => f.write_str("whole"),
            Self::Fixed(s) => write!(f, "fixed:{s}"),
            Self::Scene {
                threshold,
                min,
                max,
            } => write!(f, "scene:{threshold}:{min}:{max}"),
        }
    }
}

impl Serialize for Chunking {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Chunking {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The chunk plan chosen for one job once its duration is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plan {
    Whole,
    Grid { len: f64 },
    Scene { threshold: f32, min: f64, max: f64 },
}

impl Plan {
    /// Resolves `chunking` for an input. `span` is the seconds of video the job covers (None for a
    /// live input), `expected_frames` what the sampler will give when known.
    pub(crate) fn resolve(
        chunking: Chunking,
        span: Option<f64>,
        expected_frames: Option<f64>,
        max_frames: usize,
        window: f64,
    ) -> Plan {
        let Some(span) = span else {
            // Live or unknown length: rolling windows, whatever the policy, unless scene-aligned.
            return match chunking {
                Chunking::Scene {
                    threshold,
                    min,
                    max,
                } => Plan::Scene {
                    threshold,
                    min,
                    max: max.min(window.max(min)),
                },
                _ => Plan::Grid { len: window },
            };
        };
        match chunking {
            Chunking::Whole => Plan::Whole,
            Chunking::Fixed(len) => Plan::Grid { len },
            Chunking::Scene {
                threshold,
                min,
                max,
            } => Plan::Scene {
                threshold,
                min,
                max,
            },
            Chunking::Auto => match expected_frames {
                Some(n) if n <= max_frames as f64 => Plan::Whole,
                Some(n) => {
                    let rate = n / span.max(1e-9);
                    Plan::Grid {
                        len: (max_frames as f64 / rate).floor().max(1.0),
                    }
                }
                None if span <= 60.0 => Plan::Whole,
                None => Plan::Grid { len: 30.0 },
            },
        }
    }
}

/// A closed chunk: its frames' tokens and its time range.
#[derive(Debug)]
pub(crate) struct RawChunk {
    pub index: usize,
    pub start: f64,
    pub end: f64,
    pub groups: Vec<VisualTokens>,
}

/// Assigns arriving frames to chunks of one job.
#[derive(Debug)]
pub(crate) struct Chunker {
    plan: Plan,
    origin: f64,
    cur_start: f64,
    index: usize,
    frames: Vec<VisualTokens>,
    last_time: f64,
}

impl Chunker {
    pub(crate) fn new(plan: Plan, origin: f64) -> Self {
        Self {
            plan,
            origin,
            cur_start: origin,
            index: 0,
            frames: Vec::new(),
            last_time: origin,
        }
    }

    /// Adds one frame's tokens (in time order); returns the chunk it closed, if any.
    pub(crate) fn push(&mut self, tokens: VisualTokens, scene: Option<f32>) -> Option<RawChunk> {
        let t = tokens.start.max(self.last_time);
        self.last_time = t;
        let mut closed = None;
        if !self.frames.is_empty() {
            let boundary = match self.plan {
                Plan::Whole => None,
                Plan::Grid { len } if t >= self.cur_start + len => {
                    // The grid point at or before t; empty grid cells join the closing chunk.
                    Some(self.origin + ((t - self.origin) / len).floor() * len)
                }
                Plan::Grid { .. } => None,
                Plan::Scene {
                    threshold,
                    min,
                    max,
                } => {
                    let age = t - self.cur_start;
                    let cut = scene.is_some_and(|s| s > threshold) && age >= min;
                    (cut || age >= max).then_some(t)
                }
            };
            if let Some(b) = boundary {
                closed = Some(self.close(b));
            }
        }
        self.frames.push(tokens);
        closed
    }

    /// Closes the last chunk at `end` (clamped so it never precedes the chunk's start or its last
    /// frame; the caller clamps `end` to the duration).
    pub(crate) fn finish(mut self, end: Option<f64>) -> Option<RawChunk> {
        if self.frames.is_empty() {
            return None;
        }
        let end = end.unwrap_or(self.last_time).max(self.cur_start);
        Some(self.close(end))
    }

    fn close(&mut self, end: f64) -> RawChunk {
        let chunk = RawChunk {
            index: self.index,
            start: self.cur_start,
            end,
            groups: std::mem::take(&mut self.frames),
        };
        self.index += 1;
        self.cur_start = end;
        chunk
    }
}

/// Merges adjacent segments whose texts say the same thing: word-set Jaccard similarity at or
/// above `threshold` (1.0 merges only identical wordings; above 1.0 merges nothing) and whose
/// times come from the same source. The merged segment spans both ranges and keeps the first text.
///
/// ```
/// use vidlm_pipeline::{merge_similar, Segment};
/// let s = |a, b, t: &str| Segment::grid(a, b, t);
/// let merged = merge_similar(
///     vec![s(0.0, 5.0, "A rabbit sits."), s(5.0, 10.0, "a rabbit sits"), s(10.0, 12.0, "It runs.")],
///     0.8,
/// );
/// assert_eq!(merged, vec![s(0.0, 10.0, "A rabbit sits."), s(10.0, 12.0, "It runs.")]);
/// ```
pub fn merge_similar(segments: Vec<Segment>, threshold: f64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(segments.len());
    for seg in segments {
        if let Some(last) = out.last_mut() {
            if threshold <= 1.0
                && last.time_source == seg.time_source
                && text_similarity(&last.text, &seg.text) >= threshold
            {
                last.end = last.end.max(seg.end);
                continue;
            }
        }
        out.push(seg);
    }
    out
}

/// Lower-cased alphanumeric words of a text.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Jaccard similarity of two texts' word sets (1.0 for two texts without words).
pub(crate) fn text_similarity(a: &str, b: &str) -> f64 {
    use std::collections::HashSet;
    let a: HashSet<String> = words(a).into_iter().collect();
    let b: HashSet<String> = words(b).into_iter().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(&b).count() as f64;
    let union = a.union(&b).count() as f64;
    inter / union
}

/// `M:SS` or `H:MM:SS` for prompts and Markdown (whole seconds, rounded down).
pub fn format_clock(seconds: f64) -> String {
    let total = seconds.max(0.0).floor() as u64;
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `HH:MM:SS{sep}mmm` for subtitles (`,` for SRT, `.` for WebVTT).
pub(crate) fn format_subtitle_time(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn tok(t: f64) -> VisualTokens {
        VisualTokens {
            embeddings: Tensor::zeros((1, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
            grid_h: 1,
            grid_w: 1,
            start: t,
            end: t,
        }
    }

    fn ranges(plan: Plan, times: &[f64], scenes: &[f32], end: f64) -> Vec<(f64, f64, usize)> {
        let mut c = Chunker::new(plan, 0.0);
        let mut out = Vec::new();
        for (i, t) in times.iter().enumerate() {
            if let Some(ch) = c.push(tok(*t), scenes.get(i).copied()) {
                out.push((ch.start, ch.end, ch.groups.len()));
            }
        }
        if let Some(ch) = c.finish(Some(end)) {
            out.push((ch.start, ch.end, ch.groups.len()));
        }
        out
    }

    #[test]
    fn parses_chunking() {
        assert_eq!("auto".parse::<Chunking>().unwrap(), Chunking::Auto);
        assert_eq!(
            "fixed:10".parse::<Chunking>().unwrap(),
            Chunking::Fixed(10.0)
        );
        assert_eq!("30s".parse::<Chunking>().unwrap(), Chunking::Fixed(30.0));
        assert_eq!(
            "scene:0.3:1:20".parse::<Chunking>().unwrap(),
            Chunking::Scene {
                threshold: 0.3,
                min: 1.0,
                max: 20.0
            }
        );
        for bad in [
            "fixed:-1",
            "fixed:x",
            "scene:2",
            "scene:0.3:9:1",
            "blocks:3",
        ] {
            assert!(bad.parse::<Chunking>().is_err(), "{bad}");
        }
    }

    #[test]
    fn grid_chunks_sit_on_the_grid_and_cover_the_range() {
        let times: Vec<f64> = (0..25).map(|i| i as f64 * 0.5).collect(); // 0 .. 12.0
        let got = ranges(Plan::Grid { len: 5.0 }, &times, &[], 12.4);
        assert_eq!(got, vec![(0.0, 5.0, 10), (5.0, 10.0, 10), (10.0, 12.4, 5)]);
    }

    #[test]
    fn empty_grid_cells_join_the_previous_chunk() {
        let got = ranges(Plan::Grid { len: 2.0 }, &[0.0, 1.0, 7.5, 8.0], &[], 9.0);
        // 7.5 closes [0, 6) (cells 2-6 were empty); 8.0 starts a new cell.
        assert_eq!(got, vec![(0.0, 6.0, 2), (6.0, 8.0, 1), (8.0, 9.0, 1)]);
    }

    #[test]
    fn scene_chunks_cut_at_scene_frames_with_min_and_max() {
        let plan = Plan::Scene {
            threshold: 0.3,
            min: 1.0,
            max: 4.0,
        };
        let times = [
            0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5,
        ];
        let mut scenes = vec![0.0f32; times.len()];
        scenes[1] = 0.9; // too early (0.5 s < min)
        scenes[4] = 0.9; // cut at 2.0
        let got = ranges(plan, &times, &scenes, 6.6);
        // 2.0 -> forced cut at 6.0 by max.
        assert_eq!(got, vec![(0.0, 2.0, 4), (2.0, 6.0, 8), (6.0, 6.6, 2)]);
    }

    #[test]
    fn auto_plan_fits_the_frame_budget() {
        let p = |span, n| Plan::resolve(Chunking::Auto, span, n, 8, 30.0);
        assert_eq!(p(Some(5.0), Some(5.0)), Plan::Whole);
        assert_eq!(p(Some(60.0), Some(60.0)), Plan::Grid { len: 8.0 });
        assert_eq!(p(None, None), Plan::Grid { len: 30.0 });
        assert_eq!(p(Some(600.0), None), Plan::Grid { len: 30.0 });
    }

    #[test]
    fn merges_only_adjacent_similar_texts() {
        let s = |a: f64, b: f64, t: &str| Segment::grid(a, b, t);
        let input = vec![s(0.0, 1.0, "x y"), s(1.0, 2.0, "z"), s(2.0, 3.0, "x y")];
        assert_eq!(merge_similar(input.clone(), 0.9), input);
        assert_eq!(merge_similar(input.clone(), 2.0), input);
        let all_same = vec![s(0.0, 1.0, "a"), s(1.0, 2.0, "A."), s(2.0, 3.0, "a")];
        assert_eq!(merge_similar(all_same, 1.0), vec![s(0.0, 3.0, "a")]);
    }

    #[test]
    fn formats_times() {
        assert_eq!(format_clock(65.9), "1:05");
        assert_eq!(format_clock(3725.0), "1:02:05");
        assert_eq!(format_subtitle_time(3725.0456, ','), "01:02:05,046");
        assert_eq!(format_subtitle_time(1.5, '.'), "00:00:01.500");
    }
}
