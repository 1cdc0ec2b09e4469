//! End-to-end tests of `vidlm summarize` and `vidlm batch` with the tiny random Qwen3-VL checkpoint
//! (crates/models/tests/fixtures/qwen3vl-tiny): the JSON's structure and times, and descriptions
//! equal to what the library gives for the same frames encoded as one video (as transformers
//! processes a video) -- so the pipeline's per-job batching of frame pairs, its pixel budget and
//! its pooling of the DeepStack layout change nothing.

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};
use vidlm_models::{GenerationParams, LoadOptions, VideoFrame};
use vidlm_pipeline::{MediaOpener, SampleRequest, SourceOpener};

use common::{root, vidlm};

fn model() -> String {
    common::fixture_model("qwen3vl-tiny")
}

fn sample() -> PathBuf {
    root().join("samples/bbb-720p-5s.mp4")
}

const TOKENS: usize = 8;
const PROMPT: &str = "Describe what happens in this video.";

/// The frames the pipeline samples for `strategy` over `[from, to)`.
fn frames(strategy: &str, from: f64, to: Option<f64>) -> Vec<VideoFrame> {
    let req = SampleRequest {
        strategy: strategy.into(),
        from,
        to,
        max_frames: None,
        size: None,
    };
    let mut src = MediaOpener.open(sample().to_str().unwrap(), &req).unwrap();
    let mut out = Vec::new();
    while let Some(f) = src.next_frame() {
        let f = f.unwrap();
        out.push(VideoFrame {
            rgb: f.rgb,
            width: f.width,
            height: f.height,
            pts: f.pts,
        });
    }
    out
}

/// What the library says about `frames` encoded as one video: (text, token ids, groups, prompt
/// tokens).
fn library(frames: &[VideoFrame]) -> (String, Vec<u32>, usize, usize) {
    library_with(frames, PROMPT)
}

/// [`library`] with another prompt.
fn library_with(frames: &[VideoFrame], prompt: &str) -> (String, Vec<u32>, usize, usize) {
    let mut m = vidlm_models::load_model(&model(), &LoadOptions::default()).unwrap();
    assert_eq!(m.frames_per_group(), 2);
    let groups = m.encode_frames(frames).unwrap();
    let params = GenerationParams {
        max_new_tokens: TOKENS,
        ..Default::default()
    };
    let clip = vidlm_models::Clip::new(groups.clone());
    let g = m.generate(&clip, prompt, &params, &mut |_| {}).unwrap();
    assert!(!g.token_ids.is_empty());
    (
        g.text.trim().to_string(),
        g.token_ids,
        groups.len(),
        g.prompt_tokens,
    )
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

/// Inside `[lo, hi]`, in order, without overlap; every entry says where its times came from.
fn assert_timeline(v: &Value, key: &str, lo: f64, hi: f64) {
    let r = ranges(v, key);
    assert!(!r.is_empty(), "{key}: empty");
    for (i, (s, e)) in r.iter().enumerate() {
        assert!(
            *s >= lo - 1e-9 && s <= e && *e <= hi + 1e-9,
            "{key}[{i}]: {s}..{e}"
        );
        if i > 0 {
            assert!(
                r[i - 1].1 <= *s + 1e-9,
                "{key}[{i}] overlaps the one before"
            );
        }
        let src = v[key][i]["time_source"].as_str().unwrap();
        assert!(src == "grid" || src == "model", "{src}");
    }
}

fn summarize(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("summary.json");
    let o = vidlm()
        .arg("summarize")
        .arg(sample())
        .args(["--model", &model(), "--format", "json", "--sample", "fps:2"])
        .args(["--max-new-tokens", &TOKENS.to_string(), "--out"])
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vidlm summarize failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[test]
fn summarize_sample_clip_matches_the_library() {
    let fr = frames("fps:2", 0.0, None);
    assert!(fr.len() >= 9, "{} frames", fr.len());
    let (text, ids, groups, prompt) = library(&fr);
    // Encoded 3 frames at a time (pairs never straddle two calls; an odd frame only at the end),
    // sized for the whole clip: the tokens of encoding it at once.
    let v = summarize(&["--pool", "none", "--encode-batch", "3"]);
    let d = v["duration"].as_f64().unwrap();
    assert!((d - 5.28).abs() < 0.05, "{d}");
    assert_eq!(v["model"].as_str().unwrap(), model());
    assert_eq!(v["sampling"]["frames"].as_u64().unwrap() as usize, groups);
    assert_eq!(ranges(&v, "chunks"), vec![(0.0, d)]);
    assert_eq!(v["chunks"][0]["time_source"], "grid");
    assert_eq!(
        v["chunks"][0]["text"].as_str().unwrap(),
        text,
        "the pipeline's description differs from the library's (ids {ids:?})"
    );
    assert_eq!(v["usage"]["calls"], 1);
    // Same visual tokens per pair, so the same prompt length.
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        prompt
    );
    assert_eq!(
        v["usage"]["generated_tokens"].as_u64().unwrap() as usize,
        ids.len()
    );
    assert_eq!(v["summary"].as_str().unwrap(), text);
    assert_timeline(&v, "segments", 0.0, d);
    assert_timeline(&v, "chunks", 0.0, d);
}

#[test]
fn pooling_the_deepstack_layout_and_chunking_by_pairs() {
    // Spatial and temporal pooling average the main and DeepStack columns alike. A budget of 5
    // frames (2 pairs) per prompt over 11 expected frames in 5.3 s gives a 2 s grid.
    let v = summarize(&["--pool", "spatial:2x2+mean:2", "--prompt-frames", "5"]);
    let d = v["duration"].as_f64().unwrap();
    let chunks = ranges(&v, "chunks");
    assert_eq!(chunks, vec![(0.0, 2.0), (2.0, 4.0), (4.0, d)]);
    assert_timeline(&v, "segments", 0.0, d);
    // Three descriptions and the summary over them.
    assert_eq!(v["usage"]["calls"], 4);
    assert!(v["summary"].is_string());
}

#[test]
fn batch_of_two_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("jobs.jsonl");
    let items = [
        json!({"id": "whole", "input": sample(), "task": "summarize"}),
        json!({"id": "range", "input": sample(), "task": "summarize", "from": 1.0, "to": 4.0}),
    ];
    let text: String = items.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&manifest, text).unwrap();
    let out = dir.path().join("results.jsonl");
    let o = vidlm()
        .arg("batch")
        .arg(&manifest)
        .arg("--out")
        .arg(&out)
        .args(["--model", &model(), "--sample", "fps:2", "--pool", "none"])
        .args(["--max-new-tokens", &TOKENS.to_string()])
        // Both videos in flight, their frames interleaved at the encoder.
        .args(["--decode-workers", "2", "--encode-batch", "4"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vidlm batch failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    for (id, from, to) in [("whole", 0.0, None), ("range", 1.0, Some(4.0))] {
        let r = recs.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(r["status"], "ok", "{r}");
        let hi = to.unwrap_or_else(|| r["duration"].as_f64().unwrap());
        assert_timeline(r, "segments", from, hi);
        assert_eq!(ranges(r, "chunks"), vec![(from, hi)], "{id}");
        let (text, _, groups, prompt) = library(&frames("fps:2", from, to));
        assert_eq!(
            r["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
            prompt,
            "{id}"
        );
        assert_eq!(r["chunks"][0]["text"].as_str().unwrap(), text, "{id}");
        assert_eq!(
            r["sampling"]["frames"].as_u64().unwrap() as usize,
            groups,
            "{id}"
        );
    }
}

#[test]
fn the_qwen3vl_preset_runs_with_a_local_model() {
    let preset = root().join("pipelines/summarize-qwen3vl.toml");
    let cfg = vidlm_pipeline::PipelineConfig::load(&preset).unwrap();
    assert_eq!(cfg.model.id, "Qwen/Qwen3-VL-2B-Instruct");
    assert_eq!(cfg.sampling.strategy, "fps:2");
    let v = summarize(&["--pipeline", preset.to_str().unwrap()]);
    let d = v["duration"].as_f64().unwrap();
    assert_eq!(v["model"].as_str().unwrap(), model());
    assert_eq!(v["sampling"]["pooling"], "none");
    // 11 frames fit the preset's 128-frame budget: one prompt of 6 pairs.
    assert_eq!(ranges(&v, "chunks"), vec![(0.0, d)]);
    assert_eq!(v["sampling"]["frames"], 6);
    assert_timeline(&v, "segments", 0.0, d);
}

#[test]
fn chunks_match_the_library_chunk_by_chunk() {
    // 5 frames per prompt: a 2 s grid, whole chunks of 4 frames (2 pairs) each encoded for a
    // 4-frame clip, as transformers processes each chunk's frames as one video.
    let v = summarize(&["--pool", "none", "--prompt-frames", "5"]);
    let d = v["duration"].as_f64().unwrap();
    assert_eq!(ranges(&v, "chunks"), vec![(0.0, 2.0), (2.0, 4.0), (4.0, d)]);
    // The last chunk is shorter than the grid (3 frames, encoded for a whole chunk's 4): only
    // the whole chunks are compared.
    for (i, (start, end)) in [(0.0, 2.0), (2.0, 4.0)].into_iter().enumerate() {
        let fr = frames("fps:2", start, Some(end));
        assert_eq!(fr.len(), 4);
        let prompt = format!(
            "This is the part of a longer video from {} to {}. Describe what happens in it.",
            vidlm_pipeline::format_clock(start),
            vidlm_pipeline::format_clock(end)
        );
        let (text, _, _, _) = library_with(&fr, &prompt);
        assert_eq!(v["chunks"][i]["text"].as_str().unwrap(), text, "chunk {i}");
    }
}

#[test]
fn library_ask_over_a_range_gives_the_models_token_ids() {
    let mut cfg = vidlm_pipeline::PipelineConfig::default();
    cfg.model.id = model();
    cfg.sampling.strategy = "fps:2".into();
    cfg.generation.max_new_tokens = TOKENS;
    let p = vidlm_pipeline::Pipeline::builder()
        .config(cfg)
        .build()
        .unwrap();
    let question = "What happens?";
    let r = p
        .ask(sample().to_str().unwrap(), question, Some(1.0), Some(4.0))
        .unwrap();
    let (text, ids, groups, _) = library_with(&frames("fps:2", 1.0, Some(4.0)), question);
    assert_eq!(r.token_ids, ids);
    assert_eq!(r.answer.trim(), text);
    // One time per pair: the first frame of each.
    assert_eq!(r.frames.len(), groups);
    assert_eq!(r.frames, vec![1.0, 2.0, 3.0]);
    assert_eq!(r.evidence.len(), 1);
    assert_eq!((r.evidence[0].start, r.evidence[0].end), (1.0, 4.0));
    for t in &r.answer_times {
        assert!(1.0 <= t.start && t.start <= t.end && t.end <= 4.0, "{t:?}");
    }
}
