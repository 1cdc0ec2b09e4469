//! End-to-end tests of `vidlm summarize` with the real tiny SmolVLM2 checkpoint
//! (crates/models/tests/fixtures/smolvlm-tiny-sf2) on sample and synthetic media.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use common::{ffmpeg, root, vidlm};

fn model() -> String {
    common::fixture_model("smolvlm-tiny-sf2")
}

/// Runs `vidlm summarize` with the tiny model and returns the parsed JSON.
fn summarize(input: &Path, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("summary.json");
    let o = vidlm()
        .arg("summarize")
        .arg(input)
        .args(["--model", &model(), "--max-new-tokens", "6", "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vidlm summarize failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "--out must keep stdout empty");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    validate(&schema(), &v, &schema(), "$");
    v
}

fn schema() -> Value {
    let text = std::fs::read_to_string(root().join("pipelines/summarize.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks `v` against the subset of JSON Schema our schema file uses: type (one or a list),
/// required, properties, items, $ref to #/$defs, minimum.
fn validate(s: &Value, v: &Value, root: &Value, path: &str) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("local $ref");
        return validate(&root["$defs"][name], v, root, path);
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema"),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            _ => panic!("unknown type {t}"),
        });
        assert!(ok, "{path}: {v} is not {types:?}");
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        assert!(x >= min, "{path}: {x} < {min}");
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for k in req {
            let k = k.as_str().unwrap();
            assert!(v.get(k).is_some(), "{path}: missing `{k}`");
        }
    }
    if let (Some(props), Some(obj)) = (
        s.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, sub) in props {
            if let Some(x) = obj.get(k) {
                validate(sub, x, root, &format!("{path}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(items, x, root, &format!("{path}[{i}]"));
        }
    }
}

/// (start, end) of each entry of `v[key]`.
fn ranges(v: &Value, key: &str) -> Vec<(f64, f64)> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
        .collect()
}

/// Segments lie inside [0, duration], each non-empty, in order, without overlap.
fn assert_timeline(r: &[(f64, f64)], duration: Option<f64>) {
    assert!(!r.is_empty());
    for (i, (s, e)) in r.iter().enumerate() {
        assert!(*s >= 0.0 && s <= e, "segment {i}: {s}..{e}");
        if let Some(d) = duration {
            assert!(
                *e <= d + 1e-9,
                "segment {i} ends at {e} past the duration {d}"
            );
        }
        if i > 0 {
            assert!(
                r[i - 1].1 <= *s + 1e-9,
                "segments {} and {i} overlap",
                i - 1
            );
        }
    }
}

#[test]
fn summarizes_the_sample_clip_into_schema_json() {
    let v = summarize(&root().join("samples/bbb-720p-5s.mp4"), &[]);
    let duration = v["duration"].as_f64().unwrap();
    assert!((duration - 5.28).abs() < 0.05, "{duration}");
    // 5.3 s at fps:1 fits the tiny model's budget: one prompt over all six frames.
    assert_eq!(ranges(&v, "chunks"), vec![(0.0, duration)]);
    assert_timeline(&ranges(&v, "segments"), Some(duration));
    assert_eq!(v["sampling"]["frames"], 6);
    assert_eq!(v["usage"]["calls"], 1);
    assert_eq!(v["summary"], v["segments"][0]["text"]);
    assert_eq!(v["model"].as_str().unwrap(), model());
}

#[test]
fn long_synthetic_video_is_chunked_on_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clip) = ffmpeg(
        dir.path(),
        "long.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=10",
            "-t",
            "40",
            "-pix_fmt",
            "yuv420p",
        ],
    ) else {
        return;
    };
    // 40 frames at fps:1 over a budget of 8 per prompt: the auto plan is an 8 s grid.
    let v = summarize(&clip, &["--prompt-frames", "8"]);
    let d = v["duration"].as_f64().unwrap();
    assert!((d - 40.0).abs() < 0.01, "{d}");
    let chunks = ranges(&v, "chunks");
    assert_eq!(
        chunks,
        vec![
            (0.0, 8.0),
            (8.0, 16.0),
            (16.0, 24.0),
            (24.0, 32.0),
            (32.0, d)
        ]
    );
    // Merged segments keep boundaries from the grid.
    let segments = ranges(&v, "segments");
    assert_timeline(&segments, Some(d));
    for (s, e) in &segments {
        assert!(chunks.iter().any(|c| c.0 == *s) && chunks.iter().any(|c| c.1 == *e));
    }
    assert_eq!(segments.first().unwrap().0, 0.0);
    assert_eq!(segments.last().unwrap().1, d);
    // Five descriptions plus the summary (a map-reduce over their text).
    assert_eq!(v["usage"]["calls"], 6);
}

#[test]
fn scene_chunking_cuts_where_the_picture_changes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clip) = ffmpeg(
        dir.path(),
        "scenes.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:size=96x64:rate=10:d=6",
            "-f",
            "lavfi",
            "-i",
            "color=c=blue:size=96x64:rate=10:d=5",
            "-f",
            "lavfi",
            "-i",
            "color=c=green:size=96x64:rate=10:d=7",
            "-filter_complex",
            "[0][1][2]concat=n=3:v=1:a=0",
            "-pix_fmt",
            "yuv420p",
        ],
    ) else {
        return;
    };
    let v = summarize(
        &clip,
        &[
            "--chunk",
            "scene:0.3:2:60",
            "--sample",
            "fps:2",
            "--merge-threshold",
            "2",
        ],
    );
    let d = v["duration"].as_f64().unwrap();
    assert_eq!(
        ranges(&v, "chunks"),
        vec![(0.0, 6.0), (6.0, 11.0), (11.0, d)]
    );
    assert_timeline(&ranges(&v, "segments"), Some(d));
}

#[test]
fn summarizes_a_stream_from_a_pipe_in_windows() {
    let ff = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            "samples/bbb-720p-5s.mp4",
            "-an",
            "-c:v",
            "copy",
        ])
        .args(["-bsf:v", "h264_mp4toannexb", "-f", "mpegts", "-"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut ff) = ff else {
        eprintln!("skipping: the ffmpeg CLI is not available");
        return;
    };
    let o = vidlm()
        .args([
            "summarize",
            "-",
            "--model",
            &model(),
            "--max-new-tokens",
            "4",
        ])
        .args([
            "--window",
            "2s",
            "--merge-threshold",
            "2",
            "--format",
            "json",
        ])
        .stdin(ff.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(ff.wait().unwrap().success());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    validate(&schema(), &v, &schema(), "$");
    assert!(v["duration"].is_null());
    // Frames at 0..5 s: windows [0,2) [2,4) and the last one closed at the last frame.
    let chunks = ranges(&v, "chunks");
    assert_eq!(chunks[..2], [(0.0, 2.0), (2.0, 4.0)]);
    assert_eq!(chunks.len(), 3);
    assert!(
        chunks[2].0 == 4.0 && chunks[2].1 >= 4.9 && chunks[2].1 <= 5.3,
        "{chunks:?}"
    );
}

#[test]
fn writes_markdown_and_subtitles() {
    let clip = root().join("samples/bbb-720p-5s.mp4");
    for (format, head) in [
        ("srt", "1\n00:00:00,000 --> 00:00:05,"),
        ("vtt", "WEBVTT\n\n00:00:00.000 --> 00:00:05."),
    ] {
        let o = vidlm()
            .arg("summarize")
            .arg(&clip)
            .args([
                "--model",
                &model(),
                "--max-new-tokens",
                "4",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.starts_with(head), "{format}: {text}");
    }
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video").unwrap();
    for input in [dir.path().join("missing.mp4"), text] {
        let o = vidlm()
            .arg("summarize")
            .arg(&input)
            .args(["--model", &model()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&*input.to_string_lossy()), "{err}");
        assert!(o.stdout.is_empty());
    }
    let o = vidlm()
        .args([
            "summarize",
            "samples/bbb-720p-5s.mp4",
            "--model",
            &model(),
            "--pool",
            "mean:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("mean:K needs K >= 1"));
}

#[test]
fn presets_load_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let preset = dir.path().join("p.toml");
    std::fs::write(
        &preset,
        "[sampling]\nstrategy = \"fps:2\"\n[chunking]\npolicy = \"fixed:2\"\nmerge_threshold = 2.0\n[output]\nformat = \"md\"\n",
    )
    .unwrap();
    let clip = root().join("samples/bbb-720p-5s.mp4");
    let run = |extra: &[&str]| {
        let o = vidlm()
            .arg("summarize")
            .arg(&clip)
            .args(["--model", &model(), "--max-new-tokens", "3", "--pipeline"])
            .arg(&preset)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    // The preset's format (md) and grid (2 s: three chunks in the timeline).
    let md = run(&[]);
    assert!(md.contains("## Timeline"), "{md}");
    assert_eq!(md.matches("\n- **").count(), 3, "{md}");
    // Flags win: JSON, fps:1, a 4 s grid.
    let v: Value = serde_json::from_str(&run(&[
        "--format", "json", "--sample", "fps:1", "--chunk", "fixed:4",
    ]))
    .unwrap();
    assert_eq!(v["sampling"]["strategy"], "fps:1");
    assert_eq!(ranges(&v, "chunks").len(), 2);
    // Shipped presets parse.
    for p in ["summarize", "ask", "batch-streams"] {
        let path = root().join(format!("pipelines/{p}.toml"));
        vidlm_pipeline::PipelineConfig::load(&path).unwrap();
    }
}
