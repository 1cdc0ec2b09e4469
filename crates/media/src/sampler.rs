//! The sampler: decides which frames to decode and returns them as RGB, one at a time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::convert::{RgbConverter, ScenePlanes};
use crate::decode::Source;
use crate::error::MediaError;
use crate::input::Input;
use crate::options::{DecodeMode, SampleOptions, SamplingStrategy};
use crate::probe::MediaInfo;
use crate::scene::SceneDetector;

/// One sampled frame.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledFrame {
    /// Packed RGB24 pixels, `width * height * 3` bytes, rows top to bottom, no padding.
    #[serde(skip)]
    pub rgb: Vec<u8>,
    /// Width in pixels (as displayed, or the requested size).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Presentation time in seconds from the stream's start (the first frame is at 0.0).
    pub pts: f64,
    /// Position of the frame in display order (0-based), where it is known: on a constant frame
    /// rate grid from the container index, or by counting when decoding from the start.
    pub index: Option<u64>,
    /// Whether the frame is a key (intra) frame.
    pub keyframe: bool,
}

impl std::fmt::Debug for SampledFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampledFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pts", &self.pts)
            .field("index", &self.index)
            .field("keyframe", &self.keyframe)
            .field("rgb_len", &self.rgb.len())
            .finish()
    }
}

impl SampledFrame {
    /// Writes the frame as an RGB PNG at `path`, atomically: to a temporary file in the same
    /// directory, renamed into place, so a reader never sees half a file.
    ///
    /// # Errors
    /// [`MediaError::Write`] when encoding or any file operation fails.
    pub fn write_png(&self, path: &std::path::Path) -> Result<(), MediaError> {
        let err = |reason: String| MediaError::Write {
            path: path.display().to_string(),
            reason,
        };
        let img = image::RgbImage::from_raw(self.width, self.height, self.rgb.clone()).ok_or_else(
            || {
                err(format!(
                    "buffer of {} bytes is not {}x{} RGB",
                    self.rgb.len(),
                    self.width,
                    self.height
                ))
            },
        )?;
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| err(e.to_string()))?;
        write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Work counters of a [`Sampler`], to check that sparse sampling decodes a fraction of a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerStats {
    /// Frames the decoder produced.
    pub decoded: u64,
    /// Seeks performed.
    pub seeks: u64,
    /// Frames returned.
    pub returned: u64,
}

/// Upcoming target times of `fps:N` / `frames:N`.
enum Targets {
    /// `from + k * step` for k = 0.. while below `end` and below `count`.
    Grid {
        from: f64,
        step: f64,
        k: u64,
        count: Option<u64>,
    },
    /// Explicit times.
    List { times: Vec<f64>, i: usize },
}

impl Targets {
    fn peek(&self) -> Option<f64> {
        match self {
            Targets::Grid {
                from,
                step,
                k,
                count,
            } => {
                if count.is_some_and(|c| *k >= c) {
                    None
                } else {
                    Some(from + *k as f64 * step)
                }
            }
            Targets::List { times, i } => times.get(*i).copied(),
        }
    }
    fn advance(&mut self) {
        match self {
            Targets::Grid { k, .. } => *k += 1,
            Targets::List { i, .. } => *i += 1,
        }
    }
}

/// Checks frames after a seek: the seek must land on a keyframe at or before the target,
/// otherwise frames between the target and the keyframe would be missed (or be broken leading
/// pictures of an open GOP), and the sampler seeks further back.
struct SeekGuard {
    /// The time the caller wants to reach (absolute ticks).
    target: i64,
    attempt: u32,
    key_ts: Option<i64>,
    frames: u32,
}

/// Streams sampled frames of one video: an iterator of `Result<SampledFrame, MediaError>`.
///
/// Frames come out in presentation order as they are decoded, so a consumer can push them into
/// a bounded channel. A truncated or unreadable tail ends the iteration after the frames before
/// it; the reason is logged as a warning and kept in [`Sampler::warnings`].
///
/// ```no_run
/// use vidlm_media::{Input, SampleOptions, Sampler, SamplingStrategy};
/// let opts = SampleOptions { size: Some((384, 384)), ..SampleOptions::new("fps:1".parse()?) };
/// for frame in Sampler::open(&Input::parse("samples/bbb-720p-5s.mp4"), opts)? {
///     let frame = frame?;
///     println!("{:.3} s {}x{}", frame.pts, frame.width, frame.height);
/// }
/// # Ok::<(), vidlm_media::MediaError>(())
/// ```
pub struct Sampler {
    src: Source,
    opts: SampleOptions,
    conv: RgbConverter,
    scene: Option<(ScenePlanes, SceneDetector, f64)>,
    targets: Option<Targets>,
    from_ts: i64,
    to_ts: Option<i64>,
    window_end: Option<f64>,
    max_frames: Option<usize>,
    last_emitted: Option<i64>,
    /// Keyframe interval in ticks (index, or estimated from the first packets).
    kf_interval: Option<i64>,
    guard: Option<SeekGuard>,
    started: bool,
    done: bool,
    warnings: Vec<String>,
    stats: SamplerStats,
    intra_only: bool,
}

impl Sampler {
    /// Opens `input` and prepares sampling with `opts`.
    ///
    /// # Errors
    /// Invalid options, an input that cannot be opened, has no (such) video stream, has no
    /// decoder, or `frames:N` on an input of unknown duration without `to`.
    pub fn open(input: &Input, opts: SampleOptions) -> Result<Sampler, MediaError> {
        opts.validate()?;
        let keyframes_only = opts.strategy == SamplingStrategy::Keyframes;
        let src = Source::open(input, opts.stream, keyframes_only)?;
        let sinfo = &src.info.streams[src.stream_index];
        let duration = sinfo.duration.or(src.info.duration);
        let window_end = match (opts.to, duration) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (Some(t), None) => Some(t),
            (None, d) => d,
        };
        let from_ts = src.ticks_ceil(opts.from);
        let to_ts = opts.to.map(|t| src.ticks_ceil(t));
        let span = window_end.map(|e| (e - opts.from).max(0.0));
        let targets = match opts.strategy {
            SamplingStrategy::Fps(rate) => {
                let mut step = 1.0 / rate;
                let mut count = None;
                if let (Some(max), Some(span)) = (opts.max_frames, span) {
                    let expected = (span * rate).ceil() as usize;
                    if expected > max {
                        // Spread the budget over the whole window instead of stopping early.
                        step = span / max as f64;
                        count = Some(max as u64);
                        tracing::info!("{}: fps:{rate} would give ~{expected} frames; --max-frames {max} lowers the rate to {:.4}/s", src.name, 1.0 / step);
                    }
                }
                Some(Targets::Grid {
                    from: opts.from,
                    step,
                    k: 0,
                    count,
                })
            }
            SamplingStrategy::Frames(n) => {
                let Some(span) = span.filter(|s| *s > 0.0) else {
                    // An empty window (--from at or past the end) is a different mistake from an
                    // input whose length nobody knows: say which.
                    let reason = match window_end {
                        Some(end) => match duration {
                            Some(d) if opts.from >= d => format!(
                                "the window starts at {:.3} s, at or past the end of the video ({d:.3} s)",
                                opts.from
                            ),
                            _ => format!(
                                "the window from {:.3} s to {end:.3} s is empty",
                                opts.from
                            ),
                        },
                        None => format!(
                            "frames:{n} needs a known duration; this input has none, give --to"
                        ),
                    };
                    return Err(MediaError::Unsupported {
                        input: src.name.clone(),
                        reason,
                    });
                };
                let n = opts.max_frames.map_or(n as usize, |m| m.min(n as usize));
                let seg = span / n as f64;
                Some(Targets::List {
                    times: (0..n).map(|i| opts.from + (i as f64 + 0.5) * seg).collect(),
                    i: 0,
                })
            }
            _ => None,
        };
        let scene = match opts.strategy {
            SamplingStrategy::Scene(t) => Some((ScenePlanes::new(), SceneDetector::default(), t)),
            _ => None,
        };
        let kf_interval = src
            .facts
            .keyframe_interval_secs()
            .map(|s| (s / src.facts.tb).round() as i64);
        let conv = RgbConverter::new(opts.size, src.facts.rotation_cw, src.sar);
        let intra_only = intra_only(&src);
        let mut s = Sampler {
            conv,
            scene,
            targets,
            from_ts,
            to_ts,
            window_end,
            max_frames: opts.max_frames,
            last_emitted: None,
            kf_interval,
            guard: None,
            started: false,
            done: false,
            warnings: Vec::new(),
            stats: SamplerStats::default(),
            intra_only,
            opts,
            src,
        };
        if s.kf_interval.is_none()
            && s.src.seekable
            && s.opts.mode == DecodeMode::Auto
            && s.targets.is_some()
        {
            s.kf_interval = s.estimate_keyframe_interval();
        }
        tracing::debug!(
            "{}: stream {}, keyframe interval {:?} s, seekable {}, mode {:?}",
            s.src.name,
            s.src.stream_index,
            s.kf_interval.map(|k| k as f64 * s.src.facts.tb),
            s.src.seekable,
            s.opts.mode
        );
        Ok(s)
    }

    /// What `probe` reports for this input.
    pub fn info(&self) -> &MediaInfo {
        &self.src.info
    }

    /// The stream being decoded.
    pub fn stream_index(&self) -> usize {
        self.src.stream_index
    }

    /// The options in use.
    pub fn options(&self) -> &SampleOptions {
        &self.opts
    }

    /// Warnings so far (e.g. a truncated file, a budget that cut sampling short).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Work done so far.
    pub fn stats(&self) -> SamplerStats {
        SamplerStats {
            decoded: self.src.frames_out,
            ..self.stats
        }
    }

    /// Keyframe interval used for the seek-or-decode choice, when known.
    pub fn keyframe_interval(&self) -> Option<Duration> {
        self.kf_interval
            .map(|k| Duration::from_secs_f64((k as f64 * self.src.facts.tb).max(0.0)))
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// Reads packet flags of the first few keyframes (no decoding), then rewinds.
    fn estimate_keyframe_interval(&mut self) -> Option<i64> {
        let keys = self.src.scan_keyframes(4, 2000);
        if let Err(e) = self.src.rewind() {
            tracing::debug!("{e}");
            self.src.seekable = false;
            return None;
        }
        // Rewinding to the start is not a seek for frame-counting purposes.
        self.src.seeked = false;
        if keys.len() < 2 {
            return None;
        }
        let mut gaps: Vec<i64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2])
    }

    fn frame_index(&self, ts: i64) -> Option<u64> {
        if let Some(step) = self.src.facts.cfr_step {
            return Some(
                ((ts - self.src.start_ts) as f64 / step as f64)
                    .round()
                    .max(0.0) as u64,
            );
        }
        (!self.src.seeked && self.opts.strategy != SamplingStrategy::Keyframes)
            .then(|| self.src.frames_out.saturating_sub(1))
    }

    /// Whether to seek to reach `target` (absolute ticks) rather than decode forward.
    fn should_seek(&self, target: i64) -> bool {
        if !self.src.seekable {
            return false;
        }
        match self.opts.mode {
            DecodeMode::Sequential => false,
            DecodeMode::Seek => true,
            DecodeMode::Auto => {
                let pos = self.src.read_pos.unwrap_or(if self.src.seeked {
                    target
                } else {
                    self.src.start_ts
                });
                let keys = &self.src.facts.keyframes;
                if keys.len() >= 2 {
                    // Seek when the keyframe before the target lies well ahead of the read
                    // position: everything in between would be decoded for nothing. "Well": a
                    // seek discards the frames in flight in the decoder threads.
                    // Index times are decode times; a keyframe is shown up to the reorder
                    // delay later, so it serves the target only if its dts is that much earlier.
                    let k = keys.partition_point(|&k| k <= target - self.src.reorder_ticks);
                    let Some(&kf) = k.checked_sub(1).and_then(|i| keys.get(i)) else {
                        return false;
                    };
                    let min_skip = (0.5 / self.src.facts.tb) as i64;
                    kf > pos + min_skip
                } else if let Some(iv) = self.kf_interval {
                    target - pos > 2 * iv
                } else {
                    false
                }
            }
        }
    }

    fn seek_to(&mut self, target: i64) -> Result<(), MediaError> {
        // MP4 seeks by presentation time (AVFMT_SEEK_TO_PTS): the target itself. Demuxers that
        // seek by decode time land up to the B-frame reorder delay late, and without an index
        // (MPEG-TS) on any packet: aim a little early, the guard checks the landing.
        let margin = if self.src.seeks_by_pts {
            0
        } else if self.src.facts.keyframes.is_empty() {
            4 * self.src.frame_ticks
        } else {
            self.src.reorder_ticks
        };
        self.src.seek(target - margin)?;
        self.stats.seeks += 1;
        self.guard = Some(SeekGuard {
            target,
            attempt: 0,
            key_ts: None,
            frames: 0,
        });
        if let Some((_, det, _)) = self.scene.as_mut() {
            det.reset();
        }
        Ok(())
    }

    /// The next decoded frame in presentation order, with seek checks applied.
    fn next_decoded(&mut self) -> Result<Option<i64>, MediaError> {
        loop {
            let Some(ts) = self.src.next_frame()? else {
                return Ok(None);
            };
            let Some(g) = self.guard.as_mut() else {
                return Ok(Some(ts));
            };
            g.frames += 1;
            let is_key = self.intra_only || self.src.frame().is_key();
            if g.key_ts.is_none() && is_key {
                g.key_ts = Some(ts);
            }
            match g.key_ts {
                Some(k) if k <= g.target => {
                    self.guard = None;
                    return Ok(Some(ts));
                }
                // Decoders that never flag keys, or no earlier keyframe to be found: stop
                // checking rather than skip everything.
                _ if g.frames > 600 || (g.attempt >= 5 && ts >= g.target) => {
                    self.guard = None;
                    return Ok(Some(ts));
                }
                // Leading pictures before the first keyframe, and before the target anyway.
                None if ts < g.target => continue,
                _ => {
                    // Landed after the target (demuxers seek by dts, or to a non-key packet):
                    // go further back, doubling the step.
                    let attempt = g.attempt + 1;
                    let target = g.target;
                    let back = self
                        .kf_interval
                        .unwrap_or((1.0 / self.src.facts.tb) as i64)
                        .max(1)
                        << attempt.min(20);
                    let seek_ts = target.saturating_sub(back);
                    tracing::debug!(
                        "{}: seek landed after {:.3} s; retrying from {:.3} s",
                        self.src.name,
                        self.src.seconds(target),
                        self.src.seconds(seek_ts)
                    );
                    self.src.seek(seek_ts)?;
                    self.stats.seeks += 1;
                    self.guard = Some(SeekGuard {
                        target,
                        attempt,
                        key_ts: None,
                        frames: 0,
                    });
                }
            }
        }
    }

    fn emit(&mut self, ts: i64) -> Result<SampledFrame, MediaError> {
        let keyframe = self.src.frame().is_key();
        let index = self.frame_index(ts);
        let (rgb, width, height) = self.conv.convert(&self.src.name, self.src.frame())?;
        self.last_emitted = Some(ts);
        self.stats.returned += 1;
        Ok(SampledFrame {
            rgb,
            width,
            height,
            pts: self.src.seconds(ts),
            index,
            keyframe,
        })
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let last = self.last_emitted.map(|t| self.src.seconds(t));
        let end = self.window_end;
        let cut = self.src.info.truncated_at;
        let wanted_past_cut = match (cut, end) {
            (Some(c), Some(e)) => e > c,
            (Some(_), None) => true,
            _ => false,
        };
        if self.src.read_error.is_some() || wanted_past_cut {
            let at = match (cut, last) {
                (Some(c), _) => format!("data ends at {c:.3} s"),
                (None, Some(l)) => format!("last frame at {l:.3} s"),
                (None, None) => "no frame could be read".to_string(),
            };
            let of = self
                .src
                .info
                .duration
                .map(|d| format!(" of {d:.3} s"))
                .unwrap_or_default();
            let why = self
                .src
                .read_error
                .clone()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            self.warn(format!(
                "{}: truncated or unreadable input: {at}{of}; returned the frames before it{why}",
                self.src.name
            ));
        }
    }

    fn budget_left(&mut self) -> bool {
        match self.max_frames {
            Some(m) if self.stats.returned as usize >= m => {
                if self.targets.is_none() {
                    let at = self
                        .last_emitted
                        .map(|t| self.src.seconds(t))
                        .unwrap_or(0.0);
                    self.warn(format!(
                        "{}: stopped at --max-frames {m} ({at:.3} s into the video)",
                        self.src.name
                    ));
                }
                false
            }
            _ => true,
        }
    }

    fn next_inner(&mut self) -> Result<Option<SampledFrame>, MediaError> {
        if self.done || !self.budget_left() {
            self.done = true;
            return Ok(None);
        }
        if !self.started {
            self.started = true;
            // Targets seek by themselves; the other strategies start at `from`.
            if self.targets.is_none() && self.from_ts > self.src.start_ts && self.src.seekable {
                self.seek_to(self.from_ts)?;
            }
        }
        if self.targets.is_some() {
            return self.next_target();
        }
        loop {
            let Some(ts) = self.next_decoded()? else {
                return Ok(None);
            };
            if self.to_ts.is_some_and(|t| ts >= t) {
                return Ok(None);
            }
            let in_window = ts >= self.from_ts && self.last_emitted.is_none_or(|l| ts > l);
            if let Some((planes, det, threshold)) = self.scene.as_mut() {
                // Score every frame (also before the window) so the first in-window score has
                // its predecessor, as FFmpeg's filter does.
                let px = planes
                    .planes(self.src.frame())
                    .map_err(|reason| MediaError::Convert {
                        input: self.src.name.clone(),
                        format: format!("{:?}", self.src.frame().format()).to_lowercase(),
                        width: self.src.frame().width(),
                        height: self.src.frame().height(),
                        reason,
                    })?;
                let score = det.push(px);
                let first = self.last_emitted.is_none();
                if !(in_window && (first || score > *threshold)) {
                    continue;
                }
                tracing::trace!("scene score {score:.4} at {:.3} s", self.src.seconds(ts));
            } else if !in_window {
                continue;
            }
            return self.emit(ts).map(Some);
        }
    }

    fn next_target(&mut self) -> Result<Option<SampledFrame>, MediaError> {
        // Next target strictly after the last returned frame.
        let target = loop {
            let Some(t) = self.targets.as_ref().and_then(Targets::peek) else {
                return Ok(None);
            };
            if self.window_end.is_some_and(|e| t >= e) && self.opts.to.is_some() {
                return Ok(None);
            }
            let tt = self.src.ticks_ceil(t);
            if self.last_emitted.is_some_and(|l| tt <= l) {
                self.targets.as_mut().expect("some").advance();
                continue;
            }
            break tt;
        };
        if self.should_seek(target) {
            self.seek_to(target)?;
        }
        // Frames shown before the target are never returned: let the decoder drop the
        // non-reference ones.
        self.src.skip_before = Some(target);
        loop {
            let Some(ts) = self.next_decoded()? else {
                return Ok(None);
            };
            if self.to_ts.is_some_and(|t| ts >= t) {
                return Ok(None);
            }
            if ts >= target && self.last_emitted.is_none_or(|l| ts > l) {
                // Targets at or before this frame are served by it.
                while let Some(t) = self.targets.as_ref().and_then(Targets::peek) {
                    if self.src.ticks_ceil(t) <= ts {
                        self.targets.as_mut().expect("some").advance();
                    } else {
                        break;
                    }
                }
                return self.emit(ts).map(Some);
            }
        }
    }
}

fn intra_only(src: &Source) -> bool {
    use ffmpeg_next::ffi;
    let Some(Some(name)) = src
        .info
        .streams
        .get(src.stream_index)
        .map(|s| s.codec_name.clone())
    else {
        return false;
    };
    let Ok(cname) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: static descriptor table lookup.
    unsafe {
        let d = ffi::avcodec_descriptor_get_by_name(cname.as_ptr());
        !d.is_null() && ((*d).props & ffi::AV_CODEC_PROP_INTRA_ONLY) != 0
    }
}

impl Iterator for Sampler {
    type Item = Result<SampledFrame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_inner() {
            Ok(Some(f)) => Some(Ok(f)),
            Ok(None) => {
                self.finish();
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Samples `input` with `opts` and collects every frame (warnings are logged).
///
/// # Errors
/// As [`Sampler::open`], and the first error while decoding.
///
/// ```no_run
/// use vidlm_media::{sample_all, Input, SampleOptions, SamplingStrategy};
/// let frames = sample_all(&Input::parse("samples/bbb-720p-5s.mp4"), SampleOptions::new(SamplingStrategy::Frames(8)))?;
/// assert_eq!(frames.len(), 8);
/// # Ok::<(), vidlm_media::MediaError>(())
/// ```
pub fn sample_all(input: &Input, opts: SampleOptions) -> Result<Vec<SampledFrame>, MediaError> {
    Sampler::open(input, opts)?.collect()
}
