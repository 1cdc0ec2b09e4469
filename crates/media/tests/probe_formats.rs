//! `probe` against ffprobe, pixel formats / rotation / aspect ratio against the ffmpeg CLI, and
//! bad inputs.

mod common;

use common::*;
use vidlm_media::{probe, sample_all, Input, MediaError, SampleOptions, Sampler, SamplingStrategy};

fn num(v: &serde_json::Value) -> Option<f64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_f64())
}

#[test]
fn probe_agrees_with_ffprobe() {
    for path in [
        sample("bbb-720p-5s.mp4"),
        sample("bbb-trailer-720p-55s.mp4"),
        gen("square.ts"),
        gen("vfr.mp4"),
        gen("rotated.mp4"),
        gen("anamorphic.mp4"),
        gen("yuv422p10.mkv"),
        gen("audio-only.m4a"),
    ] {
        let want = ffprobe_json(&path);
        let got = probe(&Input::from(&path)).unwrap();
        let ctx = path.display().to_string();
        assert_eq!(
            got.format_name,
            want["format"]["format_name"].as_str().unwrap(),
            "{ctx}"
        );
        assert!(
            (got.duration.unwrap() - num(&want["format"]["duration"]).unwrap()).abs() < 1e-5,
            "{ctx}"
        );
        let ws = want["streams"].as_array().unwrap();
        assert_eq!(got.streams.len(), ws.len(), "{ctx}");
        for (g, w) in got.streams.iter().zip(ws) {
            let ctx = format!("{ctx} stream {}", g.index);
            assert_eq!(g.codec_type, w["codec_type"].as_str().unwrap(), "{ctx}");
            assert_eq!(g.codec_name.as_deref(), w["codec_name"].as_str(), "{ctx}");
            assert_eq!(g.time_base, w["time_base"].as_str().unwrap(), "{ctx}");
            assert_eq!(g.r_frame_rate, w["r_frame_rate"].as_str().unwrap(), "{ctx}");
            assert_eq!(
                g.avg_frame_rate,
                w["avg_frame_rate"].as_str().unwrap(),
                "{ctx}"
            );
            assert_eq!(g.nb_frames, num(&w["nb_frames"]).map(|n| n as u64), "{ctx}");
            assert_eq!(
                g.start_time.map(|s| (s * 1e6).round()),
                num(&w["start_time"]).map(|s| (s * 1e6).round()),
                "{ctx}"
            );
            if let Some(d) = num(&w["duration"]) {
                assert!((g.duration.unwrap() - d).abs() < 1e-5, "{ctx}");
            }
            if g.codec_type == "video" {
                assert_eq!(g.width.map(u64::from), w["width"].as_u64(), "{ctx}");
                assert_eq!(g.height.map(u64::from), w["height"].as_u64(), "{ctx}");
                assert_eq!(g.pix_fmt.as_deref(), w["pix_fmt"].as_str(), "{ctx}");
                assert_eq!(
                    g.sample_aspect_ratio.as_deref(),
                    w["sample_aspect_ratio"].as_str(),
                    "{ctx}"
                );
                assert_eq!(
                    g.display_aspect_ratio.as_deref(),
                    w["display_aspect_ratio"].as_str(),
                    "{ctx}"
                );
                let rot = w["side_data_list"]
                    .as_array()
                    .and_then(|l| l.iter().find_map(|s| s["rotation"].as_i64()));
                assert_eq!(g.rotation.map(i64::from), rot, "{ctx}");
                assert!(g.frame_count.is_some(), "{ctx}");
            }
            if g.codec_type == "audio" {
                assert_eq!(
                    g.sample_rate.map(|r| r.to_string()).as_deref(),
                    w["sample_rate"].as_str(),
                    "{ctx}"
                );
                assert_eq!(g.channels.map(u64::from), w["channels"].as_u64(), "{ctx}");
            }
        }
    }
}

#[test]
fn probe_reports_display_size_and_keyframe_interval() {
    let r = probe(&Input::from(gen("rotated.mp4"))).unwrap();
    let v = &r.streams[r.video_stream.unwrap()];
    assert_eq!(
        (v.display_width, v.display_height, v.rotation),
        (Some(180), Some(320), Some(-90))
    );
    let a = probe(&Input::from(gen("anamorphic.mp4"))).unwrap();
    assert_eq!(
        (a.streams[0].display_width, a.streams[0].display_height),
        (Some(320), Some(180))
    );
    let l = probe(&Input::from(gen("longgop.mp4"))).unwrap();
    assert_eq!(l.streams[0].keyframe_interval, Some(2.0));
    assert_eq!(
        probe(&Input::from(gen("audio-only.m4a")))
            .unwrap()
            .video_stream,
        None
    );
}

/// Our first frame (display size) against the ffmpeg CLI's (which autorotates and keeps the
/// coded size, so `vf` applies the aspect ratio where needed).
fn compare_first_frame(file: &str, vf: Option<&str>, want_size: (u32, u32), tolerance: f64) {
    let path = gen(file);
    let o = SampleOptions {
        max_frames: Some(1),
        ..SampleOptions::new(SamplingStrategy::All)
    };
    let got = sample_all(&Input::from(&path), o).unwrap();
    assert_eq!((got[0].width, got[0].height), want_size, "{file}");
    let want = ffmpeg_rgb(&path, vf, 1);
    let d = mean_abs_diff(&got[0].rgb, &want);
    assert!(
        d <= tolerance,
        "{file}: mean abs difference {d} against ffmpeg"
    );
}

#[test]
fn pixel_formats_convert_like_ffmpeg() {
    for f in [
        "yuv420p10.mp4",
        "yuv422p10.mkv",
        "yuv444p.mp4",
        "rgb24.mkv",
        "pal8.mkv",
    ] {
        compare_first_frame(f, None, (160, 120), 1.0);
    }
}

#[test]
fn rotation_and_aspect_ratio_are_honoured() {
    compare_first_frame("rotated.mp4", None, (180, 320), 1.0);
    compare_first_frame(
        "anamorphic.mp4",
        Some("scale=320:180,setsar=1"),
        (320, 180),
        1.0,
    );
    // A requested size is the size after rotation.
    let o = SampleOptions {
        size: Some((90, 160)),
        max_frames: Some(1),
        ..SampleOptions::new(SamplingStrategy::All)
    };
    let got = sample_all(&Input::from(gen("rotated.mp4")), o).unwrap();
    assert_eq!(
        (got[0].width, got[0].height, got[0].rgb.len()),
        (90, 160, 90 * 160 * 3)
    );
}

#[test]
fn resizing_matches_ffmpeg_scale() {
    let path = sample("bbb-720p-5s.mp4");
    let o = SampleOptions {
        size: Some((384, 384)),
        max_frames: Some(1),
        ..SampleOptions::new(SamplingStrategy::All)
    };
    let got = sample_all(&Input::from(&path), o).unwrap();
    let want = ffmpeg_rgb(&path, Some("scale=384:384"), 1);
    let d = mean_abs_diff(&got[0].rgb, &want);
    assert!(d <= 1.0, "mean abs difference {d}");
}

fn err_of(input: &str) -> MediaError {
    match Sampler::open(&Input::parse(input), SampleOptions::default()) {
        Ok(_) => panic!("{input}: opened"),
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_are_one_line_errors_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(50)).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.mp4");
    let half = dir.path().join("bbb-half.mp4");
    let bytes = std::fs::read(sample("bbb-720p-5s.mp4")).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let audio = gen("audio-only.m4a");
    let cases: Vec<(String, &str)> = vec![
        (missing.display().to_string(), "no such file"),
        (dir.path().display().to_string(), "is a directory"),
        (text.display().to_string(), "not a media file"),
        (empty.display().to_string(), "empty file"),
        (half.display().to_string(), "moov atom not found"),
        (
            audio.display().to_string(),
            "no video stream (found: 1 audio)",
        ),
        ("http://127.0.0.1:9/x.mp4".to_string(), "connection refused"),
    ];
    for (input, reason) in cases {
        let msg = err_of(&input).to_string();
        assert!(msg.starts_with(&input), "{msg}");
        assert!(
            msg.to_lowercase().contains(&reason.to_lowercase()),
            "{input}: {msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }
    // probe fails the same way, except that audio-only is fine for probe.
    assert!(probe(&Input::from(&missing))
        .unwrap_err()
        .to_string()
        .contains("no such file"));
}

#[test]
fn truncated_file_yields_the_frames_before_the_cut() {
    // square.mp4 has its index first (faststart), so half the bytes still decode.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("square-half.mp4");
    let bytes = std::fs::read(gen("square.mp4")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let info = probe(&Input::from(&cut)).unwrap();
    let at = info
        .truncated_at
        .expect("truncation detected from the index");
    assert!(at > 0.5 && at < 5.5, "{at}");
    let mut s = Sampler::open(
        &Input::from(&cut),
        SampleOptions::new(SamplingStrategy::All),
    )
    .unwrap();
    let frames: Vec<_> = s.by_ref().collect::<Result<_, _>>().unwrap();
    assert!(!frames.is_empty() && frames.len() < 150, "{}", frames.len());
    assert!(frames.last().unwrap().pts < at + 0.2);
    assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
    assert!(s.warnings()[0].contains("truncated"), "{:?}", s.warnings());
}

#[test]
fn bad_options_are_rejected() {
    let path = gen("square.mp4");
    let mut o = SampleOptions::new(SamplingStrategy::All);
    o.stream = Some(7);
    assert!(Sampler::open(&Input::from(&path), o.clone())
        .err()
        .unwrap()
        .to_string()
        .contains("stream 7 does not exist"));
    let audio = gen("audio-only.m4a");
    o.stream = Some(0);
    assert!(Sampler::open(&Input::from(&audio), o)
        .err()
        .unwrap()
        .to_string()
        .contains("is audio, not video"));
}
