//! `vidlm eval` end to end on a tiny fixture model: the synthetic suite run under the controls
//! (the report shows near-chance accuracy with the blind control beside it), decoding shared
//! across conditions, likelihood mode, failures recorded and counted, and resume after a kill.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{fixture_model, vidlm};
use serde_json::Value;

fn model() -> String {
    fixture_model("smolvlm-tiny-sf2")
}

fn synth(dir: &Path, per_task: usize) -> bool {
    let o = vidlm()
        .args([
            "eval",
            "synth",
            "--seed",
            "5",
            "--per-task",
            &per_task.to_string(),
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    if !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot run ffmpeg") {
        eprintln!("skipping: the ffmpeg CLI is not available");
        return false;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    true
}

/// The model and pipeline flags every run here uses.
fn run_flags() -> Vec<String> {
    [
        "--model",
        &model(),
        "--sample",
        "frames:4",
        "--max-new-tokens",
        "6",
    ]
    .map(String::from)
    .to_vec()
}

fn eval_run(suite: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = vidlm();
    c.args(["eval", "run"])
        .arg(suite)
        .arg("--out")
        .arg(out)
        .args(run_flags())
        .args(extra);
    c
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn frames_decoded(stderr: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("{\"metrics\""))
        .unwrap_or_else(|| panic!("no metrics line in {text}"));
    let v: Value = serde_json::from_str(line).unwrap();
    v["metrics"]["frames_decoded"].as_u64().unwrap()
}

#[test]
fn synthetic_suite_under_all_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let suite_dir = dir.path().join("synth");
    if !synth(&suite_dir, 2) {
        return;
    }
    let suite = suite_dir.join("suite.jsonl");
    let out = dir.path().join("all");
    let o = eval_run(
        &suite,
        &out,
        &[
            "--conditions",
            "video,blind,single-frame,shuffled",
            "--metrics",
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    let conds: Vec<&str> = r["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["condition"].as_str().unwrap())
        .collect();
    assert_eq!(conds, ["video", "blind", "single-frame", "shuffled"]);
    for c in r["conditions"].as_array().unwrap() {
        assert_eq!(c["overall"]["n"], 16, "{c}");
        assert_eq!(c["overall"]["failed"], 0);
        assert_eq!(c["tasks"].as_object().unwrap().len(), 8);
    }
    assert_eq!(r["deltas"].as_array().unwrap().len(), 3);
    assert_eq!(r["items"].as_array().unwrap().len(), 16);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| **overall** | video | 16 |"), "{md}");
    assert!(md.contains("| **overall** | blind | 16 |"), "{md}");
    assert!(md.contains("McNemar p"));
    let png = std::fs::read(out.join("report.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let records = std::fs::read_to_string(out.join("records.jsonl")).unwrap();
    assert_eq!(records.lines().count(), 64);

    // The four conditions decode each video once: as many frames as the video condition alone.
    let all = frames_decoded(&o.stderr);
    let only = dir.path().join("video-only");
    let o = eval_run(&suite, &only, &["--metrics"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(frames_decoded(&o.stderr), all);
    // No condition's answers depend on the others run beside it (with their decoding and
    // encodings shared).
    let answers_of = |d: &Path, cond: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_to_string(d.join("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["id"].as_str().unwrap().ends_with(&format!("#{cond}")))
            .map(|r| {
                (
                    r["id"].as_str().unwrap().into(),
                    r["answer"].as_str().unwrap().into(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let answers = |d: &Path| answers_of(d, "video");
    assert_eq!(answers(&out), answers(&only));
    // Reused encodings give the answers of encoding afresh.
    let all4 = [
        "--conditions",
        "video,blind,single-frame,shuffled",
        "--encode-batch",
        "1",
    ];
    let reused_dir = dir.path().join("reused");
    let fresh_dir = dir.path().join("fresh");
    assert!(eval_run(&suite, &reused_dir, &all4)
        .status()
        .unwrap()
        .success());
    let mut fresh_flags = all4.to_vec();
    fresh_flags.push("--no-encoding-reuse");
    assert!(eval_run(&suite, &fresh_dir, &fresh_flags)
        .status()
        .unwrap()
        .success());
    for cond in ["video", "blind", "single-frame", "shuffled"] {
        assert_eq!(
            answers_of(&reused_dir, cond),
            answers_of(&fresh_dir, cond),
            "{cond}"
        );
    }
    // The controls reused the video's encodings: single-frame's and shuffled's images are the
    // video's, blind's black frame is the same for every clip of a size.
    let groups = &report(&reused_dir)["run"]["encoder_groups"];
    let (encoded, reused) = (
        groups["encoded"].as_u64().unwrap(),
        groups["reused"].as_u64().unwrap(),
    );
    assert_eq!(encoded + reused, 16 * (4 + 1 + 1 + 4), "{groups}");
    assert!(reused >= 16 * 5, "{groups}");
    assert!(report(&fresh_dir)["run"]["encoder_groups"].is_null());
    // And they are what `vidlm batch` answers to the same prompts about the same files.
    let (_, items) = vidlm_eval::suite::read_suite(&suite, None).unwrap();
    let manifest = dir.path().join("batch.jsonl");
    let lines: String = items
        .iter()
        .map(|i| {
            serde_json::json!({"id": format!("{}#video", i.id), "input": i.video, "question": i.prompt})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&manifest, lines).unwrap();
    let batch_out = dir.path().join("batch.out.jsonl");
    let o = vidlm()
        .arg("batch")
        .arg(&manifest)
        .arg("-o")
        .arg(&batch_out)
        .args(run_flags())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut batch: Vec<(String, String)> = std::fs::read_to_string(&batch_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["answer"].as_str().unwrap().into(),
            )
        })
        .collect();
    batch.sort();
    assert_eq!(answers(&only), batch);

    // Likelihood mode: multiple-choice items only, accuracy near chance for random weights, with
    // the blind control beside it.
    let lik = dir.path().join("likelihood");
    let o = eval_run(
        &suite,
        &lik,
        &["--mode", "likelihood", "--conditions", "video,blind"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("multiple-choice items only"));
    let r = report(&lik);
    for c in r["conditions"].as_array().unwrap() {
        let a = &c["overall"];
        assert_eq!(a["n"], 10, "{a}");
        let (lo, hi, chance) = (
            a["ci_low"].as_f64().unwrap(),
            a["ci_high"].as_f64().unwrap(),
            a["chance"].as_f64().unwrap(),
        );
        assert!(lo <= chance && chance <= hi, "{}: {a}", c["condition"]);
    }
    for line in std::fs::read_to_string(lik.join("records.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let lp = v["logprobs"].as_array().unwrap();
        assert!(lp.iter().all(|x| x.as_f64().unwrap() < 0.0));
    }
}

#[test]
fn failures_are_recorded_and_resume_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let suite_dir = dir.path().join("synth");
    if !synth(&suite_dir, 3) {
        return;
    }
    // One item whose video is missing.
    let suite = suite_dir.join("suite.jsonl");
    let mut text = std::fs::read_to_string(&suite).unwrap();
    text.push_str(
        "{\"id\":\"missing\",\"video\":\"nope.mp4\",\"question\":\"How many?\",\"answer\":\"1\",\"task\":\"counting\"}\n",
    );
    std::fs::write(&suite, text).unwrap();
    // One frame per encoder call, so a resumed run (which starts at another item) makes the
    // same encoder calls as the full run and the comparison below is of resuming alone.
    let total = 25 * 2;
    let full = dir.path().join("full");
    let o = eval_run(
        &suite,
        &full,
        &["--conditions", "video,blind", "--encode-batch", "1"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "a failed item is a failure exit");
    let r = report(&full);
    assert_eq!(r["conditions"][0]["overall"]["failed"], 1);
    assert_eq!(r["conditions"][0]["overall"]["n"], 24);
    let lines = |d: &Path| -> Vec<Value> {
        std::fs::read_to_string(d.join("records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let want = lines(&full);
    assert_eq!(want.len(), total);
    let err = want.iter().find(|v| v["id"] == "missing#video").unwrap();
    assert_eq!(err["status"], "error");
    assert_eq!(err["error_kind"], "input");

    // Killed mid-run (SIGKILL: no cleanup), then resumed.
    let part = dir.path().join("part");
    let mut child = eval_run(
        &suite,
        &part,
        &["--conditions", "video,blind", "--encode-batch", "1"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let records = part.join("records.jsonl");
    loop {
        let n = std::fs::read_to_string(&records).map_or(0, |t| t.lines().count());
        if n >= 2 || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap();
    // Whether or not the kill landed before the end, leave the file as a kill mid-write would:
    // some whole lines and a torn one.
    let text = std::fs::read_to_string(&records).unwrap();
    let keep: Vec<&str> = text.lines().take(total / 3).collect();
    std::fs::write(&records, format!("{}\n{{\"id\": \"torn", keep.join("\n"))).unwrap();
    let o = eval_run(
        &suite,
        &part,
        &["--conditions", "video,blind", "--encode-batch", "1"],
    )
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume continues"));
    let o = eval_run(
        &suite,
        &part,
        &[
            "--conditions",
            "video,blind",
            "--encode-batch",
            "1",
            "--resume",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let got = lines(&part);
    assert_eq!(got.len(), total, "every item and condition once");
    let key = |v: &Value| (v["id"].as_str().unwrap().to_string(), v["answer"].clone());
    let mut a: Vec<_> = got.iter().map(key).collect();
    let mut b: Vec<_> = want.iter().map(key).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        a, b,
        "the resumed run gives the uninterrupted run's answers"
    );
    assert_eq!(report(&part)["conditions"], report(&full)["conditions"]);
}

#[test]
fn bad_suites_and_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("s.jsonl");
    std::fs::write(&suite, "{\"id\":\"a\",\"video\":\"x.mp4\"}\n").unwrap();
    let o = eval_run(&suite, &dir.path().join("o"), &[])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 1: missing `question`"), "{err}");
    std::fs::write(
        &suite,
        "{\"id\":\"a\",\"video\":\"x.mp4\",\"question\":\"q\",\"answer\":\"1\"}\n",
    )
    .unwrap();
    let o = eval_run(
        &suite,
        &dir.path().join("o"),
        &["--conditions", "video,dark"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown condition `dark`"));
}

#[test]
fn published_layouts_run_with_a_video_dir() {
    let dir = tempfile::tempdir().unwrap();
    let videos = dir.path().join("videos");
    if !synth(&videos, 1) {
        return;
    }
    // The benchmarks' own video names, as the files of a --video-dir.
    std::fs::copy(
        videos.join("position-0.mp4"),
        videos.join("fFjv93ACGo8.mp4"),
    )
    .unwrap();
    std::fs::copy(videos.join("grounding-0.mp4"), videos.join("3MSZA.mp4")).unwrap();
    std::fs::copy(videos.join("order-0.mp4"), videos.join("4010069381.mp4")).unwrap();
    let ann = dir.path().join("ann");
    std::fs::create_dir(&ann).unwrap();
    let files = [
        (
            "videomme.jsonl",
            r#"{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History", "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Spatial Perception", "question": "Where is the red square?", "options": ["A. Left.", "B. Right.", "C. Top.", "D. Bottom."], "answer": "C"}"#,
        ),
        ("charades_sta_test.txt", "3MSZA 1.2 2.9##a white square is shown."),
        (
            "nextqa_val.csv",
            "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n4010069381,30,256,192,which colour appears first,1,3,TN,red,green,blue,yellow,cyan",
        ),
        (
            "object_existence.json",
            r#"[{"video": "fFjv93ACGo8.mp4", "question": "Is there a red square?", "candidates": ["yes", "no"], "answer": "yes"}]"#,
        ),
    ];
    for (name, text) in files {
        let suite = ann.join(name);
        std::fs::write(&suite, format!("{text}\n")).unwrap();
        let out = dir.path().join(format!("out-{name}"));
        let o = eval_run(&suite, &out, &["--conditions", "video,blind"])
            .arg("--video-dir")
            .arg(&videos)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r = report(&out);
        for c in r["conditions"].as_array().unwrap() {
            assert_eq!(c["overall"]["n"], 1, "{name}: {c}");
        }
        if name.starts_with("charades") {
            let g = &r["conditions"][0]["overall"]["grounding"];
            assert_eq!(g["n"], 1, "{name}: {g}");
            assert!(std::fs::read_to_string(out.join("report.md"))
                .unwrap()
                .contains("mIoU"));
        }
    }
}
