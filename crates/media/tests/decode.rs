//! Decoding and sampling checked against ffprobe/ffmpeg on the same files.

mod common;

use common::*;
use vidlm_media::{sample_all, DecodeMode, Input, SampleOptions, SampledFrame, Sampler};

fn opts(s: &str) -> SampleOptions {
    SampleOptions {
        size: Some((64, 48)),
        ..SampleOptions::new(s.parse().unwrap())
    }
}

fn times(frames: &[SampledFrame]) -> Vec<f64> {
    frames.iter().map(|f| f.pts).collect()
}

/// Every frame: same count, timestamps (relative to the stream start) and key flags as ffprobe.
fn check_all_frames(path: &std::path::Path) {
    let want = ffprobe_frames(path);
    let start = ffprobe_start(path);
    let got = sample_all(&Input::from(path), opts("all")).unwrap();
    assert_eq!(got.len(), want.len(), "{}: frame count", path.display());
    assert!(
        got[0].pts.abs() < 1e-9,
        "first frame at 0, got {}",
        got[0].pts
    );
    for (i, (g, (t, key))) in got.iter().zip(&want).enumerate() {
        assert!(
            (g.pts - (t - start)).abs() < 2e-6,
            "{} frame {i}: pts {} vs ffprobe {}",
            path.display(),
            g.pts,
            t - start
        );
        assert_eq!(
            g.keyframe,
            *key,
            "{} frame {i}: keyframe flag",
            path.display()
        );
        assert_eq!(
            g.index,
            Some(i as u64),
            "{} frame {i}: index",
            path.display()
        );
        assert_eq!((g.width, g.height, g.rgb.len()), (64, 48, 64 * 48 * 3));
    }
}

#[test]
fn all_frames_match_ffprobe_with_bframes() {
    check_all_frames(&gen("square.mp4"));
}

#[test]
fn all_frames_match_ffprobe_nonzero_start() {
    // MPEG-TS starts at 1.48 s: timestamps must still start at 0.
    check_all_frames(&gen("square.ts"));
}

#[test]
fn all_frames_match_ffprobe_vfr() {
    let path = gen("vfr.mp4");
    check_all_frames(&path);
    let got = sample_all(&Input::from(&path), opts("all")).unwrap();
    // 30 fps for a second, then 10 fps.
    assert!(
        (got[1].pts - 1.0 / 30.0).abs() < 1e-3 && (got[31].pts - got[30].pts - 0.1).abs() < 1e-3,
        "{:?}",
        times(&got)
    );
}

#[test]
fn all_frames_match_ffprobe_bbb() {
    check_all_frames(&sample("bbb-720p-5s.mp4"));
}

#[test]
fn fps_one_picks_the_frame_at_each_second() {
    let got = sample_all(&Input::from(sample("bbb-720p-5s.mp4")), opts("fps:1")).unwrap();
    // 25 fps, 5.3 s: frames 0, 25, ... 125.
    assert_eq!(
        got.iter().map(|f| f.index.unwrap()).collect::<Vec<_>>(),
        vec![0, 25, 50, 75, 100, 125]
    );
    assert_eq!(times(&got), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn frames_n_spreads_over_the_video() {
    // 150 frames at 25 fps: frame indices round(linspace(0, 149, N)), first and last included.
    let got = sample_all(&Input::from(gen("square.mp4")), opts("frames:3")).unwrap();
    // linspace(0, 149, 3) = [0, 74.5, 149]: the tie rounds to the even index 74.
    assert_eq!(
        got.iter().map(|f| f.index.unwrap()).collect::<Vec<_>>(),
        vec![0, 74, 149]
    );
    assert_eq!(times(&got), vec![0.0, 2.96, 5.96]);
    // [0, 29.8, 59.6, 89.4, 119.2, 149] rounds to [0, 30, 60, 89, 119, 149].
    let got = sample_all(&Input::from(gen("square.mp4")), opts("frames:6")).unwrap();
    assert_eq!(times(&got), vec![0.0, 1.2, 2.4, 3.56, 4.76, 5.96]);
}

#[test]
fn window_and_budget() {
    let mut o = opts("fps:2");
    o.from = 1.0;
    o.to = Some(3.0);
    let got = sample_all(&Input::from(gen("square.mp4")), o.clone()).unwrap();
    assert_eq!(times(&got), vec![1.0, 1.52, 2.0, 2.52]);
    // A budget spreads fps over the window rather than stopping early.
    o.max_frames = Some(2);
    let got = sample_all(&Input::from(gen("square.mp4")), o).unwrap();
    assert_eq!(times(&got), vec![1.0, 2.0]);
    // Other strategies stop at the budget, with a warning.
    let mut o = opts("all");
    o.max_frames = Some(5);
    let mut s = Sampler::open(&Input::from(gen("square.mp4")), o).unwrap();
    assert_eq!(s.by_ref().count(), 5);
    assert!(
        s.warnings()[0].contains("--max-frames 5"),
        "{:?}",
        s.warnings()
    );
}

#[test]
fn fps_above_the_video_rate_returns_each_frame_once() {
    let got = sample_all(&Input::from(gen("vfr.mp4")), opts("fps:20")).unwrap();
    let t = times(&got);
    assert!(t.windows(2).all(|w| w[1] > w[0]), "{t:?}");
    // The 30 fps second gives 20 frames, the 10 fps part all its frames.
    assert_eq!(got.len(), 20 + 20, "{t:?}");
}

fn same_frames(a: &[SampledFrame], b: &[SampledFrame]) {
    assert_eq!(times(a), times(b));
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (x.keyframe, x.width, x.height),
            (y.keyframe, y.width, y.height)
        );
        // Without a constant-rate index (MPEG-TS) the index is only known when counting from
        // the start; where both know it, it must agree.
        if let (Some(i), Some(j)) = (x.index, y.index) {
            assert_eq!(i, j, "index at {} s", x.pts);
        }
        assert!(x.rgb == y.rgb, "pixels differ at {} s", x.pts);
    }
}

#[test]
fn seek_and_sequential_give_the_same_frames() {
    for (file, strategy) in [
        ("longgop.mp4", "fps:0.25"),
        ("longgop.mp4", "frames:7"),
        ("square.mp4", "fps:3"),
        ("square.ts", "fps:0.5"),
    ] {
        let path = gen(file);
        let run = |mode| {
            let mut s = Sampler::open(
                &Input::from(&path),
                SampleOptions {
                    mode,
                    ..opts(strategy)
                },
            )
            .unwrap();
            let frames: Vec<SampledFrame> = s.by_ref().map(Result::unwrap).collect();
            (frames, s.stats())
        };
        let (seq, seq_stats) = run(DecodeMode::Sequential);
        let (seek, seek_stats) = run(DecodeMode::Seek);
        let (auto, auto_stats) = run(DecodeMode::Auto);
        assert!(!seq.is_empty());
        same_frames(&seq, &seek);
        same_frames(&seq, &auto);
        assert_eq!(seq_stats.seeks, 0);
        assert!(seek_stats.seeks > 0, "{file} {strategy}: {seek_stats:?}");
        if (file, strategy) == ("longgop.mp4", "fps:0.25") {
            // Keyframes every 2 s, a frame wanted every 4 s: auto seeks and decodes far less.
            assert!(
                auto_stats.seeks > 0 && auto_stats.decoded * 2 < seq_stats.decoded,
                "{auto_stats:?} vs {seq_stats:?}"
            );
        }
    }
}

#[test]
fn keyframes_decode_only_keyframes() {
    for path in [gen("square.mp4"), sample("bbb-trailer-720p-55s.mp4")] {
        let want: Vec<f64> = {
            let start = ffprobe_start(&path);
            ffprobe_key_packets(&path)
                .into_iter()
                .map(|t| t - start)
                .collect()
        };
        let mut s = Sampler::open(&Input::from(&path), opts("keyframes")).unwrap();
        let got: Vec<SampledFrame> = s.by_ref().map(Result::unwrap).collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g.pts - w).abs() < 2e-6 && g.keyframe, "{g:?} vs {w}");
        }
        assert_eq!(
            s.stats().decoded,
            want.len() as u64,
            "decoded more than the keyframes"
        );
    }
}

#[test]
fn scene_cuts_on_synthetic_clip() {
    let got = sample_all(&Input::from(gen("square.mp4")), opts("scene:0.2")).unwrap();
    assert_eq!(times(&got), vec![0.0, 2.0, 4.0]);
}

/// Cut times ffmpeg's own detector finds: `select='gt(scene,T)',showinfo`.
fn ffmpeg_scene_cuts(path: &std::path::Path, t: f64) -> Vec<f64> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(path)
        .args([
            "-an",
            "-vf",
            &format!("select='gt(scene,{t})',showinfo"),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let start = ffprobe_start(path);
    String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("pts_time:"))
        .map(|v| v.parse::<f64>().unwrap() - start)
        .collect()
}

#[test]
fn scene_cuts_match_ffmpeg_on_the_trailer() {
    let path = sample("bbb-trailer-720p-55s.mp4");
    let frame = 1.0 / 24.0;
    // 0.09 sits between score clusters (ffmpeg: 0.079 and 0.102), so it tests the score, not luck.
    for t in [0.09] {
        let want = ffmpeg_scene_cuts(&path, t);
        assert!(want.len() >= 5, "ffmpeg found {want:?}");
        let got = sample_all(&Input::from(&path), opts(&format!("scene:{t}"))).unwrap();
        // Our first frame opens the first scene; the rest are cuts.
        assert_eq!(got[0].pts, 0.0);
        let cuts = times(&got[1..]);
        assert_eq!(
            cuts.len(),
            want.len(),
            "T={t}: ours {cuts:?} vs ffmpeg {want:?}"
        );
        for (c, w) in cuts.iter().zip(&want) {
            assert!(
                (c - w).abs() <= frame + 1e-6,
                "T={t}: ours {cuts:?} vs ffmpeg {want:?}"
            );
        }
    }
}

#[test]
fn sparse_sampling_returns_the_same_pixels_as_decoding_everything() {
    // Sparse sampling lets the decoder drop unwanted non-reference pictures; the wanted ones
    // must be bit-identical to those of a plain full decode.
    for (file, strategy) in [
        ("bbb-720p-5s.mp4", "fps:3"),
        ("bbb-trailer-720p-55s.mp4", "frames:5"),
    ] {
        let path = sample(file);
        let all = sample_all(
            &Input::from(&path),
            SampleOptions {
                to: Some(if file.contains("trailer") { 20.0 } else { 6.0 }),
                ..opts("all")
            },
        )
        .unwrap();
        let mut o = opts(strategy);
        if file.contains("trailer") {
            o.to = Some(20.0);
        }
        let sparse = sample_all(&Input::from(&path), o).unwrap();
        assert!(sparse.len() >= 5);
        for f in &sparse {
            let same = all
                .iter()
                .find(|a| a.pts == f.pts)
                .expect("frame present in the full decode");
            assert_eq!(same.index, f.index);
            assert!(
                same.rgb == f.rgb,
                "{file} {strategy}: pixels differ at {} s",
                f.pts
            );
        }
    }
}
