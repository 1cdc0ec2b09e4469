//! Helpers shared by the media tests: sample paths and ffprobe/ffmpeg CLI references.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A committed sample (samples/NAME).
pub fn sample(name: &str) -> PathBuf {
    repo().join("samples").join(name)
}

/// A synthetic clip (samples/gen/NAME), made on first use by samples/make-synthetic.sh.
pub fn gen(name: &str) -> PathBuf {
    static MAKE: Once = Once::new();
    MAKE.call_once(|| {
        let st = Command::new("bash")
            .arg(repo().join("samples/make-synthetic.sh"))
            .status()
            .expect("run make-synthetic.sh");
        assert!(st.success(), "samples/make-synthetic.sh failed");
    });
    repo().join("samples/gen").join(name)
}

/// Runs `cmd`, asserts it succeeded, returns its stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// ffprobe's frames of the first video stream: (best_effort_timestamp_time, key_frame).
pub fn ffprobe_frames(path: &std::path::Path) -> Vec<(f64, bool)> {
    let out = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_frames",
            "-show_entries",
            "frame=best_effort_timestamp_time,key_frame",
            "-of",
            "json",
        ])
        .arg(path));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["best_effort_timestamp_time"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
                f["key_frame"].as_i64() == Some(1),
            )
        })
        .collect()
}

/// `ffprobe -show_format -show_streams` as JSON.
pub fn ffprobe_json(path: &std::path::Path) -> serde_json::Value {
    let out = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-of",
            "json",
        ])
        .arg(path));
    serde_json::from_slice(&out).unwrap()
}

/// Presentation times of the key packets of the first video stream (no decoding, so fast).
pub fn ffprobe_key_packets(path: &std::path::Path) -> Vec<f64> {
    let out = run(Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ])
        .arg(path));
    let mut v: Vec<f64> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(_, f)| f.starts_with('K'))
        .map(|(t, _)| t.parse().unwrap())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The video stream's start time as ffprobe reports it.
pub fn ffprobe_start(path: &std::path::Path) -> f64 {
    let v = ffprobe_json(path);
    let s = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    s["start_time"].as_str().map_or(0.0, |t| t.parse().unwrap())
}

/// Frames as the ffmpeg CLI decodes them to RGB24 with `vf` (autorotation on, as by default).
pub fn ffmpeg_rgb(path: &std::path::Path, vf: Option<&str>, frames: usize) -> Vec<u8> {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-i"]).arg(path);
    if let Some(vf) = vf {
        c.args(["-vf", vf]);
    }
    // One output frame per decoded frame kept by the filter (no duplicates to fill gaps).
    c.args(["-fps_mode", "passthrough"]);
    c.args([
        "-frames:v",
        &frames.to_string(),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]);
    run(&mut c)
}

/// Mean absolute difference of two byte buffers of equal length.
pub fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "buffer sizes differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x.abs_diff(y)))
        .sum::<f64>()
        / a.len() as f64
}
