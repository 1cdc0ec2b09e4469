//! Idefics3 (SmolVLM v1, model_type `idefics3`), the registry's third family, against
//! transformers' `Idefics3ForConditionalGeneration` and `Idefics3Processor` on a tiny random
//! checkpoint (tools/make_idefics3_fixtures.py). Everything goes through `load_model` and the
//! `VisionLanguageModel` trait, as the pipeline, the CLI and the server call it:
//! - a clip's frames (four 64x64 frames) give the processor's pixels for those frames as images
//!   without splitting (within one u8 level, see below), the same prompt ids, on transformers'
//!   pixels logits at every position within 1e-4 x max(1, max|logit|), and from the frames the
//!   same greedy tokens;
//! - an image question (one 1280x720 image, split into crops) gives the same prompt ids and
//!   greedy tokens.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use vidlm_models::{
    load_model, Clip, FramePixels, GenerationParams, LoadOptions, PixelData, VideoFrame,
};

mod common;
use common::{ids, max_abs, max_abs_diff};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load_png(path: &Path, pts: f64) -> VideoFrame {
    let img = image::open(path).unwrap().to_rgb8();
    let (width, height) = img.dimensions();
    VideoFrame {
        rgb: img.into_raw(),
        width,
        height,
        pts,
    }
}

/// Greedy tokens equal the reference's (its stop token dropped), or differ first where
/// transformers' own top-2 margin is below 1e-2 (a resampled pixel may move a level).
fn check_tokens(name: &str, got: &[u32], case: &serde_json::Value, stop: &[u32]) {
    let mut want = ids(&case["generated_ids"]);
    if want.last().is_some_and(|t| stop.contains(t)) {
        want.pop();
    }
    if got != want.as_slice() {
        let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let m = case["greedy_top2_margins"][at].as_f64().unwrap();
        println!("{name}: greedy differs at step {at} (reference margin {m:.2e})");
        assert!(m < 1e-2, "{name}: greedy tokens differ at a clear step");
    }
}

#[test]
fn idefics3_matches_transformers_through_the_registry() {
    let dir = fixtures();
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("idefics3-tiny.reference.json")).unwrap(),
    )
    .unwrap();
    let refs = candle_core::safetensors::load(
        dir.join("idefics3-tiny.reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let stop = ids(&json["stop_token_ids"]);
    let mut model = load_model(
        dir.join("idefics3-tiny").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(model.family(), "Idefics3");
    let params = GenerationParams {
        max_new_tokens: 16,
        ..Default::default()
    };
    let mut checked = 0;
    for case in json["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let question = case["question"].as_str().unwrap();
        let frames: Vec<VideoFrame> = case["frames"]
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
        let want_ids = ids(&case["input_ids"]);
        match case["kind"].as_str().unwrap() {
            "frames" => {
                // The pixel step the preprocess threads run, frame by frame: transformers' pixels
                // within one u8 level (2/255 after normalization). Its torchvision Lanczos rounds
                // its u8 weights unlike Pillow's, which our resampler follows (the same one-level
                // difference as SmolVLM2's image path); count how often.
                let step = model.pixel_step().expect("a CPU pixel step");
                let want_px = &refs[&format!("{name}.pixel_values")];
                let (mut off, mut total) = (0usize, 0usize);
                let mut ref_frames = Vec::new();
                for (i, f) in frames.iter().enumerate() {
                    let px = step.pixels(f, frames.len()).unwrap();
                    let PixelData::Planes { values, shape } = &px.data else {
                        panic!("{name}: frame {i} is not planes");
                    };
                    let want: Vec<f32> = want_px
                        .get(i)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap();
                    assert_eq!(values.len(), want.len(), "{name}: frame {i} size");
                    for (a, b) in values.iter().zip(&want) {
                        let d = (a - b).abs();
                        assert!(
                            d <= 2.0 / 255.0 + 1e-6,
                            "{name}: frame {i} pixel off by {d}"
                        );
                        off += usize::from(d > 1e-6);
                    }
                    total += want.len();
                    ref_frames.push(FramePixels {
                        pts: f.pts,
                        data: PixelData::Planes {
                            values: want,
                            shape: *shape,
                        },
                    });
                }
                println!("{name}: {off} of {total} pixel values one level off transformers'");
                assert!(off * 20 < total, "{name}: over 5% of the pixels differ");
                // The model on transformers' own pixels: the logits at every position.
                let clip = Clip::new(
                    model
                        .encode_frame_pixels(&ref_frames, ref_frames.len())
                        .unwrap(),
                );
                let pl = model.prompt_logits(&clip, question).unwrap();
                assert_eq!(pl.ids, want_ids, "{name}: prompt ids");
                let want = &refs[&format!("{name}.logits")];
                let scale = max_abs(want).max(1.0);
                let d = max_abs_diff(&pl.logits.to_dtype(DType::F32).unwrap(), want);
                println!("{name}: max logit diff {d:.3e} (scale {scale:.2})");
                assert!(d <= 1e-4 * scale, "{name}: logits differ by {d}");
                // From the frames through our own pixels: the same greedy tokens.
                let ours = Clip::new(model.encode_frames(&frames).unwrap());
                let g = model
                    .generate(&ours, question, &params, &mut |_| {})
                    .unwrap();
                check_tokens(name, &g.token_ids, case, &stop);
                checked += 1;
            }
            "image" => {
                let out = model
                    .generate_images(&frames, question, &params, &mut |_| {})
                    .unwrap();
                assert_eq!(out.prompt_ids, want_ids, "{name}: prompt ids");
                check_tokens(name, &out.generation.token_ids, case, &stop);
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 2, "the fixture lost a case");
}
