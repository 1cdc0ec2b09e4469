//! The conformance matrix: every clip of `samples/make-conformance.sh` (containers, codecs, GOP
//! sizes, B-frames, variable frame rate, start offsets, tiny clips, 10-bit, odd sizes, rotation,
//! index kinds) sampled with every strategy, windows and budgets, in every decode mode, and
//! compared with what the semantics say the frames must be, computed from `ffprobe -show_frames`
//! (an independent reference: FFmpeg's own demux + decode, not our code):
//!
//! - counts exactly, timestamps within half a frame, frame indices and keyframe flags;
//! - seek, sequential, automatic and parallel decoding give identical frames, pixels included;
//! - a few frames' pixels against the ffmpeg CLI's decode (`select=eq(n,I)`, rgb24);
//! - the same clip through a pipe (non-seekable, like standard input) gives the same frames.
//!
//! The whole matrix is one test that collects every mismatch and reports them together.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use common::*;
use vidlm_media::{DecodeMode, Input, MediaError, SampleOptions, SampledFrame, Sampler};

/// The clips, made on first use by samples/make-conformance.sh.
fn clips() -> (PathBuf, Vec<String>) {
    let dir = repo().join("samples/gen/conformance");
    let st = Command::new("bash")
        .arg(repo().join("samples/make-conformance.sh"))
        .status()
        .expect("run make-conformance.sh");
    assert!(st.success(), "samples/make-conformance.sh failed");
    let list = std::fs::read_to_string(dir.join("clips.txt")).expect("clips.txt");
    (dir, list.lines().map(str::to_string).collect())
}

/// One frame as ffprobe decodes it.
#[derive(Debug, Clone, Copy)]
struct RefFrame {
    /// Ticks from the first frame.
    t: i64,
    key: bool,
}

/// ffprobe's view of a clip's video stream.
struct Reference {
    /// Time base `num/den`.
    tb: (i64, i64),
    frames: Vec<RefFrame>,
    /// Median distance between frames in ticks.
    step: i64,
}

impl Reference {
    fn of(path: &Path) -> Reference {
        let out = run(Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-show_frames"])
            .args([
                "-show_entries",
                "frame=best_effort_timestamp,key_frame:stream=time_base,avg_frame_rate,r_frame_rate",
            ])
            .args(["-of", "json"])
            .arg(path));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let s = &v["streams"][0];
        let frac = |x: &serde_json::Value| -> (i64, i64) {
            let (a, b) = x.as_str().unwrap().split_once('/').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let tb = frac(&s["time_base"]);
        let rate = match frac(&s["avg_frame_rate"]) {
            (0, _) | (_, 0) => frac(&s["r_frame_rate"]),
            r => r,
        };
        let raw: Vec<(Option<i64>, bool)> = v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["best_effort_timestamp"].as_i64(),
                    f["key_frame"].as_i64() == Some(1),
                )
            })
            .collect();
        // A frame FFmpeg gives no time (the last pictures of AVI B-frame streams, raw streams)
        // is one frame after the one before: the typical distance of the frames that have
        // times, or the declared rate.
        let mut known: Vec<i64> = raw
            .windows(2)
            .filter_map(|w| Some(w[1].0? - w[0].0?))
            .collect();
        known.sort_unstable();
        let declared = ((rate.1 * tb.1) as f64 / (rate.0 * tb.0) as f64).round() as i64;
        let typical = known.get(known.len() / 2).copied().unwrap_or(declared);
        let mut abs: Vec<(i64, bool)> = Vec::new();
        for &(t, key) in &raw {
            let t = t.unwrap_or_else(|| abs.last().map_or(0, |p| p.0 + typical));
            abs.push((t, key));
        }
        let first = abs.first().map_or(0, |f| f.0);
        let frames: Vec<RefFrame> = abs
            .iter()
            .map(|&(t, key)| RefFrame { t: t - first, key })
            .collect();
        assert!(
            frames.windows(2).all(|w| w[0].t < w[1].t),
            "{}: ffprobe's frame times are not increasing",
            path.display()
        );
        let mut gaps: Vec<i64> = frames.windows(2).map(|w| w[1].t - w[0].t).collect();
        gaps.sort_unstable();
        let step = gaps.get(gaps.len() / 2).copied().unwrap_or(declared).max(1);
        Reference { tb, frames, step }
    }

    fn secs(&self, t: i64) -> f64 {
        t as f64 * self.tb.0 as f64 / self.tb.1 as f64
    }

    /// Ticks of a time given as the fraction `a/b` seconds, rounded up.
    fn ticks(&self, a: i64, b: i64) -> i64 {
        let n = i128::from(a) * i128::from(self.tb.1);
        let d = i128::from(b) * i128::from(self.tb.0);
        n.div_euclid(d) as i64 + i64::from(n.rem_euclid(d) != 0)
    }

    fn constant_rate(&self) -> bool {
        let mut gaps: Vec<i64> = self.frames.windows(2).map(|w| w[1].t - w[0].t).collect();
        gaps.sort_unstable();
        match (gaps.first(), gaps.last()) {
            (Some(lo), Some(hi)) => hi - lo <= 1.max(self.step / 100),
            _ => true,
        }
    }

    /// Indices of the frames in `[from, to)` (ticks).
    fn window(&self, from: i64, to: Option<i64>) -> Vec<usize> {
        (0..self.frames.len())
            .filter(|&i| self.frames[i].t >= from && to.is_none_or(|to| self.frames[i].t < to))
            .collect()
    }

    /// The first frame at or after each target, never twice.
    fn first_at_or_after(&self, targets: impl Iterator<Item = i64>, to: Option<i64>) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for target in targets {
            if to.is_some_and(|to| target >= to) {
                break;
            }
            let Some(i) = (0..self.frames.len()).find(|&i| self.frames[i].t >= target) else {
                break;
            };
            if to.is_some_and(|to| self.frames[i].t >= to) {
                break;
            }
            if out.last().is_none_or(|&l| i > l) {
                out.push(i);
            }
        }
        out
    }
}

/// What a case asks for, with times as exact fractions of a second.
#[derive(Debug, Clone, Copy)]
enum Want {
    All,
    Keyframes,
    /// `fps:P/Q`.
    Fps(i64, i64),
    Frames(usize),
    Scene,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    strategy: &'static str,
    want: Want,
    /// Window in tenths of a second.
    from: i64,
    to: Option<i64>,
    max: Option<usize>,
    modes: &'static [DecodeMode],
}

const ALL_MODES: &[DecodeMode] = &[
    DecodeMode::Sequential,
    DecodeMode::Seek,
    DecodeMode::Auto,
    DecodeMode::Parallel,
];
const AUTO: &[DecodeMode] = &[DecodeMode::Auto];
const SCENE_T: f64 = 0.3;

fn cases() -> Vec<Case> {
    let c = |strategy, want, modes| Case {
        strategy,
        want,
        from: 0,
        to: None,
        max: None,
        modes,
    };
    vec![
        c(
            "all",
            Want::All,
            &[DecodeMode::Sequential, DecodeMode::Parallel],
        ),
        c("keyframes", Want::Keyframes, AUTO),
        Case {
            from: 21,
            ..c("keyframes", Want::Keyframes, AUTO)
        },
        c("fps:1", Want::Fps(1, 1), ALL_MODES),
        c("fps:3", Want::Fps(3, 1), ALL_MODES),
        c("fps:0.4", Want::Fps(2, 5), ALL_MODES),
        c("frames:6", Want::Frames(6), ALL_MODES),
        c("frames:1", Want::Frames(1), AUTO),
        c(
            "frames:500",
            Want::Frames(500),
            &[DecodeMode::Auto, DecodeMode::Parallel],
        ),
        Case {
            from: 13,
            to: Some(37),
            ..c("fps:2", Want::Fps(2, 1), ALL_MODES)
        },
        Case {
            from: 13,
            to: Some(37),
            ..c("frames:5", Want::Frames(5), ALL_MODES)
        },
        Case {
            from: 25,
            to: Some(35),
            ..c("all", Want::All, &[DecodeMode::Auto, DecodeMode::Parallel])
        },
        Case {
            max: Some(4),
            ..c(
                "fps:3",
                Want::Fps(3, 1),
                &[
                    DecodeMode::Sequential,
                    DecodeMode::Seek,
                    DecodeMode::Parallel,
                ],
            )
        },
        c("scene:0.3", Want::Scene, AUTO),
    ]
}

/// Frame times (seconds from the first frame) where ffmpeg's scene filter cuts, as
/// `select='gt(scene,T)'` reports them; the first frame is selected too, to measure from it in
/// the CLI's own timeline.
fn ffmpeg_cuts(path: &Path) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .args([
            "-an",
            "-vf",
            &format!("select='eq(n\\,0)+gt(scene\\,{SCENE_T})',showinfo"),
        ])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let times: Vec<f64> = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("pts_time:"))
        .map(|v| v.parse::<f64>().unwrap())
        .collect();
    times.iter().skip(1).map(|t| t - times[0]).collect()
}

/// The frames (reference indices) a case must give; `None` for an error (frames:N on a window
/// without frames).
fn expected(r: &Reference, case: &Case, cuts: &[f64], via: Via) -> Option<Vec<usize>> {
    let from = r.ticks(case.from, 10);
    let to = case.to.map(|t| r.ticks(t, 10));
    let window = r.window(from, to);
    let end = r.frames.last().map_or(0, |f| f.t + r.step);
    let v = match case.want {
        Want::All => window,
        Want::Keyframes => {
            let keys: Vec<usize> = window
                .iter()
                .copied()
                .filter(|&i| r.frames[i].key)
                .collect();
            // A window with frames but no keyframe is an error, not an empty answer.
            if keys.is_empty() && !window.is_empty() {
                return None;
            }
            keys
        }
        Want::Fps(p, q) => {
            let rate = p as f64 / q as f64;
            let window_end = to.map_or(end, |t| t.min(end));
            let span = (r.secs(window_end) - case.from as f64 / 10.0).max(0.0);
            // The budget is spread over the window when its end is known: from `to`, or
            // from a file's frames; through a pipe without `to` it stops early instead.
            let spread = via == Via::File || case.to.is_some();
            match case.max {
                Some(max) if !spread => {
                    let mut v = r.first_at_or_after(
                        (0..).map(|k: i64| r.ticks(case.from * p + k * q * 10, 10 * p)),
                        to.or(Some(end)),
                    );
                    v.truncate(max);
                    v
                }
                Some(max) if (span * rate).ceil() as usize > max => {
                    let step = span / max as f64;
                    let targets = (0..max as i64).map(|k| {
                        let s = case.from as f64 / 10.0 + k as f64 * step;
                        (s * r.tb.1 as f64 / r.tb.0 as f64 - 1e-6).ceil() as i64
                    });
                    r.first_at_or_after(targets, to)
                }
                // Exact: target k is from + k*q/p seconds.
                _ => r.first_at_or_after(
                    (0..).map(|k: i64| r.ticks(case.from * p + k * q * 10, 10 * p)),
                    to.or(Some(end)),
                ),
            }
        }
        Want::Frames(n) => {
            if window.is_empty() {
                return None;
            }
            let n = case.max.map_or(n, |m| m.min(n));
            let f = window.len();
            if n >= f {
                window
            } else if r.constant_rate() {
                // round(linspace(0, F-1, N)) as numpy computes it (f64, ties to even).
                let step = (f - 1) as f64 / (n - 1).max(1) as f64;
                (0..n)
                    .map(|k| {
                        let x = if k == n - 1 && n > 1 {
                            (f - 1) as f64
                        } else {
                            k as f64 * step
                        };
                        window[x.round_ties_even() as usize]
                    })
                    .collect()
            } else {
                let t0 = r.frames[window[0]].t as f64;
                let t1 = r.frames[window[f - 1]].t as f64;
                let mut out = Vec::new();
                let mut free = 0;
                for k in 0..n {
                    let target = if n == 1 {
                        t0
                    } else if k == n - 1 {
                        t1
                    } else {
                        t0 + k as f64 * (t1 - t0) / (n - 1) as f64
                    };
                    let mut best = 0;
                    for j in 0..f {
                        let d = (r.frames[window[j]].t as f64 - target).abs();
                        if d < (r.frames[window[best]].t as f64 - target).abs() {
                            best = j;
                        }
                    }
                    let j = best.max(free).min(f - (n - k));
                    out.push(window[j]);
                    free = j + 1;
                }
                out
            }
        }
        Want::Scene => {
            let mut v = vec![0];
            for c in cuts {
                let i = (0..r.frames.len())
                    .min_by(|&a, &b| {
                        (r.secs(r.frames[a].t) - c)
                            .abs()
                            .total_cmp(&(r.secs(r.frames[b].t) - c).abs())
                    })
                    .unwrap();
                if i > 0 {
                    v.push(i);
                }
            }
            v
        }
    };
    Some(v)
}

/// How a clip is read.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    File,
    /// A pipe, as standard input is: no seeking.
    Pipe,
}

/// Frames of one run, and the chunks it was decoded in (0: one decoder).
fn sample_clip(
    path: &Path,
    via: Via,
    case: &Case,
    mode: DecodeMode,
) -> (Result<Vec<SampledFrame>, MediaError>, u64) {
    let opts = SampleOptions {
        from: case.from as f64 / 10.0,
        to: case.to.map(|t| t as f64 / 10.0),
        max_frames: case.max,
        mode,
        ..SampleOptions::new(case.strategy.parse().unwrap())
    };
    match via {
        Via::File => match Sampler::open(&Input::from(path), opts) {
            Ok(mut s) => {
                let got = s.by_ref().collect();
                (got, s.stats().chunks)
            }
            Err(e) => (Err(e), 0),
        },
        Via::Pipe => {
            use std::os::fd::AsRawFd;
            let mut cat = Command::new("cat")
                .arg(path)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let fd = cat.stdout.as_ref().unwrap().as_raw_fd();
            let got =
                Sampler::open(&Input::Url(format!("pipe:{fd}")), opts).and_then(|s| s.collect());
            drop(cat.stdout.take());
            let _ = cat.kill();
            let _ = cat.wait();
            (got, 0)
        }
    }
}

/// Mismatches of one run against the expected frames.
fn check(
    r: &Reference,
    want: &Option<Vec<usize>>,
    got: &Result<Vec<SampledFrame>, MediaError>,
    via: Via,
) -> Option<String> {
    let half = r.secs(r.step) / 2.0;
    let show = |v: &[usize]| {
        v.iter()
            .map(|&i| format!("{:.3}", r.secs(r.frames[i].t)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match (want, got) {
        (None, Err(_)) => None,
        (None, Ok(g)) => Some(format!(
            "expected an error (empty window), got {} frames",
            g.len()
        )),
        (Some(w), Err(e)) => Some(format!(
            "expected {} frames [{}], got error: {e}",
            w.len(),
            show(w)
        )),
        (Some(w), Ok(g)) => {
            let times = g
                .iter()
                .map(|f| format!("{:.3}", f.pts))
                .collect::<Vec<_>>()
                .join(" ");
            if g.len() != w.len() {
                return Some(format!(
                    "{} frames [{times}], expected {} [{}]",
                    g.len(),
                    w.len(),
                    show(w)
                ));
            }
            for (f, &i) in g.iter().zip(w) {
                let rf = r.frames[i];
                if (f.pts - r.secs(rf.t)).abs() >= half {
                    return Some(format!("times [{times}], expected [{}]", show(w)));
                }
                // Through a pipe after a window start the index is only known by counting.
                if f.index != Some(i as u64) && !(via == Via::Pipe && f.index.is_none()) {
                    return Some(format!(
                        "frame at {:.3}: index {:?}, expected {i}",
                        f.pts, f.index
                    ));
                }
                if f.keyframe != rf.key {
                    return Some(format!(
                        "frame at {:.3}: keyframe {}, expected {}",
                        f.pts, f.keyframe, rf.key
                    ));
                }
            }
            None
        }
    }
}

/// The ffmpeg CLI's RGB24 decode of the frames with display indices `idx`.
fn ffmpeg_frames(path: &Path, idx: &[usize]) -> Vec<u8> {
    let sel: Vec<String> = idx.iter().map(|i| format!("eq(n\\,{i})")).collect();
    ffmpeg_rgb(
        path,
        Some(&format!("select='{}'", sel.join("+"))),
        idx.len(),
    )
}

/// Clips also read through a pipe (formats that can be streamed).
const PIPED: &[&str] = &[
    "c-ts.ts",
    "c-mkv.mkv",
    "x-nocues.mkv",
    "c-webm.webm",
    "x-nocues.webm",
    "f-frag.mp4",
    "c-m4v.m4v",
    "c-h264.h264",
    "c-nut.nut",
    "c-flv.flv",
    "s-ts-offset.ts",
    "x-faststart.mp4",
    "c-ivf.ivf",
    "c-mpg.mpg",
    "v-mpeg2.ts",
    "g-250.ts",
];

#[test]
fn conformance_matrix() {
    let t0 = Instant::now();
    let (dir, names) = clips();
    assert!(names.len() >= 40, "only {} clips", names.len());
    let cases = cases();
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let runs = AtomicUsize::new(0);
    let (parallel_runs, chunked_runs) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let next = AtomicUsize::new(0);
    let stats: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else { break };
                let path = dir.join(name);
                let r = Reference::of(&path);
                let cuts = ffmpeg_cuts(&path);
                let fail = |m: String| failures.lock().unwrap().push(format!("{name}: {m}"));
                let mut vias = vec![Via::File];
                if PIPED.contains(&name.as_str()) {
                    vias.push(Via::Pipe);
                }
                for via in vias {
                    for case in &cases {
                        if via == Via::Pipe && matches!(case.want, Want::Scene) {
                            continue;
                        }
                        let want = expected(&r, case, &cuts, via);
                        let mut first: Option<Vec<SampledFrame>> = None;
                        let modes = if via == Via::Pipe { AUTO } else { case.modes };
                        for &mode in modes {
                            runs.fetch_add(1, Ordering::Relaxed);
                            let (got, chunks) = sample_clip(&path, via, case, mode);
                            if mode == DecodeMode::Parallel {
                                parallel_runs.fetch_add(1, Ordering::Relaxed);
                                if chunks >= 2 {
                                    chunked_runs.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            let tag = format!(
                                "{}{} from {} to {:?} max {:?} {mode:?}",
                                if via == Via::Pipe { "pipe: " } else { "" },
                                case.strategy,
                                case.from as f64 / 10.0,
                                case.to.map(|t| t as f64 / 10.0),
                                case.max
                            );
                            if let Some(m) = check(&r, &want, &got, via) {
                                fail(format!("{tag}: {m}"));
                                continue;
                            }
                            // Every mode: the same frames, pixel for pixel.
                            if let Ok(g) = got {
                                match &first {
                                    None => first = Some(g),
                                    Some(f) => {
                                        for (a, b) in f.iter().zip(&g) {
                                            if a.rgb != b.rgb {
                                                fail(format!("{tag}: pixels at {:.3} s differ from the first mode's", a.pts));
                                                break;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        // A few frames' pixels against the ffmpeg CLI's own decode.
                        if via == Via::File && case.strategy == "frames:6" {
                            if let (Some(frames), Some(idx)) = (&first, &want) {
                                let ours: Vec<u8> = frames.iter().flat_map(|f| f.rgb.iter().copied()).collect();
                                let theirs = ffmpeg_frames(&path, idx);
                                if ours.len() != theirs.len() {
                                    fail(format!("pixels: {} bytes vs ffmpeg's {}", ours.len(), theirs.len()));
                                } else {
                                    let d = mean_abs_diff(&ours, &theirs);
                                    if d > 1.5 {
                                        fail(format!("pixels: mean abs difference {d:.3} from ffmpeg's"));
                                    }
                                }
                            }
                        }
                    }
                }
                *stats.lock().unwrap().entry(name.clone()).or_default() += r.frames.len();
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let (parallel_runs, chunked_runs) = (parallel_runs.into_inner(), chunked_runs.into_inner());
    println!(
        "conformance: {} clips, {} cases, {} sampler runs ({chunked_runs} of the {parallel_runs} parallel ones split into chunks), {:.1} s on {threads} threads",
        names.len(),
        cases.len(),
        runs.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
    // Parallel decoding is only checked where it splits: most clips have keyframes to split at.
    assert!(
        chunked_runs * 2 >= parallel_runs,
        "only {chunked_runs} of {parallel_runs} parallel runs split the window"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
