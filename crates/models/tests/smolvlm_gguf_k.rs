//! SmolVLM2 text GGUFs in llama.cpp's k-quant mixes (Q4_K_M, Q4_K_S) as `llama-quantize` writes
//! them, against gguf-py and transformers. The fixtures
//! (crates/models/tests/fixtures/smolvlm2-256m-tiny-k-gguf/, tools/make_gguf_k_fixtures.py) are a
//! tiny random SmolVLM2 converted to f32 by llama.cpp's `convert_hf_to_gguf.py` and quantized by
//! llama.cpp's `llama-quantize`; its text hidden size (64) is not a multiple of 256 and its
//! intermediate size (256) is, as SmolVLM2-256M's (576, 1536), so the files mix k-quants (the
//! `ffn_down`s) with llama-quantize's fallbacks for the other rows (Q5_0, Q5_1, Q8_0).
//!
//! - the tensor types in each file are the ones gguf-py reads there, and include both k-quants and
//!   fallbacks;
//! - every tensor dequantizes to exactly gguf-py's dequantization;
//! - the text model's logits at every prompt position, through the GGUF path and through the
//!   safetensors path on gguf-py's weights, agree with transformers' on the same GGUF
//!   (`gguf_file=`): within 1e-4 of max |logit| in f32 (dequantized at load; measured 5.5e-7), 5e-2
//!   on candle's quantized matmuls (8-bit activations; measured 1.8e-2 Q4_K_M, 1.7e-2 Q4_K_S);
//!   greedy tokens equal transformers' when dequantized (asserted) and, here, on quantized matmuls
//!   too (printed: the smallest top-2 margin is 0.009);
//! - the file loads as a vision-language model with its mmproj;
//! - a tensor type vidlm cannot decode is a typed error naming the tensor and the type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use vidlm_models::llama_text::{TextConfig, TextModel};
use vidlm_models::{
    load_model, Clip, GenerationParams, LoadOptions, ModelError, VideoFrame, VisionLanguageModel,
};

mod common;
use common::{ids, max_abs, rel_diff};

const NAME: &str = "smolvlm2-256m-tiny-k";
const QUANTS: [&str; 2] = ["Q4_K_M", "Q4_K_S"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{NAME}-gguf"))
}

fn text_gguf(q: &str) -> PathBuf {
    dir().join(format!("{NAME}-{q}.gguf"))
}

fn mmproj_gguf() -> PathBuf {
    dir().join(format!("mmproj-{NAME}-F16.gguf"))
}

fn reference_json() -> serde_json::Value {
    let s = std::fs::read_to_string(dir().join("k-reference.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn reference_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir().join("k-reference.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn the_type_mix_is_what_llama_quantize_wrote() {
    let r = reference_json();
    for q in QUANTS {
        let file = &r["files"][q];
        let (ct, _) = vidlm_models::gguf::open(&text_gguf(q)).unwrap();
        let want = file["tensors"].as_array().unwrap();
        assert_eq!(ct.tensor_infos.len(), want.len(), "{q}: tensor count");
        let mut mix: HashMap<&str, usize> = HashMap::new();
        for e in want {
            let name = e["name"].as_str().unwrap();
            let info = &ct.tensor_infos[name];
            let ty = vidlm_models::gguf::dtype_name(info.ggml_dtype);
            assert_eq!(ty, e["type"].as_str().unwrap(), "{q} {name}");
            let shape: Vec<usize> = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(info.shape.dims(), shape.as_slice(), "{q} {name}");
            *mix.entry(ty).or_default() += 1;
        }
        eprintln!("{q}: {mix:?}");
        // Both k-quants and llama-quantize's fallbacks for rows that are not multiples of 256.
        let expect: &[&str] = if q == "Q4_K_M" {
            &["Q4_K", "Q6_K", "Q5_0", "Q8_0"]
        } else {
            &["Q4_K", "Q5_0", "Q5_1", "Q8_0"]
        };
        for t in expect {
            assert!(mix.contains_key(t), "{q}: no {t} tensor: {mix:?}");
        }
        let fallbacks = file["llama_quantize_fallbacks"].as_array().unwrap();
        assert!(
            fallbacks
                .iter()
                .any(|l| l.as_str().unwrap().contains("falling back to    q5_0")),
            "{q}: {fallbacks:?}"
        );
    }
}

#[test]
fn every_tensor_decodes_as_gguf_py() {
    let r = reference_json();
    let reference = reference_tensors();
    for q in QUANTS {
        let (ct, mut f) = vidlm_models::gguf::open(&text_gguf(q)).unwrap();
        let mut checked = 0;
        for e in r["files"][q]["tensors"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            let want = &reference[&format!("{name}@{}", e["type"].as_str().unwrap())];
            let got = ct
                .tensor(&mut f, name, &Device::Cpu)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "{q} {name}");
            let d = max_abs(&(&got - want).unwrap());
            assert_eq!(d, 0.0, "{q} {name}: differs from gguf-py by {d}");
            checked += 1;
        }
        assert_eq!(checked, ct.tensor_infos.len());
    }
}

/// The HF-named, HF-layout text weights from gguf-py's dequantization of file `q`: llama.cpp's
/// converter permuted Q/K rows per head (`[heads, 2, hd/2]` -> `[heads, hd/2, 2]`); undone here.
fn hf_weights(
    q: &str,
    cfg: &TextConfig,
    reference: &HashMap<String, Tensor>,
    json: &serde_json::Value,
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let hd = cfg.head_dim();
    for e in json["files"][q]["tensors"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let w = reference[&format!("{name}@{}", e["type"].as_str().unwrap())].clone();
        let unpermute = |w: Tensor, heads: usize| {
            let cols = w.dim(1).unwrap();
            w.reshape((heads, hd / 2, 2, cols))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((heads * hd, cols))
                .unwrap()
        };
        let (hf, w) = match name {
            "token_embd.weight" => ("model.embed_tokens.weight".to_string(), w),
            "output_norm.weight" => ("model.norm.weight".to_string(), w),
            "output.weight" => ("lm_head.weight".to_string(), w),
            _ => {
                let rest = name.strip_prefix("blk.").unwrap();
                let (layer, part) = rest.split_once('.').unwrap();
                let (hf, w) = match part {
                    "attn_q.weight" => (
                        "self_attn.q_proj.weight",
                        unpermute(w, cfg.num_attention_heads),
                    ),
                    "attn_k.weight" => ("self_attn.k_proj.weight", unpermute(w, cfg.kv_heads())),
                    "attn_v.weight" => ("self_attn.v_proj.weight", w),
                    "attn_output.weight" => ("self_attn.o_proj.weight", w),
                    "ffn_gate.weight" => ("mlp.gate_proj.weight", w),
                    "ffn_up.weight" => ("mlp.up_proj.weight", w),
                    "ffn_down.weight" => ("mlp.down_proj.weight", w),
                    "attn_norm.weight" => ("input_layernorm.weight", w),
                    "ffn_norm.weight" => ("post_attention_layernorm.weight", w),
                    other => panic!("unexpected tensor {other}"),
                };
                (format!("model.layers.{layer}.{hf}"), w)
            }
        };
        out.insert(hf, w);
    }
    out
}

fn safetensors_text_model(q: &str, json: &serde_json::Value) -> TextModel {
    let cfg: TextConfig = serde_json::from_value(json["text_config"].clone()).unwrap();
    let w = hf_weights(q, &cfg, &reference_tensors(), json);
    let lm_head = candle_nn::Linear::new(w["lm_head.weight"].clone(), None);
    let vb = candle_nn::VarBuilder::from_tensors(w, candle_core::DType::F32, &Device::Cpu);
    TextModel::from_varbuilder(&cfg, vb.pp("model"), Some(lm_head)).unwrap()
}

fn gguf_text_model(q: &str, dequantize: bool) -> TextModel {
    let (ct, mut f) = vidlm_models::gguf::open(&text_gguf(q)).unwrap();
    TextModel::from_gguf(&ct, &mut f, &Device::Cpu, dequantize)
        .unwrap()
        .0
}

/// Logits at every prompt position and `n` greedy tokens (no stop), as the fixture's transformers
/// run made them.
fn run_text(model: &mut TextModel, prompt: &[u32], n: usize) -> (Tensor, Vec<u32>) {
    model.clear_cache();
    let logits = model.forward_ids(prompt, true).unwrap();
    let mut last = logits.get(logits.dim(0).unwrap() - 1).unwrap();
    let mut tokens = Vec::new();
    for _ in 0..n {
        let t = last.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        tokens.push(t);
        last = model.forward_ids(&[t], false).unwrap().squeeze(0).unwrap();
    }
    (logits, tokens)
}

#[test]
fn k_quant_logits_match_transformers_on_the_same_gguf() {
    let json = reference_json();
    let reference = reference_tensors();
    let prompt = ids(&json["prompt_ids"]);
    let n = json["new_tokens"].as_u64().unwrap() as usize;
    let f32_logits = &reference["logits.F32"];
    for q in QUANTS {
        let want = &reference[&format!("logits.{q}")];
        let t = &json["transformers"][q];
        let want_tokens = ids(&t["generated_ids"]);
        let margin = t["greedy_top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);

        let (st, st_tokens) = run_text(&mut safetensors_text_model(q, &json), &prompt, n);
        let (deq, deq_tokens) = run_text(&mut gguf_text_model(q, true), &prompt, n);
        let (qmm, qmm_tokens) = run_text(&mut gguf_text_model(q, false), &prompt, n);
        let (d_st, d_deq, d_qmm) = (
            rel_diff(&st, want),
            rel_diff(&deq, want),
            rel_diff(&qmm, want),
        );
        eprintln!(
            "{q}: vs transformers, max logit difference of max|logit| ({:.3}): safetensors path {d_st:.3e}, \
             GGUF dequantized {d_deq:.3e}, GGUF quantized matmuls {d_qmm:.3e}; smallest greedy margin {margin:.3}; \
             tokens {deq_tokens:?} (quantized {qmm_tokens:?}) vs {want_tokens:?}; \
             the quantization itself moved transformers' logits {:.3e} from the f32 GGUF",
            max_abs(want),
            rel_diff(want, f32_logits)
        );
        // Our two paths on the same weights: the GGUF one (interleaved RoPE on permuted rows)
        // and the safetensors one (HF layout).
        let d_paths = rel_diff(&deq, &st);
        assert!(d_paths < 1e-5, "{q} GGUF vs safetensors path: {d_paths}");
        assert!(d_st < 1e-4, "{q} safetensors path: {d_st}");
        assert!(d_deq < 1e-4, "{q} GGUF dequantized: {d_deq}");
        assert!(d_qmm < 5e-2, "{q} GGUF quantized matmuls: {d_qmm}");
        assert_eq!(st_tokens, want_tokens, "{q} safetensors path tokens");
        assert_eq!(deq_tokens, want_tokens, "{q} GGUF dequantized tokens");
    }
}

/// Builds one of the fixture's text models.
type MakeModel = fn(&str, &serde_json::Value) -> TextModel;

/// Decode-step logits of `model` for each of `tokens` after `prompt` (teacher-forced).
fn step_logits(model: &mut TextModel, prompt: &[u32], tokens: &[u32]) -> Vec<Tensor> {
    model.clear_cache();
    model.forward_ids(prompt, false).unwrap();
    tokens
        .iter()
        .map(|&t| model.forward_ids(&[t], false).unwrap())
        .collect()
}

/// The fused one-token CPU step (plain slices, the input quantized once per projection group)
/// against the same step through candle's ops, on every weight path: safetensors f32, GGUF
/// dequantized, GGUF on quantized kernels (Q4_K, Q6_K, Q5_0, Q5_1, Q8_0 rows of this fixture).
#[test]
fn fused_decode_steps_match_candle_ops() {
    let json = reference_json();
    let prompt = ids(&json["prompt_ids"]);
    let tokens: Vec<u32> = (0..12u32).map(|i| (i * 37 + 5) % 200).collect();
    for q in QUANTS {
        let models: [(&str, MakeModel); 3] = [
            ("safetensors", safetensors_text_model),
            ("gguf dequantized", |q, _| gguf_text_model(q, true)),
            ("gguf quantized", |q, _| gguf_text_model(q, false)),
        ];
        for (name, make) in models {
            let mut fused = make(q, &json);
            let mut plain = make(q, &json);
            plain.use_unfused_decode();
            let a = step_logits(&mut fused, &prompt, &tokens);
            let b = step_logits(&mut plain, &prompt, &tokens);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(a, b)| rel_diff(a, b))
                .fold(0f32, f32::max);
            eprintln!("{q} {name}: fused vs candle ops, worst step logit difference {worst:.3e} of max|logit|");
            // In f32 only the order of sums differs. With 8-bit activations a 1e-7 change can
            // move one element across a rounding boundary: measured here, Q4_K_S's steps 0-5
            // are bit-identical and step 6 moves 1.2e-2 (one flip, fading as later steps
            // attend to it), the size of the quantized path's own error (bound 5e-2 above).
            let bound = if name == "gguf quantized" { 5e-2 } else { 1e-5 };
            assert!(
                worst < bound,
                "{q} {name}: fused decode step differs by {worst}"
            );
            let top = |v: &[Tensor]| -> Vec<u32> {
                v.iter()
                    .map(|t| {
                        t.squeeze(0)
                            .unwrap()
                            .argmax(0)
                            .unwrap()
                            .to_scalar()
                            .unwrap()
                    })
                    .collect()
            };
            assert_eq!(top(&a), top(&b), "{q} {name}: greedy choices");
            // The fused step splits its rows and heads over a team of rayon's thread count;
            // every row is the same sum whoever computes it, so any count gives the same bits.
            for threads in [1usize, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut m = make(q, &json);
                let c = pool.install(|| step_logits(&mut m, &prompt, &tokens));
                for (step, (a, c)) in a.iter().zip(&c).enumerate() {
                    let (a, c): (Vec<f32>, Vec<f32>) = (
                        a.flatten_all().unwrap().to_vec1().unwrap(),
                        c.flatten_all().unwrap().to_vec1().unwrap(),
                    );
                    assert!(
                        a == c,
                        "{q} {name}: step {step} on {threads} threads differs from the default pool's"
                    );
                }
            }
        }
    }
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

fn vlm(q: &str, dequantize: bool) -> Box<dyn VisionLanguageModel> {
    let opts = LoadOptions {
        mmproj: Some(mmproj_gguf()),
        gguf_dequantize: dequantize,
        ..Default::default()
    };
    load_model(text_gguf(q).to_str().unwrap(), &opts).unwrap()
}

#[test]
fn q4_k_m_runs_as_a_vision_language_model_with_its_mmproj() {
    let mut logits = Vec::new();
    for dequantize in [true, false] {
        let mut m = vlm("Q4_K_M", dequantize);
        assert_eq!(m.family(), "SmolVLM2");
        let groups = m.encode_frames(&frames()).unwrap();
        let clip = Clip::new(groups).with_video(Some(2.0), Some(2.0));
        let q = "What happens in this video?";
        logits.push(m.prompt_logits(&clip, q).unwrap().logits);
        let params = GenerationParams {
            max_new_tokens: 6,
            temperature: 0.0,
            ..Default::default()
        };
        let g = m.generate(&clip, q, &params, &mut |_| {}).unwrap();
        assert!(!g.token_ids.is_empty());
    }
    let d = rel_diff(&logits[1], &logits[0]);
    eprintln!("Q4_K_M video prompt: quantized matmuls vs dequantized {d:.3e} of max|logit|");
    assert!(d < 5e-2, "{d}");
}

/// A copy of the Q4_K_M file with one tensor's type id in the header set to `id`.
fn with_tensor_type(tensor: &str, id: u32) -> tempfile::NamedTempFile {
    let mut bytes = std::fs::read(text_gguf("Q4_K_M")).unwrap();
    // A tensor info: u64 name length, name, u32 dims, u64 per dim, u32 type, u64 offset.
    let mut key = (tensor.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(tensor.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("the tensor's info");
    let dims_at = at + key.len();
    let dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    let type_at = dims_at + 4 + 8 * dims;
    bytes[type_at..type_at + 4].copy_from_slice(&id.to_le_bytes());
    let f = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
    std::fs::write(f.path(), &bytes).unwrap();
    f
}

#[test]
fn an_unsupported_tensor_type_is_a_typed_error_naming_it() {
    // IQ4_NL (20) is what llama-quantize's IQ mixes fall back to; candle has no decoder for it.
    let f = with_tensor_type("blk.1.attn_k.weight", 20);
    let Err(e) = vidlm_models::gguf::open(f.path()) else {
        panic!("the file opened");
    };
    match &e {
        ModelError::UnsupportedGgmlType {
            tensor, ggml_type, ..
        } => {
            assert_eq!(tensor, "blk.1.attn_k.weight");
            assert_eq!(ggml_type, "IQ4_NL (20)");
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("Q4_K") && !msg.contains('\n'), "{msg}");
    // Through the model loader too, and for an id ggml does not define.
    let f = with_tensor_type("output.weight", 77);
    let opts = LoadOptions {
        mmproj: Some(mmproj_gguf()),
        ..Default::default()
    };
    let e = load_model(f.path().to_str().unwrap(), &opts)
        .err()
        .expect("fails");
    assert!(
        matches!(&e, ModelError::UnsupportedGgmlType { tensor, ggml_type, .. }
            if tensor == "output.weight" && ggml_type == "unknown (77)"),
        "{e}"
    );
}
