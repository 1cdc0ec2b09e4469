//! Qwen3-VL through the shared model interface (`load_model`, `encode_frames`, `generate`) and its
//! image mode, against the transformers references of tests/fixtures/qwen3vl-tiny; and its load
//! errors.

use std::path::{Path, PathBuf};

use candle_core::Device;
use vidlm_models::qwen3_vl::Qwen3VlEngine;
use vidlm_models::{load_model, GenerationParams, LoadOptions, ModelError, VideoFrame};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn meta() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("qwen3vl-tiny.reference.json")).unwrap(),
    )
    .unwrap()
}

fn case(name: &str) -> serde_json::Value {
    meta()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
        .clone()
}

/// The case's frames, decoded from the reference file's RGB bytes (the PNGs' pixels).
fn frames(c: &serde_json::Value) -> Vec<VideoFrame> {
    let t = candle_core::safetensors::load(
        fixtures().join("qwen3vl-tiny.reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    c["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let stem = Path::new(f["file"].as_str().unwrap())
                .file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let x = &t[&format!("frame.{stem}")];
            let (h, w, _) = x.dims3().unwrap();
            VideoFrame {
                rgb: x.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
                width: w as u32,
                height: h as u32,
                pts: f["timestamp"].as_f64().unwrap(),
            }
        })
        .collect()
}

fn greedy() -> GenerationParams {
    GenerationParams {
        max_new_tokens: 16,
        ..Default::default()
    }
}

fn want_ids(c: &serde_json::Value) -> Vec<u32> {
    c["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn load_model_picks_qwen3_vl_and_generates_like_transformers() {
    let dir = fixtures().join("qwen3vl-tiny");
    let mut model = load_model(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    for name in ["video_4frames", "video_8frames"] {
        let c = case(name);
        let fr = frames(&c);
        let groups = model.encode_frames(&fr).unwrap();
        assert_eq!(
            groups.len(),
            fr.len() / 2,
            "{name}: one group per frame pair"
        );
        assert_eq!((groups[0].start, groups[0].end), (fr[0].pts, fr[1].pts));
        assert_eq!(
            (groups[0].grid_h, groups[0].grid_w),
            (3, 4),
            "{name}: 48x64 px / 16"
        );
        let mut streamed = String::new();
        let g = model
            .generate(
                &vidlm_models::Clip::new(groups.clone()),
                c["question"].as_str().unwrap(),
                &greedy(),
                &mut |s| streamed.push_str(s),
            )
            .unwrap();
        assert_eq!(
            g.prompt_tokens as u64,
            c["seq_len"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(g.token_ids, want_ids(&c), "{name}: greedy tokens");
        assert_eq!(g.text, c["greedy_text"].as_str().unwrap(), "{name}");
        assert_eq!(streamed, g.text, "{name}: streamed text");
    }
}

#[test]
fn image_mode_generates_like_transformers() {
    let dir = fixtures().join("qwen3vl-tiny");
    let mut engine = Qwen3VlEngine::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let c = case("image");
    let fr = frames(&c);
    let g = engine
        .ask_image(
            &fr[0],
            c["question"].as_str().unwrap(),
            &greedy(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(g.prompt_tokens as u64, c["seq_len"].as_u64().unwrap());
    assert_eq!(g.token_ids, want_ids(&c));
}

fn copy_fixture(to: &Path) {
    for e in std::fs::read_dir(fixtures().join("qwen3vl-tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn load_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture(tmp.path());
    let cfg_path = tmp.path().join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    // A wrong size: the error names the tensor.
    std::fs::write(
        &cfg_path,
        cfg.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96"),
    )
    .unwrap();
    let err =
        Qwen3VlEngine::load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("mlp"), "{err}");
    // Missing weights: the error names the file.
    std::fs::write(&cfg_path, &cfg).unwrap();
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err =
        Qwen3VlEngine::load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
