//! End-to-end tests of `vidlm batch` with the real tiny SmolVLM2 checkpoint: error records and
//! exit status, `--resume`, and Ctrl-C (SIGINT) in the middle of a batch.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{ffmpeg, records, root, vidlm, write_manifest};

fn model() -> String {
    common::fixture_model("smolvlm-tiny-sf2")
}

#[test]
fn batch_of_five_with_a_missing_and_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An mp4 with its index at the end (ffmpeg's default): cut at half, it cannot be opened.
    let Some(whole) = ffmpeg(
        d,
        "whole.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=10",
            "-t",
            "6",
            "-pix_fmt",
            "yuv420p",
        ],
    ) else {
        return;
    };
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = d.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let manifest = d.join("jobs.jsonl");
    let sample = root().join("samples/bbb-720p-5s.mp4");
    write_manifest(
        &manifest,
        &[
            json!({"id": "bbb", "input": sample, "task": "summarize"}),
            json!({"id": "gone", "input": d.join("missing.mp4"), "task": "summarize"}),
            json!({"id": "ask-range", "input": whole, "task": "ask", "question": "What is shown?", "from": 1.5, "to": "0:04"}),
            json!({"id": "cut", "input": truncated, "task": "summarize"}),
            json!({"id": "synthetic", "input": whole}),
        ],
    );
    let out = d.join("results.jsonl");
    let run = |resume: bool| {
        let mut c = vidlm();
        c.arg("batch").arg(&manifest).arg("--out").arg(&out);
        c.args(["--model", &model(), "--max-new-tokens", "4"]);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let o = run(false);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 5);
    let by_id = |id: &str| recs.iter().find(|r| r["id"] == id).unwrap().clone();
    for id in ["bbb", "ask-range", "synthetic"] {
        assert_eq!(by_id(id)["status"], "ok", "{}", by_id(id));
    }
    for (id, needle) in [("gone", "missing.mp4"), ("cut", "truncated.mp4")] {
        let r = by_id(id);
        assert_eq!(r["status"], "error");
        let e = r["error"].as_str().unwrap();
        assert!(e.contains(needle) && !e.contains('\n'), "{e}");
    }
    let s = by_id("bbb");
    assert_eq!(s["task"], "summarize");
    assert!(s["segments"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(s["summary"].is_string());
    // The ask stayed inside its range and cites it.
    let a = by_id("ask-range");
    assert_eq!(a["task"], "ask");
    assert!(a["answer"].is_string());
    assert_eq!(a["evidence"], json!([{"start": 1.5, "end": 4.0}]));
    for t in a["frames"].as_array().unwrap() {
        let t = t.as_f64().unwrap();
        assert!((1.5..4.0).contains(&t), "{t}");
    }

    // Without --resume an existing output is never clobbered.
    let before = std::fs::read(&out).unwrap();
    let o = run(false);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume continues it"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
    // --resume: every id is there (ok or error): nothing reruns, the file is untouched.
    let o = run(true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to do"));
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn csv_manifest_and_resume_of_a_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("jobs.csv");
    let sample = root().join("samples/bbb-720p-5s.mp4");
    let s = sample.to_string_lossy();
    std::fs::write(
        &manifest,
        format!("id,input,task,question,from,to\na,{s},summarize,,,\nb,{s},ask,\"Is it day, or night?\",0,2\n"),
    )
    .unwrap();
    // A previous run finished `a` and was killed while writing a line.
    let out = dir.path().join("jobs.results.jsonl");
    std::fs::write(
        &out,
        "{\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"b\",\"sta",
    )
    .unwrap();
    let o = vidlm()
        .arg("batch")
        .arg(&manifest)
        .args(["--resume", "--model", &model(), "--max-new-tokens", "4"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[1]["id"], "b");
    assert_eq!(recs[1]["question"], "Is it day, or night?");
    assert_eq!(recs[1]["evidence"], json!([{"start": 0.0, "end": 2.0}]));
}

#[test]
fn sigint_mid_batch_leaves_a_valid_output() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("jobs.jsonl");
    let trailer = root().join("samples/bbb-trailer-720p-55s.mp4");
    let items: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("t{i}"), "input": trailer}))
        .collect();
    write_manifest(&manifest, &items);
    let out = dir.path().join("out.jsonl");
    let mut child = vidlm()
        .arg("batch")
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .args([
            "--model",
            &model(),
            "--max-new-tokens",
            "4",
            "--sample",
            "fps:2",
        ])
        .args(["--decode-workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first finished item, then interrupt.
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("vidlm batch exited early: {status}");
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "no item finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out);
    assert!(
        !recs.is_empty() && recs.len() < 12,
        "{} records",
        recs.len()
    );
    for r in &recs {
        assert_eq!(r["status"], "ok", "{r}");
    }
    // The rest is still to do: --resume picks up exactly the missing ids.
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
}

#[test]
fn a_stream_item_gets_one_record_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("live.jsonl");
    write_manifest(&manifest, &[json!({"id": "pipe", "input": "-"})]);
    let out = dir.path().join("live.out.jsonl");
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
        .stdout(std::process::Stdio::piped())
        .spawn();
    let Ok(mut ff) = ff else {
        eprintln!("skipping: the ffmpeg CLI is not available");
        return;
    };
    let o = vidlm()
        .arg("batch")
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .args([
            "--model",
            &model(),
            "--max-new-tokens",
            "4",
            "--window",
            "2s",
            "--metrics",
        ])
        .stdin(ff.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(ff.wait().unwrap().success());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out);
    let windows: Vec<(f64, f64)> = recs
        .iter()
        .filter(|r| r["status"] == "partial")
        .map(|r| {
            let s = &r["segment"];
            (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(windows.len(), 3, "{recs:?}");
    assert_eq!(windows[..2], [(0.0, 2.0), (2.0, 4.0)]);
    let last = recs.last().unwrap();
    assert_eq!(
        (last["id"].as_str(), last["status"].as_str()),
        (Some("pipe"), Some("ok"))
    );
    assert!(last["duration"].is_null());
    // --metrics: one JSON line with the run's counters.
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("{\"metrics\""))
        .expect("metrics line");
    let m: Value = serde_json::from_str(line).unwrap();
    assert_eq!(m["metrics"]["frames_sampled"], 6);
    assert!(m["metrics"]["tokens_out"].as_u64().unwrap() > 0);
}
