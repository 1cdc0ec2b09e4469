//! The sampler: decides which frames to decode and returns them as RGB, one at a time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::convert::{RgbConverter, ScenePlanes};
use crate::decode::{self, Source};
use crate::error::MediaError;
use crate::input::Input;
use crate::options::{DecodeMode, SampleOptions, SamplingStrategy};
use crate::probe::MediaInfo;
use crate::scene::SceneDetector;
use crate::timeline::{self, Domain, KeyPoint, Timeline};

mod parallel;

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
    /// Chunks of the window decoded side by side ([`DecodeMode::Parallel`]); 0 when one
    /// decoder did all the work.
    pub chunks: u64,
}

/// Most frames a decoder reorders (H.264's limit), for keyframe times only known by decode time.
const MAX_REORDER_FRAMES: i64 = 16;

/// What a seek costs, in frames decoded: the decoder's flush drops the frames in flight in its
/// frame threads and refills them, and the frames up to the first one wanted are skipped cheaply
/// (non-reference frames are not decoded) either way. Measured on the 596 s film (720p H.264,
/// 2 cores, `fps:1`): seeking whenever the keyframe was 0.5 s (12 frames) ahead made 103 seeks
/// that saved 128 decoded frames in all and cost 3.5 s, about 12 frames' decode time each, so a
/// seek pays off only past twice that.
const SEEK_COST_FRAMES: i64 = 24;

/// Upcoming targets of `fps:N` / `frames:N`, in ticks relative to the first frame: for each,
/// the first frame shown at or after it.
#[derive(Clone)]
enum Targets {
    /// `from + k * step` seconds for k = 0.. while below `count`.
    Grid {
        from: f64,
        step: f64,
        k: u64,
        count: Option<u64>,
        tb: (i64, i64),
    },
    /// Explicit targets (`frames:N`: a point just after the frame before each chosen frame).
    List { ticks: Vec<i64>, i: usize },
}

impl Targets {
    fn peek(&self) -> Option<i64> {
        match self {
            Targets::Grid {
                from,
                step,
                k,
                count,
                tb,
            } => {
                let t = ticks_ceil(from + *k as f64 * step, *tb);
                // Past every representable time (damaged timestamps): no more targets.
                (count.is_none_or(|c| *k < c) && t < TICKS_LIMIT).then_some(t)
            }
            Targets::List { ticks, i } => ticks.get(*i).copied(),
        }
    }
    fn advance(&mut self) {
        match self {
            Targets::Grid { k, .. } => *k += 1,
            Targets::List { i, .. } => *i += 1,
        }
    }

    /// Drops the targets at or before `t` (served by a frame there). Jumps on a grid, so a
    /// frame far ahead (a damaged timestamp) costs no step per target in between.
    fn skip_through(&mut self, t: i64) {
        if let Targets::Grid {
            from, step, k, tb, ..
        } = self
        {
            let secs = (i128::from(t) * i128::from(tb.0)) as f64 / tb.1 as f64;
            let jump = ((secs - *from) / *step).floor() - 1.0;
            if jump.is_finite() && jump > *k as f64 {
                *k = jump.min(u64::MAX as f64 / 2.0) as u64;
            }
        }
        while self.peek().is_some_and(|x| x <= t) {
            self.advance();
        }
    }
}

/// Ticks (time base `num/den`) of a time in seconds, rounded up so that a frame at exactly
/// that time compares as not earlier.
fn ticks_ceil(seconds: f64, (num, den): (i64, i64)) -> i64 {
    let t = (seconds * den as f64 / num as f64 - 1e-6).ceil();
    t.clamp(-TICKS_LIMIT as f64, TICKS_LIMIT as f64) as i64
}

/// Times are clamped to +-this many ticks, far from overflow in sums.
const TICKS_LIMIT: i64 = i64::MAX / 4;

/// Streams sampled frames of one video: an iterator of `Result<SampledFrame, MediaError>`.
///
/// Frames come out in presentation order as they are decoded, so a consumer can push them into
/// a bounded channel. A truncated or unreadable tail ends the iteration after the frames before
/// it; the reason is logged as a warning and kept in [`Sampler::warnings`]. An iteration that
/// would return no frame although the window holds frames ends with
/// [`MediaError::NoFrames`] instead.
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
    /// Every frame's time, when the input could be scanned (or read ahead).
    timeline: Option<Timeline>,
    /// Absolute timestamp of the first frame: all times are relative to it.
    origin: Option<i64>,
    /// Time base as a fraction.
    tb: (i64, i64),
    from: i64,
    to: Option<i64>,
    /// Where the window ends (relative ticks): `to`, or the end of the video when known.
    window_end: Option<i64>,
    max_frames: Option<usize>,
    /// Relative time of the last frame returned.
    last_emitted: Option<i64>,
    /// Relative time of the last frame decoded (the decode position).
    position: Option<i64>,
    /// Keyframe interval in ticks (index, or estimated from the first packets).
    kf_interval: Option<i64>,
    /// Frames decoded inside the window.
    seen_in_window: u64,
    started: bool,
    done: bool,
    warnings: Vec<String>,
    stats: SamplerStats,
    /// Chunks decoded on worker threads ([`DecodeMode::Parallel`]), when in use.
    par: Option<parallel::Parallel>,
}

impl Sampler {
    /// Opens `input` and prepares sampling with `opts`.
    ///
    /// Local files are scanned first (packets only, no decoding) for the time of every frame;
    /// URLs are scanned when `frames:N` or a frame budget needs the frame times; inputs that
    /// cannot seek (standard input, servers without range requests) are read ahead into memory
    /// for `frames:N` (up to the window end, at most 1 GiB).
    ///
    /// # Errors
    /// Invalid options, an input that cannot be opened, has no (such) video stream, has no
    /// decoder or no decodable frame, `frames:N` on an empty window, or `frames:N` on a live
    /// input without `to`.
    pub fn open(input: &Input, opts: SampleOptions) -> Result<Sampler, MediaError> {
        opts.validate()?;
        let keyframes_only = opts.strategy == SamplingStrategy::Keyframes;
        let mut src = Source::open(input, opts.stream, keyframes_only, 0)?;
        let tb = (src.facts.tb_num, src.facts.tb_den);
        let wants_times = matches!(opts.strategy, SamplingStrategy::Frames(_))
            || (matches!(opts.strategy, SamplingStrategy::Fps(_)) && opts.max_frames.is_some());
        let mut timeline = None;
        if src.seekable && (wants_times || input.is_local_file()) {
            let (packets, cut) = decode::scan_packets(input, src.stream_index)?;
            if let Some(cut) = cut {
                tracing::debug!("{}: the packet scan stopped early: {cut}", src.name);
            }
            timeline = Timeline::build(&packets, src.frame_ticks);
        } else if wants_times && matches!(opts.strategy, SamplingStrategy::Frames(_)) {
            let live = input.is_live_protocol() && src.info.duration.is_none();
            if live && opts.to.is_none() {
                return Err(MediaError::Unsupported {
                    input: src.name.clone(),
                    reason: format!(
                        "{} picks frames from the whole window, and this live input has no end: give --to (the window end), or use fps:N",
                        opts.strategy
                    ),
                });
            }
            let stop = opts.to.map(|t| ticks_ceil(t, tb));
            let margin = 16 + 2 * (src.reorder_ticks / src.frame_ticks.max(1)) as usize;
            let packets = src.read_ahead(stop, margin)?;
            timeline = Timeline::build(&packets, src.frame_ticks);
            if let (Some(tl), Some(stop)) = (timeline.as_mut(), stop) {
                tl.truncate(stop);
            }
        }
        if let Some(tl) = &timeline {
            if tl.domain == Domain::Count {
                // No timestamps to seek by (raw elementary streams): decode in order.
                src.seekable = false;
            }
            if tl.domain != Domain::Pts && src.reorder_ticks > 0 {
                // Without presentation times, only the decoder knows when a reordered keyframe
                // is shown (an open GOP's leading pictures follow it): find the keyframes by
                // decoding every frame.
                src.keyframes_only = false;
            }
            src.frame_ticks = tl.frame_ticks;
            src.skip_ok = tl.domain == Domain::Pts;
        }
        let origin = src.peek()?;
        let Some(origin) = origin else {
            let cannot_seek = match input {
                Input::Url(_) => "the server cannot seek (it does not answer range requests)",
                Input::Stdin => "standard input cannot seek",
                Input::Path(_) => "the file cannot seek",
            };
            if !src.seekable && !input.is_live_protocol() && src.read_error.is_some() {
                return Err(MediaError::Unsupported {
                    input: src.name.clone(),
                    reason: format!(
                        "{cannot_seek}, and this {} cannot be read front to back (an MP4 whose index lies after its data: give a file or a server with range requests, or remux it with `-movflags +faststart`) ({})",
                        src.info.format_name,
                        src.read_error.clone().unwrap_or_default()
                    ),
                });
            }
            let why = src
                .read_error
                .clone()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(MediaError::NoFrames {
                input: src.name.clone(),
                reason: format!(
                    "no frame of stream {} could be decoded{why}",
                    src.stream_index
                ),
            });
        };
        let origin = match timeline.as_mut() {
            // The first keyframe need not be the first frame shown (an MP4 edit list may start
            // after it): times count from the first frame the timeline shows.
            Some(tl) if src.keyframes_only && tl.domain == Domain::Pts => tl.origin,
            Some(tl) => {
                rebase(tl, origin, &src.name);
                origin
            }
            None => origin,
        };
        let from = ticks_ceil(opts.from, tb);
        let to = opts.to.map(|t| ticks_ceil(t, tb));
        // Only the frames themselves say where the video ends: a container's declared
        // duration can include other streams, a start offset, or only the first fragment.
        let video_end = timeline.as_ref().map(Timeline::end);
        let window_end = match (to, video_end) {
            (Some(t), Some(e)) => Some(t.min(e)),
            (Some(t), None) => Some(t),
            (None, e) => e,
        };
        let seconds = |t: i64| (i128::from(t) * i128::from(tb.0)) as f64 / tb.1 as f64;
        let targets = match opts.strategy {
            SamplingStrategy::Fps(rate) => {
                let mut step = 1.0 / rate;
                let mut count = None;
                if let (Some(max), Some(end)) = (opts.max_frames, window_end) {
                    let span = (seconds(end) - opts.from).max(0.0);
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
                    tb,
                })
            }
            SamplingStrategy::Frames(n) => {
                let Some(tl) = &timeline else {
                    return Err(MediaError::Unsupported {
                        input: src.name.clone(),
                        reason: format!(
                            "frames:{n} needs the time of every frame, and this input gives none"
                        ),
                    });
                };
                let range = tl.window(from, to);
                if range.is_empty() {
                    let end = seconds(tl.end());
                    let reason = if opts.from >= end {
                        format!(
                            "the window starts at {:.3} s, at or past the end of the video ({end:.3} s)",
                            opts.from
                        )
                    } else {
                        format!(
                            "the window from {:.3} s to {:.3} s holds no frame",
                            opts.from,
                            opts.to.unwrap_or(end)
                        )
                    };
                    return Err(MediaError::Unsupported {
                        input: src.name.clone(),
                        reason,
                    });
                }
                let n = opts.max_frames.map_or(n as usize, |m| m.min(n as usize));
                let times = &tl.times[range.clone()];
                let picks = if tl.constant_rate {
                    timeline::uniform_indices(times.len(), n)
                } else {
                    timeline::nearest_indices(times, n)
                };
                let ticks = picks
                    .into_iter()
                    .map(|j| tl.target_of(range.start + j))
                    .collect();
                Some(Targets::List { ticks, i: 0 })
            }
            _ => None,
        };
        let scene = match opts.strategy {
            SamplingStrategy::Scene(t) => Some((ScenePlanes::new(), SceneDetector::default(), t)),
            _ => None,
        };
        let kf_interval = match &timeline {
            Some(tl) => {
                let mut gaps: Vec<i64> =
                    tl.keys.windows(2).map(|w| w[1].time - w[0].time).collect();
                gaps.sort_unstable();
                gaps.get(gaps.len() / 2).copied()
            }
            None => src
                .facts
                .keyframe_interval_secs()
                .map(|s| (s / src.facts.tb).round() as i64),
        };
        let conv = RgbConverter::new(opts.size, src.facts.rotation_cw, src.sar);
        let mut s = Sampler {
            conv,
            scene,
            targets,
            timeline,
            origin: Some(origin),
            tb,
            from,
            to,
            window_end,
            max_frames: opts.max_frames,
            last_emitted: None,
            position: None,
            kf_interval,
            seen_in_window: 0,
            started: false,
            done: false,
            warnings: Vec::new(),
            stats: SamplerStats::default(),
            par: None,
            opts,
            src,
        };
        if s.kf_interval.is_none()
            && s.timeline.is_none()
            && s.src.seekable
            && s.opts.mode == DecodeMode::Auto
            && s.targets.is_some()
        {
            s.kf_interval = s.estimate_keyframe_interval();
        }
        s.par = parallel::start(&s, input);
        tracing::debug!(
            "{}: stream {}, {} frames scanned, keyframe interval {:?} s, seekable {}, mode {:?}",
            s.src.name,
            s.src.stream_index,
            s.timeline.as_ref().map_or(0, |t| t.times.len()),
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
            decoded: self.src.frames_out + self.par.as_ref().map_or(0, |p| p.decoded),
            chunks: self.par.as_ref().map_or(0, |p| p.chunks),
            ..self.stats
        }
    }

    /// The video stream's duration in seconds from its first frame: after the last frame when
    /// every frame's time is known (local files, and inputs scanned for `frames:N`), else the
    /// duration the container declares for the stream, `None` when it declares none (live
    /// streams, standard input).
    pub fn duration(&self) -> Option<f64> {
        let origin = self.origin?;
        match &self.timeline {
            Some(tl) => Some(self.seconds(tl.end())),
            None => declared_end(&self.src, origin, self.tb).map(|e| self.seconds(e)),
        }
        .filter(|d| *d > 0.0)
    }

    /// The number of frames of the stream, when every frame's time is known (see
    /// [`Sampler::duration`]).
    pub fn frame_count(&self) -> Option<u64> {
        self.timeline.as_ref().map(|t| t.times.len() as u64)
    }

    /// Keyframe interval used for the seek-or-decode choice, when known.
    pub fn keyframe_interval(&self) -> Option<Duration> {
        self.kf_interval
            .map(|k| Duration::from_secs_f64((k as f64 * self.src.facts.tb).max(0.0)))
    }

    fn seconds(&self, t: i64) -> f64 {
        // One rounding (the division) so that e.g. 113 * 512 / 12800 is exactly 4.52.
        (i128::from(t) * i128::from(self.tb.0)) as f64 / self.tb.1 as f64
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// Reads packet flags of the first few keyframes (no decoding; the packets are kept for
    /// decoding).
    fn estimate_keyframe_interval(&mut self) -> Option<i64> {
        let keys = self.src.scan_keyframes(4, 2000);
        if keys.len() < 2 {
            return None;
        }
        let mut gaps: Vec<i64> = keys.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2])
    }

    fn origin(&self) -> i64 {
        self.origin.unwrap_or(self.src.start_ts)
    }

    fn frame_index(&self, t: i64) -> Option<u64> {
        if let Some(tl) = &self.timeline {
            return tl.index_of(t);
        }
        if let Some(step) = self.src.facts.cfr_step {
            return Some((t as f64 / step as f64).round().max(0.0) as u64);
        }
        (!self.src.seeked && self.opts.strategy != SamplingStrategy::Keyframes)
            .then(|| self.src.frames_out.saturating_sub(1))
    }

    /// Seeks, when that is faster than decoding forward, so that the next frames decoded
    /// include the first frame at or after `target` (relative ticks). `always` seeks whatever
    /// the mode (the start of the window).
    fn reach(&mut self, target: i64, always: bool) -> Result<(), MediaError> {
        if !self.src.seekable {
            return Ok(());
        }
        let mode = if always {
            DecodeMode::Auto
        } else {
            self.opts.mode
        };
        if mode == DecodeMode::Sequential {
            return Ok(());
        }
        let pos = self.position.unwrap_or(0);
        // Seek when the keyframe before the target lies well ahead of the decode position:
        // everything in between would be decoded for nothing. "Well": more than
        // SEEK_COST_FRAMES frames, what a seek costs (see there).
        let frame = self
            .timeline
            .as_ref()
            .map_or(self.src.frame_ticks, |tl| tl.frame_ticks);
        let min_skip = if frame > 0 {
            frame.saturating_mul(SEEK_COST_FRAMES)
        } else {
            ticks_ceil(1.0, self.tb)
        };
        let origin = self.origin();
        if let Some(tl) = &self.timeline {
            // Without presentation times a keyframe's own time is not known exactly: up to the
            // reordering depth of an open GOP later than its decode time. Stay that far back.
            let slack = if tl.domain != Domain::Pts && self.src.reorder_ticks > 0 {
                MAX_REORDER_FRAMES.saturating_mul(tl.frame_ticks)
            } else {
                0
            };
            let ki = tl.key_before(target - slack);
            let key = tl.keys[ki];
            let worth = match mode {
                DecodeMode::Seek => true,
                _ => key.time > pos.saturating_add(min_skip) || (always && key.time > pos),
            };
            if !worth || (ki == 0 && self.position.is_none()) {
                return Ok(());
            }
            // Earlier keyframes in case the demuxer lands after this one: 1, 2, 4... back.
            let mut order = vec![ki];
            let mut back = 1;
            while back <= ki {
                order.push(ki - back);
                back *= 2;
            }
            if *order.last().expect("non-empty") != 0 {
                order.push(0);
            }
            let by_dts = tl.domain == Domain::Dts;
            // Seek to the keyframe's presentation time: exact where the index holds those
            // (MP4, Matroska cues), and where it holds decode times (AVI, MPEG-TS) still before
            // the next keyframe's. Then its decode time, for a demuxer that landed late.
            let mut tries: Vec<i64> = Vec::with_capacity(order.len() + 1);
            for (n, &i) in order.iter().enumerate() {
                let k: &KeyPoint = &tl.keys[i];
                tries.extend(k.pts.or(k.dts));
                if n == 0 && !self.src.seeks_by_pts && k.pts.is_some() && k.dts != k.pts {
                    tries.extend(k.dts);
                }
            }
            let at = if by_dts {
                key.dts.or(key.pts)
            } else {
                key.pts.or(key.dts)
            }
            .unwrap_or(tl.origin + key.time);
            self.stats.seeks += self
                .src
                .seek_before(at, &tries, by_dts, self.seconds(target))?;
            self.position = Some(key.time);
        } else {
            let keys = &self.src.facts.keyframes;
            let abs_target = origin + target;
            let read = self.src.read_pos.map_or(pos, |r| r - origin);
            let worth = match mode {
                DecodeMode::Seek => true,
                _ if keys.len() >= 2 => {
                    // Index times are decode times; a keyframe is shown up to the reorder
                    // delay later, so it serves the target only if its dts is that much earlier.
                    let k = keys.partition_point(|&k| k <= abs_target - self.src.reorder_ticks);
                    k.checked_sub(1)
                        .and_then(|i| keys.get(i))
                        .is_some_and(|&kf| {
                            kf.saturating_sub(origin) > read.saturating_add(min_skip)
                        })
                        || (always && target > read)
                }
                _ => match self.kf_interval {
                    Some(iv) => target.saturating_sub(read) > iv.saturating_mul(2),
                    None => always && target > read,
                },
            };
            if !worth {
                return Ok(());
            }
            // Demuxers that seek by decode time land up to the B-frame reorder delay late, and
            // without an index on any packet: aim a little early, then further back.
            let margin = if self.src.seeks_by_pts {
                0
            } else {
                self.src.reorder_ticks + 2 * self.src.frame_ticks
            };
            let step = self.kf_interval.unwrap_or(ticks_ceil(1.0, self.tb)).max(1);
            let start = self.src.start_ts;
            let mut tries = vec![(abs_target - margin).max(start)];
            for i in 0..6 {
                let t = abs_target
                    .saturating_sub(step.saturating_mul(1 << i))
                    .max(start);
                if tries.last() != Some(&t) {
                    tries.push(t);
                }
            }
            self.stats.seeks +=
                self.src
                    .seek_before(abs_target, &tries, false, self.seconds(target))?;
            self.position = None;
        }
        if let Some((_, det, _)) = self.scene.as_mut() {
            det.reset();
        }
        Ok(())
    }

    /// The next decoded frame's relative time (frames before the first frame are dropped).
    fn next_decoded(&mut self) -> Result<Option<i64>, MediaError> {
        loop {
            let Some(ts) = self.src.next_frame()? else {
                return Ok(None);
            };
            let t = ts - self.origin();
            self.position = Some(t);
            if t < 0 {
                continue;
            }
            if t >= self.from && self.to.is_none_or(|to| t < to) {
                self.seen_in_window += 1;
            }
            return Ok(Some(t));
        }
    }

    fn emit(&mut self, t: i64) -> Result<SampledFrame, MediaError> {
        let keyframe = self.src.frame().is_key();
        let index = self.frame_index(t);
        let (rgb, width, height) = self.conv.convert(&self.src.name, self.src.frame())?;
        self.last_emitted = Some(t);
        self.stats.returned += 1;
        Ok(SampledFrame {
            rgb,
            width,
            height,
            pts: self.seconds(t),
            index,
            keyframe,
        })
    }

    /// Called once the frames are exhausted: warnings for a truncated input, and the error for
    /// an empty result from a window that holds frames.
    fn finish(&mut self) -> Option<MediaError> {
        if self.done {
            return None;
        }
        self.done = true;
        let last = self.last_emitted.map(|t| self.seconds(t));
        let end = self.opts.to;
        let cut = self.src.info.truncated_at;
        let wanted_past_cut = match (cut, end) {
            (Some(c), Some(e)) => e > c,
            (Some(_), None) => true,
            _ => false,
        };
        let truncated = self.src.read_error.is_some() || wanted_past_cut;
        if truncated {
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
        if self.stats.returned > 0 {
            return None;
        }
        let window_has_frames = match &self.timeline {
            Some(tl) => !tl.window(self.from, self.to).is_empty(),
            None => self.seen_in_window > 0,
        };
        let window = match self.opts.to {
            Some(to) => format!("{:.3}-{to:.3} s", self.opts.from),
            None => format!("from {:.3} s", self.opts.from),
        };
        if window_has_frames {
            let reason = match self.opts.strategy {
                SamplingStrategy::Keyframes => format!("the window {window} holds no keyframe"),
                s => format!("{s} returned no frame of the window {window}, which holds frames"),
            };
            return Some(MediaError::NoFrames {
                input: self.src.name.clone(),
                reason,
            });
        }
        if !truncated {
            let last = match &self.timeline {
                Some(tl) => tl.times.last().map(|&t| self.seconds(t)),
                None => self.position.map(|t| self.seconds(t)),
            };
            let after = last
                .map(|l| format!(", after the last frame ({l:.3} s)"))
                .unwrap_or_default();
            self.warn(format!(
                "{}: the window {window} holds no frame{after}",
                self.src.name
            ));
        }
        None
    }

    fn budget_left(&mut self) -> bool {
        match self.max_frames {
            Some(m) if self.stats.returned as usize >= m => {
                if self.targets.is_none() {
                    let at = self.last_emitted.map(|t| self.seconds(t)).unwrap_or(0.0);
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
            return Ok(None);
        }
        if self.par.is_some() {
            // The workers seek for themselves; this sampler's own decoder stays put.
            return self.next_chunked();
        }
        if !self.started {
            self.started = true;
            // Targets seek by themselves; the other strategies start at `from`.
            if self.targets.is_none() && self.from > 0 {
                self.reach(self.from, true)?;
            }
        }
        if self.targets.is_some() {
            return self.next_target();
        }
        loop {
            let Some(t) = self.next_decoded()? else {
                return Ok(None);
            };
            if self.to.is_some_and(|to| t >= to) {
                return Ok(None);
            }
            let in_window = t >= self.from && self.last_emitted.is_none_or(|l| t > l);
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
                tracing::trace!("scene score {score:.4} at {:.3} s", self.seconds(t));
            } else if !in_window
                || (self.opts.strategy == SamplingStrategy::Keyframes
                    && !self.src.keyframes_only
                    && !self.src.frame().is_key())
            {
                continue;
            }
            return self.emit(t).map(Some);
        }
    }

    /// The next frame from the chunk workers ([`DecodeMode::Parallel`]).
    fn next_chunked(&mut self) -> Result<Option<SampledFrame>, MediaError> {
        loop {
            let Some(par) = self.par.as_mut() else {
                return Ok(None);
            };
            match par.next() {
                parallel::Next::Frame(t, f) => {
                    self.last_emitted = Some(t);
                    self.stats.returned += 1;
                    return Ok(Some(f));
                }
                parallel::Next::Failed(e) => return Err(e),
                parallel::Next::Chunk { seeks, read_error } => {
                    self.stats.seeks += seeks;
                    if read_error.is_some() {
                        self.src.read_error = read_error;
                    }
                }
                parallel::Next::End => return Ok(None),
            }
        }
    }

    fn next_target(&mut self) -> Result<Option<SampledFrame>, MediaError> {
        // Next target strictly after the last returned frame.
        let target = loop {
            let Some(t) = self.targets.as_ref().and_then(Targets::peek) else {
                return Ok(None);
            };
            if self.window_end.is_some_and(|e| t >= e) {
                return Ok(None);
            }
            if let Some(l) = self.last_emitted.filter(|&l| t <= l) {
                self.targets.as_mut().expect("some").skip_through(l);
                continue;
            }
            break t;
        };
        if self.last_emitted.is_none() || self.position.is_none_or(|p| p < target) {
            self.reach(target, false)?;
        }
        // Frames shown before the target are never returned: when a clean keyframe at or
        // before the target is still unread, nothing before it needs decoding (what a seek
        // would save, without the flush: on the 596 s film at fps:1 the last second of each
        // 5.3 s GOP was decoded for nothing); else let the decoder drop the non-reference ones.
        if self.src.skip_ok {
            if let Some(tl) = &self.timeline {
                let k = tl.keys[tl.key_before(target)];
                if let (true, Some(kp)) = (k.clean, k.pts) {
                    if self.src.last_key_pts.is_none_or(|p| p < kp) {
                        self.src.drop_until_key = Some(kp);
                    }
                }
            }
        }
        self.src.skip_before = Some(self.origin() + target);
        loop {
            let Some(t) = self.next_decoded()? else {
                return Ok(None);
            };
            if self.to.is_some_and(|to| t >= to) {
                return Ok(None);
            }
            if t >= target && self.last_emitted.is_none_or(|l| t > l) {
                // Targets at or before this frame are served by it.
                self.targets.as_mut().expect("some").skip_through(t);
                return self.emit(t).map(Some);
            }
        }
    }
}

/// Makes the timeline's times relative to the first decoded frame. They already are, unless
/// the stream's first packets do not decode to frames (then those frames are dropped).
fn rebase(tl: &mut Timeline, origin: i64, name: &str) {
    if tl.domain != Domain::Pts || origin == tl.origin {
        return;
    }
    let shift = origin - tl.origin;
    tracing::debug!(
        "{name}: the first decoded frame is {shift} ticks after the first packet's time"
    );
    tl.origin = origin;
    tl.times.retain_mut(|t| {
        *t -= shift;
        *t >= 0
    });
    for k in &mut tl.keys {
        k.time -= shift;
    }
}

/// The declared end of the video stream (relative ticks) when there is no timeline: the
/// stream's declared duration counted from its declared start.
fn declared_end(src: &Source, origin: i64, tb: (i64, i64)) -> Option<i64> {
    let d = src.info.streams[src.stream_index].duration?;
    Some(src.start_ts + ticks_ceil(d, tb) - origin)
}

impl Iterator for Sampler {
    type Item = Result<SampledFrame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_inner() {
            Ok(Some(f)) => Some(Ok(f)),
            Ok(None) => self.finish().map(Err),
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
