//! The SmolVLM2 processor against transformers 5.24 (fixtures made by
//! tools/make_smolvlm_fixtures.py; format in tests/fixtures/README.md): prompt text, token ids and
//! pixel values for video (1 and 4 frames), image-splitting and text-only prompts, on both tiny
//! checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use vidlm_models::smolvlm::processor::{num2words, ProcessedInput, SmolVlmProcessor};
use vidlm_models::{ModelError, VideoFrame};

const CHECKPOINTS: [&str; 2] = ["smolvlm-tiny-sf2", "smolvlm-tiny-sf4"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn load_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn load_png(rel: &str, timestamp: f64) -> VideoFrame {
    let path = fixtures().join(rel);
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    VideoFrame {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
        pts: timestamp,
    }
}

struct Reference {
    index: Value,
    tensors: HashMap<String, Tensor>,
}

fn reference(name: &str) -> Reference {
    let index = load_json(&fixtures().join(format!("{name}.reference.json")));
    let tensors = candle_core::safetensors::load(
        fixtures().join(format!("{name}.reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    Reference { index, tensors }
}

fn case<'a>(r: &'a Reference, name: &str) -> &'a Value {
    r.index["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn frames_of(case: &Value) -> Vec<VideoFrame> {
    case["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            load_png(
                f["file"].as_str().unwrap(),
                f["timestamp"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn run_case(p: &SmolVlmProcessor, case: &Value) -> ProcessedInput {
    let question = case["question"].as_str().unwrap();
    let frames = frames_of(case);
    match case["kind"].as_str().unwrap() {
        "video" => p
            .video_prompt_with_duration(&frames, question, case["video_duration"].as_f64())
            .unwrap(),
        "image" => p.image_prompt(&frames, question).unwrap(),
        "text" => p.text_prompt(question).unwrap(),
        k => panic!("unknown kind {k}"),
    }
}

fn ids_of(case: &Value) -> Vec<u32> {
    case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Prompt text, expanded text and token ids equal transformers' for every case of both checkpoints.
#[test]
fn prompts_and_ids_match_transformers() {
    for name in CHECKPOINTS {
        let p = SmolVlmProcessor::from_dir(fixtures().join(name)).unwrap();
        let r = reference(name);
        assert_eq!(
            p.image_token_id() as u64,
            r.index["image_token_id"].as_u64().unwrap()
        );
        let stops: Vec<u32> = r.index["stop_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        for s in &stops {
            assert!(
                p.stop_token_ids().contains(s),
                "{name}: stop id {s} missing from {:?}",
                p.stop_token_ids()
            );
        }
        let cases = r.index["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4, "{name}: expected four cases");
        for c in cases {
            let label = format!("{name}/{}", c["name"].as_str().unwrap());
            let got = run_case(&p, c);
            assert_eq!(
                got.prompt,
                c["prompt"].as_str().unwrap(),
                "{label}: chat template rendering"
            );
            let want_ids = ids_of(c);
            if got.input_ids != want_ids {
                let first = got
                    .input_ids
                    .iter()
                    .zip(&want_ids)
                    .position(|(a, b)| a != b);
                panic!(
                    "{label}: input_ids differ (ours {} ids, transformers {}; first difference at {first:?})\nours: {}\ntheirs: {}",
                    got.input_ids.len(),
                    want_ids.len(),
                    got.text,
                    c["expanded_prompt"].as_str().unwrap()
                );
            }
            // The decoded ids (special tokens kept) are transformers' expanded prompt.
            assert_eq!(
                p.decode(&got.input_ids, false).unwrap(),
                c["expanded_prompt"].as_str().unwrap(),
                "{label}"
            );
            let ref_ids: Vec<i64> = r.tensors
                [&format!("{}.input_ids", c["name"].as_str().unwrap())]
                .to_vec1()
                .unwrap();
            assert_eq!(
                ref_ids,
                want_ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                "{label}: json vs tensors"
            );
            let n_image = got.image_token_mask.iter().filter(|m| **m).count();
            assert_eq!(
                n_image as u64,
                c["image_token_count"].as_u64().unwrap(),
                "{label}: image tokens"
            );
            assert_eq!(n_image, got.num_images() * p.image_seq_len(), "{label}");
        }
    }
}

/// Pixel values: frames already at the model size within 1e-5 (max abs); resized ones within
/// 2/255 mean abs and one uint8 level max.
#[test]
fn pixel_values_match_transformers() {
    for name in CHECKPOINTS {
        let p = SmolVlmProcessor::from_dir(fixtures().join(name)).unwrap();
        let r = reference(name);
        for c in r.index["cases"].as_array().unwrap() {
            let cname = c["name"].as_str().unwrap();
            let label = format!("{name}/{cname}");
            let got = run_case(&p, c);
            let Some(want) = r.tensors.get(&format!("{cname}.pixel_values")) else {
                assert_eq!(
                    got.num_images(),
                    0,
                    "{label}: transformers gave no pixel values"
                );
                assert!(got.pixel_values_tensor(&Device::Cpu).is_err());
                continue;
            };
            let ours = got.pixel_values_tensor(&Device::Cpu).unwrap();
            assert_eq!(ours.dims(), want.dims(), "{label}: pixel_values shape");
            assert_eq!(ours.dtype(), DType::F32);
            let diff = (ours - want).unwrap().abs().unwrap().flatten_all().unwrap();
            let max: f32 = diff.max(0).unwrap().to_scalar().unwrap();
            let mean: f32 = diff.mean(0).unwrap().to_scalar().unwrap();
            let resized = c["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["width"].as_u64() != Some(64));
            eprintln!(
                "{label}: pixel_values max abs {max:.3e}, mean abs {mean:.3e} (resized: {resized})"
            );
            if resized {
                // One uint8 level is 2/255 after normalization to [-1, 1]: the bound on the
                // mean, and our bound on the max (Pillow's resampler vs torch's differ by a level).
                assert!(mean <= 2.0 / 255.0, "{label}: mean abs {mean}");
                assert!(
                    max <= 2.0 / 255.0 + 1e-6,
                    "{label}: max abs {max} (more than one level)"
                );
            } else {
                assert!(max <= 1e-5, "{label}: max abs {max}");
            }
            if let Some(mask) = r.tensors.get(&format!("{cname}.pixel_attention_mask")) {
                let ones: i64 = mask.sum_all().unwrap().to_scalar().unwrap();
                assert_eq!(
                    ones as usize,
                    mask.elem_count(),
                    "{label}: transformers padded, we never do"
                );
            }
        }
    }
}

/// The image case's crop grid is what transformers wrote into the prompt (2 rows x 3 columns for a
/// 16:9 frame at longest edge 192 with 64-pixel crops).
#[test]
fn image_split_grid() {
    let p = SmolVlmProcessor::from_dir(fixtures().join("smolvlm-tiny-sf2")).unwrap();
    let r = reference("smolvlm-tiny-sf2");
    let c = case(&r, "image_split_1280x720");
    let got = run_case(&p, c);
    assert_eq!(got.image_grids, vec![(2, 3)]);
    assert_eq!(got.num_images(), 7);
    let text = c["expanded_prompt"].as_str().unwrap();
    assert!(
        text.contains("<row_2_col_3>")
            && !text.contains("<row_3_col_1>")
            && !text.contains("<row_1_col_4>")
    );
}

/// Video timestamps and durations: captions and the H:MM:SS duration as transformers writes them.
#[test]
fn video_captions_and_duration() {
    let p = SmolVlmProcessor::from_dir(fixtures().join("smolvlm-tiny-sf4")).unwrap();
    let frame = |t: f64| VideoFrame {
        rgb: vec![7u8; 64 * 64 * 3],
        width: 64,
        height: 64,
        pts: t,
    };
    let frames: Vec<VideoFrame> = [0.0, 59.99, 61.5, 3725.2].into_iter().map(frame).collect();
    let got = p
        .video_prompt_with_duration(&frames, "q", Some(3726.9))
        .unwrap();
    assert!(
        got.text
            .contains("series of four frames from a 1:02:06 [H:MM:SS] video.\n"),
        "{}",
        got.text
    );
    for cap in [
        "\nFrame from 00:00:",
        "\nFrame from 00:59:",
        "\nFrame from 01:01:",
        "\nFrame from 62:05:",
    ] {
        assert!(got.text.contains(cap), "{cap:?} missing in {}", got.text);
    }
    // No duration: int(last timestamp), as transformers without video metadata duration.
    let got = p.video_prompt(&frames[..1], "q").unwrap();
    assert!(
        got.text
            .contains("series of one frames from a 0:00:00 [H:MM:SS]"),
        "{}",
        got.text
    );
}

/// The two halves used when visual tokens are computed separately (encode, pool, then generate)
/// give the same ids and pixels as the one-call video prompt.
#[test]
fn video_text_and_pixels_separately() {
    let p = SmolVlmProcessor::from_dir(fixtures().join("smolvlm-tiny-sf2")).unwrap();
    let r = reference("smolvlm-tiny-sf2");
    let c = case(&r, "video_4frames_64x64");
    let frames = frames_of(c);
    let ts: Vec<f64> = frames.iter().map(|f| f.pts).collect();
    let dur = c["video_duration"].as_f64();
    let text = p
        .video_prompt_for_timestamps(&ts, c["question"].as_str().unwrap(), dur)
        .unwrap();
    assert_eq!(text.input_ids, ids_of(c));
    assert_eq!(text.num_images(), 0);
    assert_eq!(text.image_positions().len(), 4 * p.image_seq_len());
    let (pixels, shape) = p.video_pixels(&frames).unwrap();
    assert_eq!(shape, [4, 3, 64, 64]);
    let want: Vec<f32> = r.tensors["video_4frames_64x64.pixel_values"]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(pixels, want);
}

#[test]
fn num2words_matches_python() {
    let extra = load_json(&fixtures().join("smolvlm-processor-extra.json"));
    let table = extra["num2words_en"].as_object().unwrap();
    assert!(table.len() > 300);
    for (n, words) in table {
        assert_eq!(
            num2words(n.parse().unwrap()),
            words.as_str().unwrap(),
            "num2words({n})"
        );
    }
}

#[test]
fn decode_and_stop_tokens() {
    let p = SmolVlmProcessor::from_dir(fixtures().join("smolvlm-tiny-sf2")).unwrap();
    let r = reference("smolvlm-tiny-sf2");
    for c in r.index["cases"].as_array().unwrap() {
        let ids: Vec<u32> = c["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            p.decode(&ids, true).unwrap(),
            c["generated_text"].as_str().unwrap()
        );
        assert_eq!(
            p.decode(&ids, false).unwrap(),
            c["generated_text_with_special"].as_str().unwrap()
        );
    }
    let eou = p.tokenizer().token_to_id("<end_of_utterance>").unwrap();
    assert!(p.stop_token_ids().contains(&eou));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let p = SmolVlmProcessor::from_dir(fixtures().join("smolvlm-tiny-sf2")).unwrap();
    let ok = VideoFrame {
        rgb: vec![0u8; 8 * 8 * 3],
        width: 8,
        height: 8,
        pts: 0.0,
    };
    let short = VideoFrame {
        rgb: vec![0u8; 10],
        ..ok.clone()
    };
    let err = |r: Result<ProcessedInput, ModelError>| match r {
        Err(ModelError::Input(m)) => m,
        other => panic!("expected an input error, got {other:?}"),
    };
    assert!(err(p.video_prompt(&[], "q")).contains("at least one frame"));
    assert!(err(p.video_prompt(std::slice::from_ref(&short), "q")).contains("needs 192 bytes"));
    assert!(err(p.image_prompt(&[short], "q")).contains("needs 192 bytes"));
    let neg = VideoFrame {
        pts: -1.0,
        ..ok.clone()
    };
    assert!(err(p.video_prompt(&[neg], "q")).contains("not a time"));
    assert!(
        err(p.video_prompt(std::slice::from_ref(&ok), "what is <image>?")).contains("placeholder")
    );
    assert!(err(p.image_prompt(&[], "q")).contains("at least one image"));

    let dir = tempfile::tempdir().unwrap();
    match SmolVlmProcessor::from_dir(dir.path()) {
        Err(ModelError::File { path, .. }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected a file error, got {other:?}"),
    }
}

/// A transformers 4.x layout (hub SmolVLM2): preprocessor_config.json with video_sampling,
/// processor_config.json with only image_seq_len, chat_template.json. Same prompts and pixels.
#[test]
fn transformers4_layout_loads_the_same() {
    let src = fixtures().join("smolvlm-tiny-sf2");
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let proc_cfg = load_json(&src.join("processor_config.json"));
    let mut pre = proc_cfg["image_processor"].clone();
    pre["video_sampling"] = proc_cfg["video_processor"]["video_sampling"].clone();
    std::fs::write(dir.path().join("preprocessor_config.json"), pre.to_string()).unwrap();
    std::fs::write(
        dir.path().join("processor_config.json"),
        serde_json::json!({"image_seq_len": 16}).to_string(),
    )
    .unwrap();
    let template = std::fs::read_to_string(src.join("chat_template.jinja")).unwrap();
    std::fs::write(
        dir.path().join("chat_template.json"),
        serde_json::json!({ "chat_template": template }).to_string(),
    )
    .unwrap();

    let p = SmolVlmProcessor::from_dir(dir.path()).unwrap();
    let r = reference("smolvlm-tiny-sf2");
    for c in r.index["cases"].as_array().unwrap() {
        let got = run_case(&p, c);
        assert_eq!(got.input_ids, ids_of(c), "{}", c["name"]);
    }
}
