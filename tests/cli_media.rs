//! `vidlm probe` and `vidlm frames` through the binary: outputs against ffprobe, and every bad
//! input from the media issue (one-line error naming the input, non-zero exit, no panic).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample(name: &str) -> PathBuf {
    repo().join("samples").join(name)
}

fn gen(name: &str) -> PathBuf {
    common::synthetic(name)
}

fn vidlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ffprobe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn probe_json_agrees_with_ffprobe() {
    for path in [
        sample("bbb-720p-5s.mp4"),
        gen("rotated.mp4"),
        gen("square.ts"),
    ] {
        let got = stdout_json(&vidlm(&["probe", path.to_str().unwrap(), "--json"]));
        let want = ffprobe(&path);
        assert_eq!(got["format_name"], want["format"]["format_name"]);
        let d: f64 = want["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((got["duration"].as_f64().unwrap() - d).abs() < 1e-5);
        for (g, w) in got["streams"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["streams"].as_array().unwrap())
        {
            for key in [
                "codec_type",
                "codec_name",
                "width",
                "height",
                "pix_fmt",
                "r_frame_rate",
                "avg_frame_rate",
                "time_base",
            ] {
                assert_eq!(g[key], w[key], "{} {key}", path.display());
            }
            if let Some(n) = w["nb_frames"].as_str() {
                assert_eq!(g["nb_frames"].as_u64().unwrap().to_string(), n);
            }
        }
    }
    let rot = stdout_json(&vidlm(&[
        "probe",
        gen("rotated.mp4").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(rot["streams"][0]["rotation"], -90);
    // Text mode names the streams.
    let text = vidlm(&["probe", sample("bbb-720p-5s.mp4").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("video h264"));
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG");
    (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

#[test]
fn frames_writes_pngs_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let input = sample("bbb-720p-5s.mp4");
    let out = vidlm(&[
        "frames",
        input.to_str().unwrap(),
        "--sample",
        "fps:1",
        "--size",
        "384x384",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let frames = index["frames"].as_array().unwrap();
    let pts: Vec<f64> = frames.iter().map(|f| f["pts"].as_f64().unwrap()).collect();
    assert_eq!(pts, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    for f in frames {
        assert_eq!(
            png_size(&out_dir.join(f["file"].as_str().unwrap())),
            (384, 384)
        );
    }
    // PNGs + index.json and nothing else (no temporary files left behind).
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        frames.len() + 1
    );

    // --json lists the same timestamps, writes nothing.
    let listed = stdout_json(&vidlm(&[
        "frames",
        input.to_str().unwrap(),
        "--sample",
        "fps:1",
        "--json",
    ]));
    let listed: Vec<f64> = listed["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pts"].as_f64().unwrap())
        .collect();
    assert_eq!(listed, pts);
}

#[test]
fn frames_reads_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .args([
            "frames", "-", "--sample", "fps:1", "--json", "--size", "32x32",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(gen("square.ts")).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let v = stdout_json(&out);
    let pts: Vec<f64> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["pts"].as_f64().unwrap())
        .collect();
    assert_eq!(pts, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

/// Runs `vidlm ARGS` and checks: non-zero exit, no panic, stderr is one line
/// `vidlm: error: ...` naming the input and containing `reason`.
fn assert_one_line_error(args: &[&str], input: &str, reason: &str) {
    let out = vidlm(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].starts_with("vidlm: error: "), "{err}");
    assert!(lines[0].contains(input), "{err} does not name {input}");
    assert!(
        lines[0].to_lowercase().contains(&reason.to_lowercase()),
        "{err} lacks {reason}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    std::fs::write(p("notes.mp4"), "just some text, not a video\n".repeat(20)).unwrap();
    std::fs::write(p("empty.mp4"), b"").unwrap();
    let bbb = std::fs::read(sample("bbb-720p-5s.mp4")).unwrap();
    std::fs::write(p("half.mp4"), &bbb[..bbb.len() / 2]).unwrap();
    let audio = gen("audio-only.m4a").to_str().unwrap().to_string();
    let cases = [
        (p("missing.mp4"), "no such file"),
        (dir.path().to_str().unwrap().to_string(), "is a directory"),
        (p("notes.mp4"), "not a media file"),
        (p("half.mp4"), "moov atom not found"),
        (audio, "no video stream"),
        ("http://127.0.0.1:9/x.mp4".to_string(), "connection refused"),
        (p("empty.mp4"), "empty file"),
    ];
    let out_dir = p("out");
    for (input, reason) in &cases {
        assert_one_line_error(
            &["frames", input, "--sample", "fps:1", "--out", &out_dir],
            input,
            reason,
        );
        if *reason != "no video stream" {
            assert_one_line_error(&["probe", input, "--json"], input, reason);
        }
    }
}

#[test]
fn window_past_the_end_says_so() {
    let bbb = sample("bbb-720p-5s.mp4");
    let input = bbb.to_str().unwrap();
    // frames:N spreads over the window, so an empty one is an error that names the end...
    assert_one_line_error(
        &[
            "frames", input, "--sample", "frames:4", "--from", "10", "--json",
        ],
        input,
        "at or past the end of the video (5.280 s)",
    );
    // ...while fps:N past the end, like ffmpeg's fps filter, simply yields no frame.
    let out = vidlm(&[
        "frames", input, "--sample", "fps:1", "--from", "10", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout_json(&out)["frames"].as_array().map(Vec::len),
        Some(0)
    );
}

#[test]
fn truncated_file_writes_frames_before_the_cut_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("square-half.mp4");
    let bytes = std::fs::read(gen("square.mp4")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out_dir = dir.path().join("out");
    let out = vidlm(&[
        "frames",
        cut.to_str().unwrap(),
        "--sample",
        "fps:1",
        "--size",
        "64x64",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("vidlm: error: ")
            && last.contains("truncated")
            && last.contains(cut.to_str().unwrap()),
        "{err}"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let n = index["frames"].as_array().unwrap().len();
    assert!((1..6).contains(&n), "{n} frames before the cut");
    assert_eq!(index["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_options_fail_with_one_line() {
    let input = gen("square.mp4");
    let out = vidlm(&["frames", input.to_str().unwrap(), "--sample", "fps:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
    let out = vidlm(&["frames", input.to_str().unwrap(), "--json", "--stream", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream 3 does not exist"));
}

/// `vidlm frames FILE --json ARGS`: (pts, index) of each frame; panics on failure.
fn frame_list(input: &Path, args: &[&str]) -> Vec<(f64, Option<u64>)> {
    let mut a = vec!["frames", input.to_str().unwrap(), "--json"];
    a.extend_from_slice(args);
    let v = stdout_json(&vidlm(&a));
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["pts"].as_f64().unwrap(), f["index"].as_u64()))
        .collect()
}

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg {args:?}");
}

/// The commands of the sampling issue's first block, on the files it makes with the ffmpeg CLI:
/// each now gives the frames the documented semantics say.
#[test]
fn issue_commands_give_the_documented_frames() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let src30 = "testsrc2=size=320x240:rate=30";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src30,
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-g",
        "60",
        p("g.mkv").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src30,
        "-t",
        "10",
        "-c:v",
        "libvpx-vp9",
        "-g",
        "60",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        p("g.webm").to_str().unwrap(),
    ]);
    let src1 = "testsrc2=size=96x96:rate=1";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src1,
        "-t",
        "4",
        "-c:v",
        "ffv1",
        p("a.mkv").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src1,
        "-t",
        "4",
        "-c:v",
        "libx264",
        p("b.mp4").to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src1,
        "-t",
        "4",
        "-c:v",
        "ffv1",
        p("e.avi").to_str().unwrap(),
    ]);
    let trailer = sample("bbb-trailer-720p-55s.mp4");
    ffmpeg(&[
        "-i",
        trailer.to_str().unwrap(),
        "-c",
        "copy",
        p("trailer.mkv").to_str().unwrap(),
    ]);

    let secs = |v: &[(f64, Option<u64>)]| v.iter().map(|f| f.0).collect::<Vec<_>>();
    let whole: Vec<f64> = (0..10).map(f64::from).collect();
    for f in ["g.mkv", "g.webm"] {
        // fps:1 on 10 s: the frames at 0, 1, ... 9 s (indices 0, 30, ... 270).
        let got = frame_list(&p(f), &["--sample", "fps:1"]);
        assert_eq!(secs(&got), whole, "{f} fps:1");
        assert!(
            got.iter()
                .enumerate()
                .all(|(k, x)| x.1 == Some(30 * k as u64)),
            "{f}: {got:?}"
        );
        // frames:8 of 300 frames: round(linspace(0, 299, 8)).
        let got = frame_list(&p(f), &["--sample", "frames:8"]);
        let idx: Vec<u64> = got.iter().map(|x| x.1.unwrap()).collect();
        assert_eq!(
            idx,
            vec![0, 43, 85, 128, 171, 214, 256, 299],
            "{f} frames:8"
        );
        for (t, i) in &got {
            assert!(
                (t - *i.as_ref().unwrap() as f64 / 30.0).abs() < 1.0 / 60.0,
                "{f}: {got:?}"
            );
        }
    }
    // The 55 s trailer remuxed: fps:1 gives the frames at 0, 1, ... 55 s, as the MP4 does.
    let mkv = secs(&frame_list(&p("trailer.mkv"), &["--sample", "fps:1"]));
    let mp4 = secs(&frame_list(&trailer, &["--sample", "fps:1"]));
    assert_eq!(mkv.len(), 56, "{mkv:?}");
    assert_eq!(mkv, mp4);
    let one_fps: Vec<f64> = (0..4).map(f64::from).collect();
    assert_eq!(
        secs(&frame_list(&p("a.mkv"), &["--sample", "fps:1"])),
        one_fps
    );
    // frames:4 of 4 frames: all of them, the first included.
    assert_eq!(
        secs(&frame_list(&p("b.mp4"), &["--sample", "frames:4"])),
        one_fps
    );
    assert_eq!(
        secs(&frame_list(&p("e.avi"), &["--sample", "frames:4"])),
        one_fps
    );
}

/// A window that holds frames but yields none (no keyframe in it) fails, naming the input.
#[test]
fn empty_result_from_a_window_with_frames_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("gop.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x96:rate=10",
        "-t",
        "6",
        "-c:v",
        "libx264",
        "-g",
        "60",
        clip.to_str().unwrap(),
    ]);
    let input = clip.to_str().unwrap();
    assert_one_line_error(
        &[
            "frames",
            input,
            "--sample",
            "keyframes",
            "--from",
            "1",
            "--to",
            "5",
            "--json",
        ],
        input,
        "holds no keyframe",
    );
}

/// frames:N on standard input: MPEG-TS and raw MPEG-4 are read ahead (no seeking back), so the
/// frames are the file's; Matroska through stdin gives the file's fps:1 frames.
#[test]
fn stdin_frames_n_and_matroska() {
    let dir = tempfile::tempdir().unwrap();
    let m4v = dir.path().join("raw.m4v");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x96:rate=25",
        "-t",
        "4",
        "-c:v",
        "mpeg4",
        "-bf",
        "2",
        "-f",
        "m4v",
        m4v.to_str().unwrap(),
    ]);
    let mkv = dir.path().join("square.mkv");
    ffmpeg(&[
        "-i",
        gen("square.mp4").to_str().unwrap(),
        "-c",
        "copy",
        mkv.to_str().unwrap(),
    ]);
    for (file, strategy) in [
        (gen("square.ts"), "frames:7"),
        (m4v.clone(), "frames:5"),
        (mkv.clone(), "fps:1"),
        (mkv.clone(), "frames:6"),
    ] {
        let want = frame_list(&file, &["--sample", strategy, "--size", "32x32"]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_vidlm"))
            .args([
                "frames", "-", "--sample", strategy, "--json", "--size", "32x32",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let data = std::fs::read(&file).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let got: Vec<(f64, Option<u64>)> = stdout_json(&out)["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["pts"].as_f64().unwrap(), f["index"].as_u64()))
            .collect();
        assert_eq!(got, want, "{} {strategy} through stdin", file.display());
    }
}
