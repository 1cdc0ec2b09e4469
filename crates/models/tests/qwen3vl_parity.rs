//! Qwen3-VL against transformers 5.24 on the tiny random checkpoint of
//! tests/fixtures/qwen3vl-tiny (made by tools/make_qwen3vl_fixtures.py; format in
//! tests/fixtures/README-qwen3vl.md): prompt text, token ids, mm token types, 3-D position ids,
//! pixel values, logits at every position and greedy tokens, for an image, a 4-frame video and an
//! 8-frame video.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use vidlm_models::qwen3_vl::processor::{rope_index, Expansion, Processor, VisualKind};
use vidlm_models::qwen3_vl::Qwen3Vl;
use vidlm_models::{GenerationParams, VideoFrame};

mod common;
use common::max_abs_diff;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Reference {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn reference() -> Reference {
    let dir = fixtures();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("qwen3vl-tiny.reference.json")).unwrap(),
    )
    .unwrap();
    let tensors = candle_core::safetensors::load(
        dir.join("qwen3vl-tiny.reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    Reference { meta, tensors }
}

impl Reference {
    fn cases(&self) -> &Vec<serde_json::Value> {
        self.meta["cases"].as_array().unwrap()
    }
    fn t(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("no tensor {key}"))
    }
    fn i64s(&self, key: &str) -> Vec<i64> {
        self.t(key).flatten_all().unwrap().to_vec1::<i64>().unwrap()
    }
    /// The case's frames, RGB as the PNGs hold it (the reference stores the decoded bytes).
    fn frames(&self, case: &serde_json::Value) -> Vec<VideoFrame> {
        case["frames"]
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
                let t = self.t(&format!("frame.{stem}"));
                let (h, w, c) = t.dims3().unwrap();
                assert_eq!(c, 3);
                VideoFrame {
                    rgb: t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
                    width: w as u32,
                    height: h as u32,
                    pts: f["timestamp"].as_f64().unwrap(),
                }
            })
            .collect()
    }
}

fn mean_abs(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn grid(r: &Reference, name: &str) -> [usize; 3] {
    let g = r.i64s(&format!("{name}.grid_thw"));
    [g[0] as usize, g[1] as usize, g[2] as usize]
}

#[test]
fn prompts_ids_and_positions_match_transformers() {
    let r = reference();
    let proc = Processor::load(&fixtures().join("qwen3vl-tiny")).unwrap();
    let merge = proc.video.merge_size;
    for case in r.cases() {
        let name = case["name"].as_str().unwrap();
        let kind = if case["kind"] == "image" {
            VisualKind::Image
        } else {
            VisualKind::Video
        };
        let chat = proc
            .chat_prompt(kind, case["question"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            chat,
            case["prompt"].as_str().unwrap(),
            "{name}: chat template"
        );
        let frames = r.frames(case);
        let (px, expansion) = match kind {
            VisualKind::Image => {
                let px = proc.image_pixels(&frames[0], &Device::Cpu).unwrap();
                let tokens = px.grid.iter().product::<usize>() / (merge * merge);
                (px, Expansion::Image { tokens })
            }
            VisualKind::Video => {
                let px = proc.video_pixels(&frames, &Device::Cpu).unwrap();
                let per = px.grid[1] * px.grid[2] / (merge * merge);
                let pairs = px.pair_times.iter().map(|&t| (t, per)).collect();
                (px, Expansion::Video { pairs })
            }
        };
        assert_eq!(px.grid, grid(&r, name), "{name}: grid_thw");
        let prompt = proc.expand(&chat, &expansion).unwrap();
        assert_eq!(
            prompt.text,
            case["expanded_prompt"].as_str().unwrap(),
            "{name}: expanded prompt"
        );
        let ids: Vec<i64> = prompt.ids.iter().map(|&i| i as i64).collect();
        assert_eq!(
            ids,
            r.i64s(&format!("{name}.input_ids")),
            "{name}: input_ids"
        );
        let types: Vec<i64> = prompt.mm_token_type_ids.iter().map(|&i| i as i64).collect();
        assert_eq!(
            types,
            r.i64s(&format!("{name}.mm_token_type_ids")),
            "{name}: mm types"
        );
        let (images, videos) = match kind {
            VisualKind::Image => (vec![px.grid], vec![]),
            VisualKind::Video => (vec![], vec![px.grid]),
        };
        let (pos, delta) = rope_index(&prompt.mm_token_type_ids, &images, &videos, merge).unwrap();
        let flat: Vec<i64> = pos.concat();
        assert_eq!(
            flat,
            r.i64s(&format!("{name}.position_ids")),
            "{name}: position ids"
        );
        assert_eq!(
            delta,
            case["rope_delta"].as_i64().unwrap(),
            "{name}: rope delta"
        );
        // The references really are 3-D: the vision tokens' h and w positions differ from text's.
        assert_ne!(pos[1], pos[2], "{name}");
    }
}

#[test]
fn pixel_values_match_transformers() {
    let r = reference();
    let proc = Processor::load(&fixtures().join("qwen3vl-tiny")).unwrap();
    for case in r.cases() {
        let name = case["name"].as_str().unwrap();
        let frames = r.frames(case);
        let want = r.t(&format!("{name}.pixel_values"));
        if case["kind"] == "image" {
            // 320x180 -> 128x64 bicubic with antialiasing: our fixed-point separable filter vs
            // torch's uint8 kernel can round a few pixels differently by one level (2/255 after
            // normalization to [-1, 1]).
            let px = proc.image_pixels(&frames[0], &Device::Cpu).unwrap();
            assert_eq!(px.pixels.dims(), want.dims(), "{name}");
            let (max, mean) = (max_abs_diff(&px.pixels, want), mean_abs(&px.pixels, want));
            eprintln!("{name}: pixel max abs diff {max}, mean {mean}");
            assert!(max <= 2.0 / 255.0 + 1e-6, "{name}: max abs diff {max}");
            assert!(mean <= 1e-4, "{name}: mean abs diff {mean}");
        } else {
            // Frames already at a multiple of 16: no resize, the same f32 arithmetic.
            let px = proc.video_pixels(&frames, &Device::Cpu).unwrap();
            assert_eq!(px.pixels.dims(), want.dims(), "{name}");
            assert_eq!(max_abs_diff(&px.pixels, want), 0.0, "{name}");
        }
    }
}

fn positions(r: &Reference, name: &str) -> [Vec<i64>; 3] {
    let p = r.i64s(&format!("{name}.position_ids"));
    let n = p.len() / 3;
    [p[..n].to_vec(), p[n..2 * n].to_vec(), p[2 * n..].to_vec()]
}

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    let r = reference();
    let dir = fixtures().join("qwen3vl-tiny");
    let mut model = Qwen3Vl::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let proc = Processor::load(&dir).unwrap();
    let stops: Vec<u32> = r.meta["stop_token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    for case in r.cases() {
        let name = case["name"].as_str().unwrap();
        let ids: Vec<u32> = r
            .i64s(&format!("{name}.input_ids"))
            .iter()
            .map(|&i| i as u32)
            .collect();
        let pos = positions(&r, name);
        // The model is checked on the reference pixels (the processor has its own test).
        let pixels = r.t(&format!("{name}.pixel_values")).clone();
        let visual = model.encode(&[(pixels, grid(&r, name))]).unwrap();
        let logits = model.prefill(&ids, &pos, Some(&visual), true).unwrap();
        let want = r.t(&format!("{name}.logits"));
        assert_eq!(logits.dims(), want.dims(), "{name}");
        let diff = max_abs_diff(&logits, want);
        eprintln!("{name}: logits max abs diff {diff:e}");
        assert!(diff <= 1e-4, "{name}: logits max abs diff {diff}");

        // Greedy generation with the KV cache through the shared decoding loop.
        let first = model.prefill(&ids, &pos, Some(&visual), false).unwrap();
        let params = GenerationParams {
            max_new_tokens: 16,
            ..Default::default()
        };
        let decoded = vidlm_models::generation::decode_loop(
            first,
            &ids,
            &params,
            &stops,
            &proc.tokenizer,
            &mut |t| model.step(t),
            &mut |_| {},
        )
        .unwrap();
        let want: Vec<u32> = r
            .i64s(&format!("{name}.greedy_ids"))
            .iter()
            .map(|&i| i as u32)
            .collect();
        assert_eq!(decoded.token_ids, want, "{name}: greedy tokens");
        assert_eq!(
            decoded.text,
            case["greedy_text"].as_str().unwrap(),
            "{name}: text"
        );
    }
}
