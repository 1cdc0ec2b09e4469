//! SmolVLM parity with transformers: for each tiny checkpoint (scale factor 2 with a tied head,
//! scale factor 4 untied) and each reference case (1-frame video, 4-frame video, split image,
//! text only), the same input_ids and pixel_values give logits at every position within
//! 1e-4 x max(1, max|logit|) of transformers' (f32), and greedy KV-cached decoding gives the same
//! tokens. Fixtures: crates/models/tests/fixtures/README.md.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vidlm_models::generation::{decode_loop, Sampler};
use vidlm_models::smolvlm::SmolVlm;
use vidlm_models::GenerationParams;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Case {
    name: String,
    input_ids: Vec<u32>,
    generated: Vec<u32>,
    pixels: Option<Tensor>,
    logits: Tensor,
}

fn cases(ckpt: &str) -> (Vec<Case>, Vec<u32>) {
    let dir = fixtures();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{ckpt}.reference.json"))).unwrap(),
    )
    .unwrap();
    let tensors = candle_core::safetensors::load(
        dir.join(format!("{ckpt}.reference.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let stop: Vec<u32> = json["stop_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let out = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let input_ids = ids(&c["input_ids"]);
            let stored: Vec<u32> = tensors[&format!("{name}.input_ids")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(
                input_ids, stored,
                "{ckpt}/{name}: JSON and safetensors input_ids differ"
            );
            Case {
                generated: ids(&c["generated_ids"]),
                pixels: tensors.get(&format!("{name}.pixel_values")).cloned(),
                logits: tensors[&format!("{name}.logits")].clone(),
                input_ids,
                name,
            }
        })
        .collect();
    (out, stop)
}

fn check(ckpt: &str) {
    let (cases, stop) = cases(ckpt);
    let mut model = SmolVlm::load(&fixtures().join(ckpt), DType::F32, &Device::Cpu).unwrap();
    let tokenizer =
        tokenizers::Tokenizer::from_file(fixtures().join(ckpt).join("tokenizer.json")).unwrap();
    let kinds: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert!(kinds.iter().any(|n| n.contains("1frame")), "{kinds:?}");
    assert!(kinds.iter().any(|n| n.contains("4frames")), "{kinds:?}");
    assert!(kinds.iter().any(|n| n.starts_with("image")), "{kinds:?}");
    for case in &cases {
        let logits = model
            .forward_all(&case.input_ids, case.pixels.as_ref())
            .unwrap();
        assert_eq!(logits.dims(), case.logits.dims(), "{ckpt}/{}", case.name);
        let max_ref: f32 = case
            .logits
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let diff: f32 = (&logits - &case.logits)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        let tol = 1e-4 * max_ref.max(1.0);
        println!(
            "{ckpt}/{}: logits max abs diff {diff:.3e} (tolerance {tol:.3e})",
            case.name
        );
        assert!(
            diff <= tol,
            "{ckpt}/{}: logits differ by {diff} > {tol}",
            case.name
        );

        // Greedy decoding with the KV cache, continuing from the prompt just run.
        let seq = case.input_ids.len();
        let last = logits.get(seq - 1).unwrap();
        let params = GenerationParams {
            max_new_tokens: 16,
            ..Default::default()
        };
        let text = &mut model.text;
        let mut streamed = String::new();
        let got = decode_loop(
            last,
            &case.input_ids,
            &params,
            &stop,
            &tokenizer,
            &mut |t| text.forward_ids(&[t], false).map(|l| l.squeeze(0).unwrap()),
            &mut |piece| streamed.push_str(piece),
        )
        .unwrap();
        // The streamed pieces (whole UTF-8 characters only) add up to the decoded answer.
        assert_eq!(streamed, got.text, "{ckpt}/{}: streamed text", case.name);
        // The reference keeps the stop token when it was generated; ours reports it as the reason.
        let mut expect = case.generated.clone();
        if expect.last().is_some_and(|t| stop.contains(t)) {
            expect.pop();
        }
        assert_eq!(got.token_ids, expect, "{ckpt}/{}: greedy tokens", case.name);
    }
    // The sampler's argmax is the one the loop used.
    assert_eq!(
        Sampler::new(&GenerationParams::default())
            .sample_slice(&mut [0.0, 1.0], &[])
            .unwrap(),
        1
    );
}

#[test]
fn tiny_sf2_tied_matches_transformers() {
    check("smolvlm-tiny-sf2");
}

#[test]
fn tiny_sf4_untied_matches_transformers() {
    check("smolvlm-tiny-sf4");
}

fn load_png(path: &Path, timestamp: f64) -> vidlm_models::VideoFrame {
    let img = image::open(path).unwrap().to_rgb8();
    let (width, height) = img.dimensions();
    vidlm_models::VideoFrame {
        rgb: img.into_raw(),
        width,
        height,
        pts: timestamp,
    }
}

/// From the PNG frames through our processor, vision tower and decoder: the reference ids and
/// greedy tokens (video: 1 and 4 frames; image mode with splitting), for both checkpoints.
fn check_end_to_end(ckpt: &str) {
    use vidlm_models::smolvlm::SmolVlmEngine;
    use vidlm_models::LoadOptions;
    use vidlm_models::VisionLanguageModel;
    let dir = fixtures();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{ckpt}.reference.json"))).unwrap(),
    )
    .unwrap();
    let mut engine =
        SmolVlmEngine::load(dir.join(ckpt).to_str().unwrap(), &LoadOptions::default()).unwrap();
    let params = GenerationParams {
        max_new_tokens: 16,
        ..Default::default()
    };
    for case in json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        if kind == "text" {
            continue;
        }
        let frames: Vec<_> = case["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                load_png(
                    &dir.join(f["file"].as_str().unwrap()),
                    f["timestamp"].as_f64().unwrap(),
                )
            })
            .collect();
        let question = case["question"].as_str().unwrap();
        let out = if kind == "video" {
            engine
                .ask_video(
                    &frames,
                    case["video_duration"].as_f64(),
                    question,
                    &params,
                    &mut |_| {},
                )
                .unwrap()
        } else {
            engine
                .ask_images(&frames, question, &params, &mut |_| {})
                .unwrap()
        };
        let ref_ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(out.prompt_ids, ref_ids, "{ckpt}/{name}: prompt ids");
        let mut expect: Vec<u32> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        if expect.last().is_some_and(|t| engine.stop_ids().contains(t)) {
            expect.pop();
        }
        // Resized frames may differ from PIL by a level here and there: allow it only where
        // transformers' own greedy margin is that thin, and say so.
        if out.generation.token_ids != expect {
            let margins = case["greedy_top2_margins"].as_array().unwrap();
            let first_diff = out
                .generation
                .token_ids
                .iter()
                .zip(&expect)
                .take_while(|(a, b)| a == b)
                .count();
            let m = margins[first_diff].as_f64().unwrap();
            println!("{ckpt}/{name}: end-to-end greedy differs at step {first_diff} (reference margin {m:.2e})");
            assert!(
                m < 1e-2,
                "{ckpt}/{name}: end-to-end greedy tokens differ at a clear step"
            );
        }
        assert_eq!(
            out.generation.text,
            engine
                .tokenizer()
                .decode(&out.generation.token_ids, true)
                .unwrap()
        );

        // The trait path (encode_frames + generate over the groups) gives the same prompt for
        // unpooled video frames.
        if kind == "video" && case["video_duration"].is_null() {
            let clip = vidlm_models::Clip::new(engine.encode_frames(&frames).unwrap());
            assert_eq!(
                engine.clip_prompt_ids(&clip, question).unwrap(),
                ref_ids,
                "{ckpt}/{name}: clip prompt"
            );
            let g = engine
                .generate(&clip, question, &params, &mut |_| {})
                .unwrap();
            assert_eq!(
                g.token_ids, out.generation.token_ids,
                "{ckpt}/{name}: trait generate"
            );
        }
    }
}

#[test]
fn tiny_sf2_end_to_end_from_png_frames() {
    check_end_to_end("smolvlm-tiny-sf2");
}

#[test]
fn tiny_sf4_end_to_end_from_png_frames() {
    check_end_to_end("smolvlm-tiny-sf4");
}

/// A pooled group (fewer tokens, a time range) is rendered with as many `<image>` tokens as it
/// has rows, stamped with its start; the intro counts groups.
#[test]
fn pooled_groups_carry_their_token_count() {
    use vidlm_models::smolvlm::SmolVlmEngine;
    use vidlm_models::LoadOptions;
    use vidlm_models::VisualTokens;
    let ckpt = fixtures().join("smolvlm-tiny-sf2");
    let engine = SmolVlmEngine::load(ckpt.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let hidden = engine.model.config.text_config.hidden_size;
    let group = |n: usize, start: f64, end: f64| VisualTokens {
        embeddings: Tensor::zeros((n, hidden), DType::F32, &Device::Cpu).unwrap(),
        grid_h: 1,
        grid_w: n,
        start,
        end,
    };
    let clip = vidlm_models::Clip::new(vec![group(3, 0.0, 1.5), group(5, 62.0, 70.9)]);
    let ids = engine.clip_prompt_ids(&clip, "What?").unwrap();
    let image_id = engine.model.config.image_token_id;
    assert_eq!(ids.iter().filter(|&&i| i == image_id).count(), 8);
    let text = engine.tokenizer().decode(&ids, false).unwrap();
    assert!(
        text.contains("series of two frames from a 0:01:10 [H:MM:SS] video."),
        "{text}"
    );
    assert!(
        text.contains(
            "Frame from 00:00:<fake_token_around_image><global-img><image><image><image><fake"
        ),
        "{text}"
    );
    assert!(text.contains("Frame from 01:02:"), "{text}");
}

/// A checkpoint split into shards with a `model.safetensors.index.json`, and its config in the
/// transformers 4.x spelling (`rope_theta`, `torch_dtype`), loads to the same model.
#[test]
fn sharded_and_4x_config_load_the_same_model() {
    let src = fixtures().join("smolvlm-tiny-sf4");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if name != "model.safetensors" && name != "config.json" {
            std::fs::copy(&f, dir.join(&name)).unwrap();
        }
    }
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    let mut shards = [
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    ];
    for (i, n) in names.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert((*n).clone(), tensors[*n].clone());
        weight_map.insert(
            (*n).clone(),
            serde_json::json!(format!("model-0000{}-of-00002.safetensors", shard + 1)),
        );
    }
    for (i, s) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            s,
            dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    // transformers 4.x spelling of the same config.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let theta = cfg["text_config"]["rope_parameters"]["rope_theta"].clone();
    let t = cfg["text_config"].as_object_mut().unwrap();
    t.remove("rope_parameters");
    t.insert("rope_theta".into(), theta);
    t.insert("rope_scaling".into(), serde_json::Value::Null);
    let top = cfg.as_object_mut().unwrap();
    top.remove("dtype");
    top.insert("torch_dtype".into(), serde_json::json!("float32"));
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();

    let (cases, _) = cases("smolvlm-tiny-sf4");
    let case = cases.iter().find(|c| c.pixels.is_some()).unwrap();
    let mut a = SmolVlm::load(&src, DType::F32, &Device::Cpu).unwrap();
    let mut b = SmolVlm::load(dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(b.config.text_config.rope_theta(), 100000.0);
    assert_eq!(b.config.weight_dtype(), Some("float32"));
    let la = a
        .forward_all(&case.input_ids, case.pixels.as_ref())
        .unwrap();
    let lb = b
        .forward_all(&case.input_ids, case.pixels.as_ref())
        .unwrap();
    let d: f32 = (la - lb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0);

    // A shard named by the index but absent: the error names it.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = SmolVlm::load(dir, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("missing"),
        "{err}"
    );
}
