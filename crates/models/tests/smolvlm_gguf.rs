//! SmolVLM2 from llama.cpp's GGUF files against the safetensors checkpoint they were converted
//! from. The fixtures (crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf/) were written by
//! llama.cpp's own `convert_hf_to_gguf.py` (text, and `--mmproj`) from smolvlm2-256m-tiny, by
//! tools/make_gguf_fixtures.py. On the same 4-frame video prompt:
//! - f32 and f16: the prompt ids and the greedy tokens are identical to the safetensors path; the
//!   logits at every prompt position agree within 1e-4 (f32; measured 5.5e-7) and 5e-3 (f16, the
//!   weights rounded to half; measured 6.7e-4) of max |logit|, f16 both dequantized at load and
//!   kept as stored;
//! - q8_0 (text and vision weights in 8-bit blocks): logits within 5e-2 of max |logit| (measured
//!   1.7e-2 dequantized at load, 2.1e-2 on candle's quantized matmuls; the 16 greedy tokens were
//!   the same); the Q8_0 projector alone (f32 text) costs 1.4e-2, most of it, same tokens.
//! - q4_0 and q4_1 (quantized by gguf-py): the blocks decode exactly as gguf-py decodes them;
//!   logits within 0.25 of max |logit| (4-bit weights of an untrained model; measured values are
//!   printed by the test and quoted in the README).
//!
//! Bad inputs (no mmproj, the files swapped, a truncated file) give one-line errors.

use std::path::{Path, PathBuf};

use vidlm_models::{
    load_model, Clip, GenerationParams, LoadOptions, ModelError, VideoFrame, VisionLanguageModel,
};

mod common;
use common::rel_diff;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text_gguf(kind: &str) -> PathBuf {
    fixtures().join(format!(
        "smolvlm2-256m-tiny-gguf/smolvlm2-256m-tiny-{kind}.gguf"
    ))
}

fn mmproj_gguf(kind: &str) -> PathBuf {
    fixtures().join(format!(
        "smolvlm2-256m-tiny-gguf/mmproj-smolvlm2-256m-tiny-{kind}.gguf"
    ))
}

fn gguf_model(kind: &str, dequantize: bool) -> Box<dyn VisionLanguageModel> {
    // The 4-bit text files pair with the f16 projector, as the hub's 4-bit SmolVLM2 GGUFs do.
    let mmproj = if kind.starts_with("Q4") { "F16" } else { kind };
    gguf_pair(kind, mmproj, dequantize)
}

fn gguf_pair(text: &str, mmproj: &str, dequantize: bool) -> Box<dyn VisionLanguageModel> {
    let opts = LoadOptions {
        mmproj: Some(mmproj_gguf(mmproj)),
        gguf_dequantize: dequantize,
        ..Default::default()
    };
    load_model(text_gguf(text).to_str().unwrap(), &opts).unwrap()
}

fn safetensors_model() -> Box<dyn VisionLanguageModel> {
    let dir = fixtures().join("smolvlm2-256m-tiny");
    load_model(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Four 160x120 frames, half a second apart.
fn frames() -> Vec<VideoFrame> {
    (0..4u8)
        .map(|k| VideoFrame {
            rgb: (0..160 * 120 * 3)
                .map(|i| ((i * (k as usize + 3) + i / 480) % 251) as u8)
                .collect(),
            width: 160,
            height: 120,
            pts: k as f64 * 0.5,
        })
        .collect()
}

struct Run {
    ids: Vec<u32>,
    logits: candle_core::Tensor,
    tokens: Vec<u32>,
}

fn run(model: &mut dyn VisionLanguageModel) -> Run {
    let groups = model.encode_frames(&frames()).unwrap();
    let clip = Clip::new(groups).with_video(Some(2.0), Some(2.0));
    let q = "What happens in this video?";
    let pl = model.prompt_logits(&clip, q).unwrap();
    let params = GenerationParams {
        max_new_tokens: 16,
        temperature: 0.0,
        ..Default::default()
    };
    let g = model.generate(&clip, q, &params, &mut |_| {}).unwrap();
    Run {
        ids: pl.ids,
        logits: pl.logits,
        tokens: g.token_ids,
    }
}

fn compare(kind: &str, dequantize: bool) -> (f32, bool) {
    let want = run(safetensors_model().as_mut());
    let mut m = gguf_model(kind, dequantize);
    assert_eq!(m.family(), "SmolVLM2");
    let got = run(m.as_mut());
    assert_eq!(got.ids, want.ids, "{kind}: prompt ids");
    let d = rel_diff(&got.logits, &want.logits);
    eprintln!(
        "{kind} (dequantize {dequantize}): max logit difference {d:.3e} of max|logit|, tokens {:?} vs {:?}",
        got.tokens, want.tokens
    );
    (d, got.tokens == want.tokens)
}

#[test]
fn f32_gguf_gives_the_safetensors_tokens() {
    let (d, same) = compare("F32", true);
    assert!(d < 1e-4, "{d}");
    assert!(same);
}

#[test]
fn f16_gguf_gives_the_safetensors_tokens() {
    let (d, same) = compare("F16", true);
    assert!(d < 5e-3, "{d}");
    assert!(same);
}

/// The default load keeps F16 text weights as stored (`Lin::F16`): the prompt through the f32
/// gemm on the converted weight, every decode step on the f16 weights themselves.
#[test]
fn f16_gguf_as_stored_gives_the_safetensors_tokens() {
    let (d, same) = compare("F16", false);
    assert!(d < 5e-3, "{d}");
    assert!(same);
}

#[test]
fn f32_gguf_image_mode_gives_the_safetensors_tokens() {
    // A 700x500 image: split into tiles plus the global image, sizes from the mmproj metadata.
    let image = VideoFrame {
        rgb: (0..700 * 500 * 3)
            .map(|i| ((i * 7 + i / 2100) % 253) as u8)
            .collect(),
        width: 700,
        height: 500,
        pts: 0.0,
    };
    let params = GenerationParams {
        max_new_tokens: 8,
        temperature: 0.0,
        ..Default::default()
    };
    let ask = |m: &mut dyn VisionLanguageModel| {
        let out = m
            .generate_images(
                std::slice::from_ref(&image),
                "Describe it.",
                &params,
                &mut |_| {},
            )
            .unwrap();
        (out.prompt_ids, out.generation.token_ids)
    };
    let want = ask(safetensors_model().as_mut());
    let got = ask(gguf_model("F32", true).as_mut());
    assert!(
        want.0.len() > 64 * 4,
        "the image was split: {} ids",
        want.0.len()
    );
    assert_eq!(got, want);
}

#[test]
fn q8_0_gguf_is_within_tolerance() {
    for dequantize in [true, false] {
        let (d, _) = compare("Q8_0", dequantize);
        assert!(d < 5e-2, "dequantize {dequantize}: {d}");
    }
}

/// Q4_0 and Q4_1 text files (quantized by llama.cpp's gguf-py, tools/make_gguf_q4_fixtures.py):
/// the blocks decode to gguf-py's own dequantization exactly, and the model answers the prompt
/// within the stated tolerance of the safetensors path, dequantized at load and on the stored
/// blocks (qgemv for decode steps, per-call dequantization for the prompt).
#[test]
fn q4_gguf_decodes_as_gguf_py_and_is_within_tolerance() {
    let reference = candle_core::safetensors::load(
        fixtures().join("smolvlm2-256m-tiny-gguf/q4-dequantized.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for kind in ["Q4_0", "Q4_1"] {
        let (ct, mut f) = vidlm_models::gguf::open(&text_gguf(kind)).unwrap();
        let mut checked = 0;
        for (key, want) in &reference {
            let Some(name) = key.strip_prefix(&format!("{kind}.")) else {
                continue;
            };
            let q = ct.tensor(&mut f, name, &candle_core::Device::Cpu).unwrap();
            assert_eq!(format!("{:?}", q.dtype()), kind, "{name}");
            let got = q.dequantize(&candle_core::Device::Cpu).unwrap();
            assert_eq!(got.dims(), want.dims(), "{kind} {name}");
            let d = (&got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(d, 0.0, "{kind} {name}: differs from gguf-py by {d}");
            checked += 1;
        }
        assert_eq!(checked, 2, "{kind}: reference tensors");
        for dequantize in [true, false] {
            // Quantized: the decode steps run vidlm's qgemv kernels, which take any block count
            // per row (candle 0.11's Q4_1 dot product debug-asserts an even one; rows here have 3).
            let (d, _) = compare(kind, dequantize);
            assert!(d < 0.25, "{kind} dequantize {dequantize}: {d}");
        }
    }
}

/// The vision tower's share of the Q8_0 cost: the f32 text model with the Q8_0 projector.
#[test]
fn q8_0_vision_alone_is_within_tolerance() {
    let want = run(safetensors_model().as_mut());
    let got = run(gguf_pair("F32", "Q8_0", true).as_mut());
    assert_eq!(got.ids, want.ids);
    let d = rel_diff(&got.logits, &want.logits);
    eprintln!(
        "f32 text + Q8_0 mmproj: max logit difference {d:.3e} of max|logit|, tokens {:?} vs {:?}",
        got.tokens, want.tokens
    );
    assert!(d < 5e-2, "{d}");
}

fn load_err(spec: &Path, mmproj: Option<PathBuf>) -> ModelError {
    let opts = LoadOptions {
        mmproj,
        ..Default::default()
    };
    load_model(spec.to_str().unwrap(), &opts)
        .err()
        .expect("the load fails")
}

#[test]
fn a_directory_holding_both_files_loads() {
    let tmp = tempfile::tempdir().unwrap();
    for p in [text_gguf("Q8_0"), mmproj_gguf("Q8_0")] {
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let spec = tmp.path().to_str().unwrap();
    let m = load_model(spec, &LoadOptions::default()).unwrap();
    assert_eq!((m.family(), m.name()), ("SmolVLM2", spec));
    // The text file alone finds its mmproj next to it.
    let text = tmp.path().join(text_gguf("Q8_0").file_name().unwrap());
    let m = load_model(text.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(m.family(), "SmolVLM2");
    // Among several mmproj files, the one named after the text file.
    let f16 = text_gguf("F16");
    assert!(f16
        .parent()
        .unwrap()
        .join("mmproj-smolvlm2-256m-tiny-Q8_0.gguf")
        .is_file());
    let files = vidlm_models::gguf::GgufFiles::find(&f16, None)
        .unwrap()
        .unwrap();
    assert_eq!(files.mmproj, mmproj_gguf("F16"));
}

#[test]
fn bad_gguf_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("model-F32.gguf");
    std::fs::copy(text_gguf("F32"), &alone).unwrap();

    let e = load_err(&alone, None);
    assert!(
        matches!(e, ModelError::File { .. }) && e.to_string().contains("--mmproj"),
        "{e}"
    );
    let e = load_err(&alone, Some(tmp.path().join("missing-mmproj.gguf")));
    assert!(e.to_string().contains("no such mmproj file"), "{e}");

    // The files swapped: the mmproj given as the model, the text model as the mmproj.
    let e = load_err(&mmproj_gguf("F32"), Some(text_gguf("F32")));
    assert!(
        matches!(e, ModelError::Invalid(_)) && e.to_string().contains("`llama`"),
        "{e}"
    );
    let e = load_err(&mmproj_gguf("F32"), Some(mmproj_gguf("F32")));
    assert!(e.to_string().contains("--mmproj"), "{e}");

    // A file cut short keeps its header; its tensors do not fit.
    let bytes = std::fs::read(text_gguf("F32")).unwrap();
    std::fs::write(&alone, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&alone, Some(mmproj_gguf("F32")));
    assert!(
        matches!(e, ModelError::File { .. }) && e.to_string().contains("truncated"),
        "{e}"
    );
    // Not GGUF at all.
    std::fs::write(&alone, b"not a gguf file").unwrap();
    let e = load_err(&alone, Some(mmproj_gguf("F32")));
    assert!(e.to_string().contains("not a GGUF file"), "{e}");
}

/// Decode steps on F16 text weights kept as stored (the default) against the same file expanded
/// to f32 at load: both multiply the same values (f16 to f32 is exact), so only the order of the
/// f32 sums may differ. The stored model reads half the bytes a step.
#[test]
fn f16_decode_steps_as_stored_match_the_f32_copy() {
    use candle_core::Device;
    use vidlm_models::llama_text::TextModel;
    let open = |dequantize: bool| {
        let (ct, mut f) = vidlm_models::gguf::open(&text_gguf("F16")).unwrap();
        TextModel::from_gguf(&ct, &mut f, &Device::Cpu, dequantize)
            .unwrap()
            .0
    };
    let (mut stored, mut f32_copy) = (open(false), open(true));
    let (half, full) = (stored.decode_weight_bytes(), f32_copy.decode_weight_bytes());
    // Norms stay f32 in both, so a little over half.
    assert!(
        half * 2 < full * 11 / 10 && half * 2 > full * 9 / 10,
        "stored {half} B vs f32 {full} B per step"
    );
    let prompt: Vec<u32> = (0..30u32).map(|i| (i * 53 + 11) % 200).collect();
    let tokens: Vec<u32> = (0..10u32).map(|i| (i * 37 + 5) % 200).collect();
    for m in [&mut stored, &mut f32_copy] {
        m.clear_cache();
    }
    // A 30-token prompt (the f32 gemm on the converted weight), then one token at a time (the
    // fused step on the f16 rows), and a 3-token chunk (the few-rows path).
    let mut worst = 0f32;
    let mut steps: Vec<Vec<u32>> = vec![prompt];
    steps.extend(tokens.iter().map(|&t| vec![t]));
    steps.push(vec![7, 8, 9]);
    for ids in &steps {
        let a = stored.forward_ids(ids, true).unwrap();
        let b = f32_copy.forward_ids(ids, true).unwrap();
        assert_eq!(a.dims(), b.dims());
        worst = worst.max(rel_diff(&a, &b));
    }
    eprintln!("F16 as stored vs f32 copy, worst logit difference {worst:.3e} of max|logit|");
    assert!(worst < 1e-5, "{worst}");
}
