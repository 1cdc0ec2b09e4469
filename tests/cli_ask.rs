//! `vidlm ask` end to end on the tiny SmolVLM2 and Qwen3-VL fixtures: the JSON contract, agreement
//! with the library on the same frames, `--from/--to`, long videos answered from chunk
//! descriptions (evidence on the chunk grid), image mode, and one-line errors for bad models.

use std::path::{Path, PathBuf};
use std::process::Command;

use vidlm_models::smolvlm::SmolVlmEngine;
use vidlm_models::{GenerationParams, LoadOptions, VideoFrame, VisionLanguageModel};

const QUESTION: &str = "What is happening in this video?";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    root().join("crates/models/tests/fixtures/smolvlm-tiny-sf2")
}

fn vidlm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .env("VIDLM_NO_CACHE", "1")
        .output()
        .expect("run vidlm")
}

fn frames_of(video: &Path, n: u32) -> (Vec<VideoFrame>, Option<f64>) {
    vidlm_media::init();
    let input = vidlm_media::Input::parse(video.to_str().unwrap());
    let info = vidlm_media::probe(&input).unwrap();
    let mut so = vidlm_media::SampleOptions::new(vidlm_media::SamplingStrategy::Frames(n));
    so.max_frames = Some(64);
    let frames = vidlm_media::sample_all(&input, so)
        .unwrap()
        .into_iter()
        .map(|f| VideoFrame {
            rgb: f.rgb,
            width: f.width,
            height: f.height,
            pts: f.pts,
        })
        .collect();
    (frames, info.duration)
}

#[test]
fn ask_json_matches_the_library() {
    let model = tiny();
    let out = vidlm(&[
        "ask",
        "--model",
        model.to_str().unwrap(),
        "samples/bbb-720p-5s.mp4",
        QUESTION,
        "--sample",
        "frames:4",
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let answer = v["answer"].as_str().expect("answer");
    let ids: Vec<u32> = v["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let times: Vec<f64> = v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 4);
    assert!(
        times.windows(2).all(|w| w[0] < w[1]) && times[3] < 5.4,
        "{times:?}"
    );
    let usage = &v["usage"];
    assert_eq!(
        usage["generated_tokens"].as_u64().unwrap() as usize,
        ids.len()
    );
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 4 * 16);
    for stage in [
        "load",
        "sample",
        "preprocess",
        "vision",
        "pool",
        "llm",
        "total",
    ] {
        assert!(usage["seconds"][stage].as_f64().unwrap() >= 0.0, "{stage}");
    }

    // The library, on the same frames, gives the same tokens and text.
    let (frames, duration) = frames_of(&root().join("samples/bbb-720p-5s.mp4"), 4);
    let got: Vec<f64> = frames.iter().map(|f| f.pts).collect();
    assert_eq!(got, times);
    let mut engine = SmolVlmEngine::load(model.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let params = GenerationParams {
        max_new_tokens: 12,
        ..Default::default()
    };
    let lib = engine
        .ask_video(&frames, duration, QUESTION, &params, &mut |_| {})
        .unwrap();
    assert_eq!(lib.generation.token_ids, ids);
    assert_eq!(lib.generation.text, answer);
    assert_eq!(
        lib.generation.prompt_tokens as u64,
        usage["prompt_tokens"].as_u64().unwrap()
    );

    // Through the pipeline's trait: encode frames, then generate over the groups.
    let clip = vidlm_models::Clip::new(engine.encode_frames(&frames).unwrap());
    assert_eq!(clip.groups.len(), 4);
    assert_eq!(
        clip.groups[0].grid_h * clip.groups[0].grid_w,
        clip.groups[0].embeddings.dim(0).unwrap()
    );
    let g = engine
        .generate(&clip, QUESTION, &params, &mut |_| {})
        .unwrap();
    assert_eq!(g.token_ids.len(), g.token_ids.len().min(12));
}

#[test]
fn ask_streams_text_and_image_mode_runs() {
    let model = tiny();
    let png = root().join("crates/models/tests/fixtures/frames/bbb-n060-1280x720.png");
    let out = vidlm(&[
        "ask",
        "--model",
        model.to_str().unwrap(),
        "--image",
        png.to_str().unwrap(),
        "Describe the image.",
        "--max-new-tokens",
        "6",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames"].as_array().unwrap().len(), 1);
    let n = v["token_ids"].as_array().unwrap().len();
    assert!(n <= 6);
}

fn assert_one_line_error(out: &std::process::Output, needles: &[&str]) {
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` missing from: {err}");
    }
}

#[test]
fn bad_models_fail_in_one_line() {
    let video = "samples/bbb-720p-5s.mp4";
    // No such directory.
    let out = vidlm(&["ask", "--model", "no/such/dir", video, "q"]);
    assert_one_line_error(&out, &["no/such/dir"]);

    // Another model_type.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("llama");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let out = vidlm(&["ask", "--model", dir.to_str().unwrap(), video, "q"]);
    assert_one_line_error(&out, &["config.json", "llama", "smolvlm"]);

    // The fixture with a wider text model than its weights: names the file and the tensor.
    let dir = tmp.path().join("wrong-shape");
    std::fs::create_dir(&dir).unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["vision_config"]["intermediate_size"] = serde_json::json!(48);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let out = vidlm(&["ask", "--model", dir.to_str().unwrap(), video, "q"]);
    assert_one_line_error(
        &out,
        &[
            "model.safetensors",
            "model.vision_model.encoder.layers.0.mlp.fc1.weight",
        ],
    );

    // Missing weights file.
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let out = vidlm(&["ask", "--model", dir.to_str().unwrap(), video, "q"]);
    assert_one_line_error(&out, &["model.safetensors", "missing"]);
}

#[test]
fn hub_id_absent_and_offline_says_how_to_download() {
    let home = tempfile::tempdir().unwrap();
    let id = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct";
    let out = Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .args(["ask", "--model", id, "samples/bbb-720p-5s.mp4", "q"])
        .current_dir(root())
        .env("VIDLM_NO_CACHE", "1")
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &[
            id,
            "HF_HUB_OFFLINE",
            &format!("huggingface-cli download {id}"),
        ],
    );

    // A hub id whose files are in the cache resolves offline, as `huggingface-cli download` lays
    // them out (snapshots/<rev>/ plus refs/main).
    let repo = home.path().join("hub/models--local--tiny");
    let snap = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vidlm"))
        .args([
            "ask",
            "--model",
            "local/tiny",
            "samples/bbb-720p-5s.mp4",
            "q",
            "--max-new-tokens",
            "2",
            "--json",
        ])
        .current_dir(root())
        .env("VIDLM_NO_CACHE", "1")
        .env("HF_HOME", home.path())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `vidlm ask ... --json` and parses its one object.
fn ask_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ask"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = vidlm(&all);
    assert!(
        out.status.success(),
        "vidlm {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// (start, end) of each entry of `v`.
fn spans(v: &serde_json::Value) -> Vec<(f64, f64)> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap()))
        .collect()
}

fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    v["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn from_to_keeps_frames_and_evidence_in_range() {
    let model = tiny();
    let m = model.to_str().unwrap();
    let args = [
        "--model",
        m,
        "samples/bbb-720p-5s.mp4",
        QUESTION,
        "--sample",
        "fps:4",
        "--from",
        "1",
        "--to",
        "3",
        "--max-new-tokens",
        "6",
    ];
    let v = ask_json(&args);
    let times = floats(&v["frames"]);
    // fps:4 over 2 s: about 8 frames, all inside [1, 3).
    assert!(times.len() >= 6, "{times:?}");
    assert!(times.iter().all(|t| (1.0..3.0).contains(t)), "{times:?}");
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let ev = spans(&v["evidence"]);
    assert!(!ev.is_empty(), "no evidence: {v}");
    for (s, e) in &ev {
        assert!(1.0 - 1e-9 <= *s && s < e && *e <= 3.0 + 1e-9, "{ev:?}");
    }
    for (s, e) in spans(&v["answer_times"]) {
        assert!(1.0 - 1e-9 <= s && s <= e && e <= 3.0 + 1e-9, "{s}..{e}");
    }
    assert_eq!(v["model"].as_str().unwrap(), m);
    assert_eq!(
        v["usage"]["generated_tokens"].as_u64().unwrap() as usize,
        token_ids(&v).len()
    );

    // Without --json the same answer is printed as text.
    let mut all = vec!["ask"];
    all.extend_from_slice(&args);
    let out = vidlm(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", v["answer"].as_str().unwrap())
    );

    // An empty range is refused in one line.
    let out = vidlm(&[
        "ask",
        "--model",
        m,
        "samples/bbb-720p-5s.mp4",
        "q",
        "--from",
        "3",
        "--to",
        "1",
    ]);
    assert_one_line_error(&out, &["--to", "--from"]);
}

#[test]
fn long_video_is_answered_from_chunk_descriptions() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("skipped: no ffmpeg CLI on PATH to make the 40 s synthetic clip");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("long.mp4");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=10:duration=40",
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg failed");
    let model = tiny();
    // The ask preset (chunking auto, every chunk kept), its sampling and model overridden: 40
    // frames at a budget of 4 per prompt cannot be asked at once, so the video is described on a
    // grid first and the answer cites chunks.
    let v = ask_json(&[
        "--pipeline",
        "pipelines/ask.toml",
        "--model",
        model.to_str().unwrap(),
        clip.to_str().unwrap(),
        "What changes on the screen?",
        "--sample",
        "fps:1",
        "--prompt-frames",
        "4",
        "--max-new-tokens",
        "4",
    ]);
    let chunks = spans(&v["chunks"]);
    assert!(chunks.len() >= 5, "{chunks:?}");
    // A grid: from 0, back to back, to the duration (40 s).
    assert_eq!(chunks[0].0, 0.0);
    assert!(
        chunks.windows(2).all(|w| (w[0].1 - w[1].0).abs() < 1e-9),
        "{chunks:?}"
    );
    let end = chunks.last().unwrap().1;
    assert!((end - 40.0).abs() < 0.2, "{chunks:?}");
    let ev = spans(&v["evidence"]);
    assert!(
        !ev.is_empty() && ev.len() < chunks.len(),
        "{ev:?} of {chunks:?}"
    );
    for r in &ev {
        assert!(
            chunks.contains(r),
            "evidence {r:?} is not a chunk of {chunks:?}"
        );
        assert!(0.0 <= r.0 && r.1 <= end + 1e-9, "{r:?}");
    }
    // The prompt's frames come from the evidence, within the budget.
    let times = floats(&v["frames"]);
    assert!(!times.is_empty() && times.len() <= 4, "{times:?}");
    for t in &times {
        assert!(
            ev.iter().any(|(s, e)| s <= t && t < e),
            "{t} outside {ev:?}"
        );
    }
    // One description per chunk, then the answer.
    assert_eq!(
        v["usage"]["calls"].as_u64().unwrap() as usize,
        chunks.len() + 1
    );
}

/// The frames the pipeline samples from the 5 s clip with `strategy`.
fn pipeline_frames(strategy: &str) -> Vec<VideoFrame> {
    use vidlm_pipeline::SourceOpener;
    let req = vidlm_pipeline::SampleRequest {
        strategy: strategy.into(),
        from: 0.0,
        to: None,
        max_frames: None,
        size: None,
    };
    let mut src = vidlm_pipeline::MediaOpener
        .open(
            root().join("samples/bbb-720p-5s.mp4").to_str().unwrap(),
            &req,
        )
        .unwrap();
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

#[test]
fn qwen3vl_model_matches_the_library() {
    let model = root().join("crates/models/tests/fixtures/qwen3vl-tiny");
    let m = model.to_str().unwrap();
    let v = ask_json(&[
        "--model",
        m,
        "samples/bbb-720p-5s.mp4",
        QUESTION,
        "--sample",
        "fps:2",
        "--max-new-tokens",
        "8",
    ]);
    let ids = token_ids(&v);
    assert!(!ids.is_empty());

    // The library, on the same frames encoded as one video (frame pairs).
    let frames = pipeline_frames("fps:2");
    assert!(frames.len() >= 9, "{} frames", frames.len());
    let mut lib = vidlm_models::load_model(m, &LoadOptions::default()).unwrap();
    assert_eq!(lib.frames_per_group(), 2);
    let groups = lib.encode_frames(&frames).unwrap();
    let params = GenerationParams {
        max_new_tokens: 8,
        ..Default::default()
    };
    let g = lib
        .generate(
            &vidlm_models::Clip::new(groups.clone()),
            QUESTION,
            &params,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(g.token_ids, ids);
    assert_eq!(g.text, v["answer"].as_str().unwrap());
    assert_eq!(
        g.prompt_tokens as u64,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    // One timestamp per frame pair: the pair's first frame.
    let pairs: Vec<f64> = frames.iter().step_by(2).map(|f| f.pts).collect();
    assert_eq!(floats(&v["frames"]), pairs);
    assert_eq!(spans(&v["evidence"]).len(), 1);

    // Image mode through Qwen3-VL's image prompt: one image, or a clear error for several.
    let png = root().join("crates/models/tests/fixtures/frames/bbb-n060-1280x720.png");
    let p = png.to_str().unwrap();
    let v = ask_json(&[
        "--model",
        m,
        "--image",
        p,
        "Describe the image.",
        "--max-new-tokens",
        "4",
    ]);
    assert_eq!(floats(&v["frames"]), vec![0.0]);
    assert!(token_ids(&v).len() <= 4);
    let out = vidlm(&["ask", "--model", m, "--image", p, "--image", p, "Describe."]);
    assert_one_line_error(&out, &["--image", "Qwen3-VL", "one image"]);
}

/// Idefics3 (SmolVLM v1), the family added by a registry line alone: `vidlm ask` on a clip runs it
/// with no change to the pipeline or the CLI, and answers as the library does on the same frames
/// (its prompt takes the frames as images); `--image` runs its image processor.
#[test]
fn idefics3_model_matches_the_library() {
    let model = root().join("crates/models/tests/fixtures/idefics3-tiny");
    let m = model.to_str().unwrap();
    let v = ask_json(&[
        "--model",
        m,
        "samples/bbb-720p-5s.mp4",
        QUESTION,
        "--sample",
        "frames:3",
        "--max-new-tokens",
        "6",
    ]);
    let ids = token_ids(&v);
    assert!(!ids.is_empty());
    let frames = pipeline_frames("frames:3");
    assert_eq!(floats(&v["frames"]).len(), 3);
    let mut lib = vidlm_models::load_model(m, &LoadOptions::default()).unwrap();
    assert_eq!(lib.family(), "Idefics3");
    let clip = vidlm_models::Clip::new(lib.encode_frames(&frames).unwrap());
    let params = GenerationParams {
        max_new_tokens: 6,
        ..Default::default()
    };
    let g = lib.generate(&clip, QUESTION, &params, &mut |_| {}).unwrap();
    assert_eq!(g.token_ids, ids);
    assert_eq!(g.text, v["answer"].as_str().unwrap());
    assert_eq!(
        g.prompt_tokens as u64,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    // Three frames, each one global view of image_seq_len (16) tokens.
    assert!(g.prompt_tokens > 3 * 16);

    let png = root().join("crates/models/tests/fixtures/frames/bbb-n060-1280x720.png");
    let v = ask_json(&[
        "--model",
        m,
        "--image",
        png.to_str().unwrap(),
        "Describe the image.",
        "--max-new-tokens",
        "4",
    ]);
    assert!(!token_ids(&v).is_empty());
}

/// A hub id of GGUF files, as llama.cpp's `-hf` takes one (`owner/name:QUANT`), resolved in the
/// Hugging Face cache (the layout `hf download` writes: refs/main, snapshots/REV, links to blobs):
/// the quantization picks the text model, its `mmproj-` twin comes along, and `vidlm ask` answers
/// as it does from the same files by path. An absent quantization is a one-line error listing
/// the ones there.
#[test]
fn hub_gguf_id_with_quant_tag_runs_from_the_cache() {
    let fixtures = root().join("crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf");
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--test-org--smolvlm2-tiny-GGUF");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for (i, name) in [
        "smolvlm2-256m-tiny-F16.gguf",
        "smolvlm2-256m-tiny-Q8_0.gguf",
        "mmproj-smolvlm2-256m-tiny-F16.gguf",
        "mmproj-smolvlm2-256m-tiny-Q8_0.gguf",
    ]
    .iter()
    .enumerate()
    {
        let blob = repo.join(format!("blobs/{i:040}"));
        std::fs::copy(fixtures.join(name), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{i:040}"), snap.join(name)).unwrap();
    }
    let png = root().join("crates/models/tests/fixtures/frames/bbb-n060-1280x720.png");
    let ask = |model: &str| {
        Command::new(env!("CARGO_BIN_EXE_vidlm"))
            .args([
                "ask",
                "--model",
                model,
                "--image",
                png.to_str().unwrap(),
                "Describe the image.",
                "--max-new-tokens",
                "4",
                "--json",
            ])
            .current_dir(root())
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let by_id = ask("test-org/smolvlm2-tiny-GGUF:Q8_0");
    assert!(
        by_id.status.success(),
        "{}",
        String::from_utf8_lossy(&by_id.stderr)
    );
    let by_path = ask(fixtures
        .join("smolvlm2-256m-tiny-Q8_0.gguf")
        .to_str()
        .unwrap());
    assert!(by_path.status.success());
    let ids = |o: &std::process::Output| {
        token_ids(&serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap())
    };
    assert!(!ids(&by_id).is_empty());
    assert_eq!(ids(&by_id), ids(&by_path));

    let out = ask("test-org/smolvlm2-tiny-GGUF:Q4_K_M");
    assert_one_line_error(&out, &["Q4_K_M", "smolvlm2-256m-tiny-Q8_0.gguf"]);
    // No tag, two quantizations and no Q4_K_M: Q8_0, as the docs say.
    let untagged = ask("test-org/smolvlm2-tiny-GGUF");
    assert!(untagged.status.success());
    assert_eq!(ids(&untagged), ids(&by_path));
}

/// A llama.cpp Q4_K_M text GGUF (llama-quantize's mix of Q4_K, Q6_K and the Q5_0/Q8_0
/// fallbacks, tools/make_gguf_k_fixtures.py) with its mmproj given by `--mmproj`, as llama.cpp
/// users run SmolVLM2: `vidlm ask` answers as the library does on the same frames; a tensor type
/// vidlm cannot decode is a one-line error naming the tensor and the type.
#[test]
fn q4_k_m_gguf_with_mmproj_matches_the_library() {
    let dir = root().join("crates/models/tests/fixtures/smolvlm2-256m-tiny-k-gguf");
    let text = dir.join("smolvlm2-256m-tiny-k-Q4_K_M.gguf");
    let mmproj = dir.join("mmproj-smolvlm2-256m-tiny-k-F16.gguf");
    let (t, m) = (text.to_str().unwrap(), mmproj.to_str().unwrap());
    let args = |model: &str| {
        vec![
            "--model".to_string(),
            model.to_string(),
            "--mmproj".into(),
            m.into(),
            "samples/bbb-720p-5s.mp4".into(),
            QUESTION.into(),
            "--sample".into(),
            "frames:3".into(),
            "--max-new-tokens".into(),
            "6".into(),
        ]
    };
    let a = args(t);
    let v = ask_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let ids = token_ids(&v);
    assert!(!ids.is_empty());

    let (frames, duration) = frames_of(&root().join("samples/bbb-720p-5s.mp4"), 3);
    let files = vidlm_models::gguf::GgufFiles::find(&text, Some(&mmproj))
        .unwrap()
        .unwrap();
    let mut engine = SmolVlmEngine::from_gguf(t, &files, &LoadOptions::default()).unwrap();
    let params = GenerationParams {
        max_new_tokens: 6,
        ..Default::default()
    };
    let lib = engine
        .ask_video(&frames, duration, QUESTION, &params, &mut |_| {})
        .unwrap();
    assert_eq!(lib.generation.token_ids, ids);
    assert_eq!(lib.generation.text, v["answer"].as_str().unwrap());

    // `--dequantize`: the text weights expanded to f32 at load, as the library does when asked.
    let mut a = args(t);
    a.push("--dequantize".into());
    let vd = ask_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let opts = LoadOptions {
        gguf_dequantize: true,
        ..LoadOptions::default()
    };
    let mut engine = SmolVlmEngine::from_gguf(t, &files, &opts).unwrap();
    let lib = engine
        .ask_video(&frames, duration, QUESTION, &params, &mut |_| {})
        .unwrap();
    assert_eq!(lib.generation.token_ids, token_ids(&vd));

    // The same file with one tensor's type id set to IQ4_NL (20), which candle cannot decode.
    let mut bytes = std::fs::read(&text).unwrap();
    let name = "blk.0.ffn_down.weight";
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .unwrap()
        + key.len();
    let dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * dims;
    bytes[ty..ty + 4].copy_from_slice(&20u32.to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("model-IQ4_NL.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let a = args(bad.to_str().unwrap());
    let mut all = vec!["ask"];
    all.extend(a.iter().map(String::as_str));
    let out = vidlm(&all);
    assert_one_line_error(&out, &["model-IQ4_NL.gguf", name, "IQ4_NL (20)"]);
}
