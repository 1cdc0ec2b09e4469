//! What to sample: the strategy (`fps:N`, `frames:N`, `keyframes`, `scene:T`, `all`) and its
//! window, budget, output size and stream.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::MediaError;

/// Which frames of the video reach the models.
///
/// Parsed from the strings the command line takes:
///
/// ```
/// use vidlm_media::SamplingStrategy;
/// assert_eq!("fps:1".parse::<SamplingStrategy>().unwrap(), SamplingStrategy::Fps(1.0));
/// assert_eq!("frames:64".parse::<SamplingStrategy>().unwrap(), SamplingStrategy::Frames(64));
/// assert_eq!("keyframes".parse::<SamplingStrategy>().unwrap(), SamplingStrategy::Keyframes);
/// assert_eq!("scene:0.3".parse::<SamplingStrategy>().unwrap(), SamplingStrategy::Scene(0.3));
/// assert!("fps:0".parse::<SamplingStrategy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplingStrategy {
    /// `fps:N`: N frames per second of video time (N may be fractional, e.g. `fps:0.25`). For
    /// each time `from + k/N` (seconds from the first frame) the first frame shown at or after
    /// it; a frame is never returned twice, so above the video's own rate every frame is
    /// returned once.
    Fps(f64),
    /// `frames:N`: N distinct frames of the window (all when it holds fewer), its first and
    /// last included: frame indices `round(linspace(0, F-1, N))` of the window's F frames on a
    /// constant frame rate (numpy's f64 rule, ties to even), the frame nearest to each of N
    /// evenly spaced times on a variable one. Needs every frame's time first: local files are
    /// scanned (packets only), inputs that cannot seek are read ahead up to `to` or their end,
    /// live streams need `to`.
    Frames(u32),
    /// `keyframes`: the frames of the packets the container marks as keys; nothing else is
    /// decoded, except where only the decoder can tell when a keyframe is shown (no presentation
    /// times and reordered frames, e.g. AVI with B-frames).
    Keyframes,
    /// `scene:T`: the first frame, then every frame whose scene-change score (FFmpeg's `select`
    /// filter's `scene` score, in 0..1) exceeds T.
    Scene(f64),
    /// `all`: every frame.
    All,
}

impl SamplingStrategy {
    /// The strings accepted by [`FromStr`], for help texts.
    pub const SYNTAX: &'static str = "fps:N, frames:N, keyframes, scene:T (0<T<1) or all";
}

impl FromStr for SamplingStrategy {
    type Err = MediaError;

    /// Parses `fps:N`, `frames:N`, `keyframes`, `scene:T` or `all`.
    ///
    /// # Errors
    /// [`MediaError::InvalidOption`] naming the string and the expected forms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| MediaError::option("sampling strategy", s, reason);
        let t = s.trim();
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (t, None),
        };
        let need_arg = |what: &str| {
            arg.filter(|a| !a.is_empty()).ok_or_else(|| {
                bad(format!(
                    "`{name}` needs {what}, e.g. `{name}:{}`",
                    if name == "scene" { "0.3" } else { "1" }
                ))
            })
        };
        match name.to_ascii_lowercase().as_str() {
            "fps" => {
                let a = need_arg("a rate in frames per second")?;
                let v: f64 = a
                    .parse()
                    .map_err(|_| bad(format!("`{a}` is not a number")))?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(bad(
                        "the rate must be a positive number of frames per second".into(),
                    ));
                }
                Ok(SamplingStrategy::Fps(v))
            }
            "frames" => {
                let a = need_arg("a frame count")?;
                let v: u32 = a
                    .parse()
                    .map_err(|_| bad(format!("`{a}` is not a whole number")))?;
                if v == 0 {
                    return Err(bad("the frame count must be at least 1".into()));
                }
                Ok(SamplingStrategy::Frames(v))
            }
            "scene" => {
                let a = need_arg("a threshold between 0 and 1")?;
                let v: f64 = a
                    .parse()
                    .map_err(|_| bad(format!("`{a}` is not a number")))?;
                if !(v > 0.0 && v < 1.0) {
                    return Err(bad(
                        "the scene threshold must be between 0 and 1 (exclusive)".into(),
                    ));
                }
                Ok(SamplingStrategy::Scene(v))
            }
            "keyframes" | "all" if arg.is_some() => Err(bad(format!("`{name}` takes no argument"))),
            "keyframes" => Ok(SamplingStrategy::Keyframes),
            "all" => Ok(SamplingStrategy::All),
            _ => Err(bad(format!("expected {}", SamplingStrategy::SYNTAX))),
        }
    }
}

impl fmt::Display for SamplingStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplingStrategy::Fps(n) => write!(f, "fps:{n}"),
            SamplingStrategy::Frames(n) => write!(f, "frames:{n}"),
            SamplingStrategy::Keyframes => f.write_str("keyframes"),
            SamplingStrategy::Scene(t) => write!(f, "scene:{t}"),
            SamplingStrategy::All => f.write_str("all"),
        }
    }
}

/// How to reach sparse frames. Both give the same frames; only the speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeMode {
    /// Seek when the next wanted frame lies beyond the next keyframe (from the container index,
    /// or an estimate of the keyframe interval), decode forward otherwise.
    #[default]
    Auto,
    /// Never seek (except once to `from`): decode every frame in order.
    Sequential,
    /// Seek to the keyframe before every wanted frame.
    Seek,
    /// Split the window at clean keyframes into chunks and decode them at once, each with its
    /// own single-threaded decoder (one per core), returning the frames in order: `fps:N`,
    /// `frames:N` and `all` on local files (others fall back to `auto`). Independent decoders keep every
    /// core busy where one decoder's frame threads wait on each other (long chains of
    /// reference frames). [`DecodeMode::Auto`] uses it when the window spans enough keyframes.
    Parallel,
}

impl FromStr for DecodeMode {
    type Err = MediaError;
    /// Parses `auto`, `sequential`, `seek` or `parallel`.
    ///
    /// # Errors
    /// [`MediaError::InvalidOption`] for any other string.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DecodeMode::Auto),
            "sequential" | "seq" => Ok(DecodeMode::Sequential),
            "seek" => Ok(DecodeMode::Seek),
            "parallel" => Ok(DecodeMode::Parallel),
            _ => Err(MediaError::option(
                "decode mode",
                s,
                "expected auto, sequential, seek or parallel",
            )),
        }
    }
}

/// Everything that decides which frames a [`crate::Sampler`] returns and in what shape.
///
/// ```
/// use vidlm_media::{SampleOptions, SamplingStrategy};
/// let opts = SampleOptions { size: Some((384, 384)), ..SampleOptions::new(SamplingStrategy::Fps(1.0)) };
/// assert_eq!(opts.from, 0.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Which frames.
    pub strategy: SamplingStrategy,
    /// Window start in seconds of video time (0 = the first frame of the stream).
    pub from: f64,
    /// Window end in seconds (exclusive); `None` = to the end.
    pub to: Option<f64>,
    /// At most this many frames. `fps:N` and `frames:N` spread the budget over the whole window
    /// (lowering the rate) when its end is known (`to`, or the frames of a scanned input); the
    /// other strategies, and `fps:N` on a window of unknown end, stop early with a warning.
    pub max_frames: Option<usize>,
    /// Output size (width, height) after rotation; `None` keeps the display size (sample aspect
    /// ratio applied, rotation honoured).
    pub size: Option<(u32, u32)>,
    /// Absolute stream index (as `vidlm probe` lists it); `None` = FFmpeg's best video stream.
    pub stream: Option<usize>,
    /// Seek or decode sequentially; [`DecodeMode::Auto`] chooses per file.
    pub mode: DecodeMode,
    /// Decoders at work at once on chunks of the window ([`DecodeMode::Parallel`], which
    /// `auto` picks where it can); `None` = one per core (at most 8), `Some(1)` = one decoder
    /// (with its own frame threads). Speed only: the frames are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

impl SampleOptions {
    /// Options for `strategy` over the whole video, display size, best stream, automatic mode.
    pub fn new(strategy: SamplingStrategy) -> Self {
        SampleOptions {
            strategy,
            from: 0.0,
            to: None,
            max_frames: None,
            size: None,
            stream: None,
            mode: DecodeMode::Auto,
            workers: None,
        }
    }

    /// Checks the window, budget and size.
    ///
    /// # Errors
    /// [`MediaError::InvalidOption`] when `from` is negative or not finite, `to <= from`,
    /// `max_frames == 0` or a size dimension is 0.
    pub fn validate(&self) -> Result<(), MediaError> {
        if !(self.from.is_finite() && self.from >= 0.0) {
            return Err(MediaError::option(
                "--from",
                self.from,
                "must be a time >= 0",
            ));
        }
        if let Some(to) = self.to {
            if !(to.is_finite() && to > self.from) {
                return Err(MediaError::option(
                    "--to",
                    to,
                    format!("must be after --from ({} s)", self.from),
                ));
            }
        }
        if self.max_frames == Some(0) {
            return Err(MediaError::option("--max-frames", 0, "must be at least 1"));
        }
        if let Some((w, h)) = self.size {
            if w == 0 || h == 0 || w > 16384 || h > 16384 {
                return Err(MediaError::option(
                    "size",
                    format!("{w}x{h}"),
                    "each side must be 1..=16384",
                ));
            }
        }
        // Re-check values built in code rather than parsed.
        match self.strategy {
            SamplingStrategy::Fps(n) if !(n.is_finite() && n > 0.0) => Err(MediaError::option(
                "sampling strategy",
                self.strategy,
                "the rate must be positive",
            )),
            SamplingStrategy::Frames(0) => Err(MediaError::option(
                "sampling strategy",
                self.strategy,
                "need at least 1 frame",
            )),
            SamplingStrategy::Scene(t) if !(t > 0.0 && t < 1.0) => Err(MediaError::option(
                "sampling strategy",
                self.strategy,
                "the threshold must be in (0, 1)",
            )),
            _ => Ok(()),
        }
    }
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions::new(SamplingStrategy::Fps(1.0))
    }
}

/// Parses an output size `WxH` (e.g. `384x384`).
///
/// # Errors
/// [`MediaError::InvalidOption`] when it is not two positive integers joined by `x`.
///
/// ```
/// assert_eq!(vidlm_media::parse_size("384x216").unwrap(), (384, 216));
/// assert!(vidlm_media::parse_size("384").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<(u32, u32), MediaError> {
    let bad = || MediaError::option("size", s, "expected WIDTHxHEIGHT, e.g. 384x384");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w > 16384 || h > 16384 {
        return Err(MediaError::option("size", s, "each side must be 1..=16384"));
    }
    Ok((w, h))
}

/// Parses a time: seconds (`12.5`) or `[HH:]MM:SS[.fff]` (`1:02:03.5`).
///
/// # Errors
/// [`MediaError::InvalidOption`] when malformed or negative.
///
/// ```
/// assert_eq!(vidlm_media::parse_time("1:30").unwrap(), 90.0);
/// assert_eq!(vidlm_media::parse_time("2.5").unwrap(), 2.5);
/// ```
pub fn parse_time(s: &str) -> Result<f64, MediaError> {
    let bad = || {
        MediaError::option(
            "time",
            s,
            "not a time: expected seconds (12.5) or [HH:]MM:SS[.fff]",
        )
    };
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(bad());
    }
    let mut total = 0.0;
    for (i, p) in parts.iter().enumerate() {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || v < 0.0 || (i > 0 && v >= 60.0) {
            return Err(bad());
        }
        total = total * 60.0 + v;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_errors_are_clear() {
        for (s, want) in [
            ("fps", "needs a rate"),
            ("fps:x", "not a number"),
            ("fps:-1", "positive"),
            ("frames:0", "at least 1"),
            ("frames:2.5", "whole number"),
            ("scene:1.5", "between 0 and 1"),
            ("keyframes:3", "takes no argument"),
            ("bogus", "expected fps:N"),
        ] {
            let e = s.parse::<SamplingStrategy>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(e.contains(s), "{s}: {e}");
        }
        assert_eq!(
            "FPS:0.25".parse::<SamplingStrategy>().unwrap(),
            SamplingStrategy::Fps(0.25)
        );
        assert_eq!(
            "all".parse::<SamplingStrategy>().unwrap(),
            SamplingStrategy::All
        );
    }

    #[test]
    fn strategy_roundtrips_through_display() {
        for s in ["fps:0.5", "frames:64", "keyframes", "scene:0.3", "all"] {
            assert_eq!(s.parse::<SamplingStrategy>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn times_and_sizes() {
        assert_eq!(parse_time("01:02:03.5").unwrap(), 3723.5);
        assert!(parse_time("1:75").is_err());
        assert!(parse_time("-3").is_err());
        assert!(parse_size("0x5").is_err());
        assert_eq!(parse_size(" 10X20 ").unwrap(), (10, 20));
    }

    #[test]
    fn validate_rejects_bad_windows() {
        let mut o = SampleOptions::new(SamplingStrategy::All);
        o.from = 5.0;
        o.to = Some(5.0);
        assert!(o.validate().unwrap_err().to_string().contains("--to"));
        o.to = None;
        o.max_frames = Some(0);
        assert!(o.validate().is_err());
    }
}
