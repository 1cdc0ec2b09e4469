//! Real weights: SmolLM2-135M-Instruct (Q4_1 GGUF) through our llama decoder and the GGUF
//! tokenizer greedily completes the fixed chat prompt to the text transformers gives on the same
//! file (fixtures/smollm2-gguf-reference.json). transformers dequantizes GGUF weights to f32, so
//! the exact comparison runs our dequantized path; the quantized-matmul path (what the CLI uses for
//! speed: qgemv kernels on the stored blocks for decode steps) is checked on the first token and
//! on decode-step logits (within 5e-2 of max |logit|), and how far its tokens agree is reported.
//!
//! The GGUF is not in the repository: it is looked up at $VIDLM_SMOLLM2_GGUF,
//! /work/models/SmolLM2-135M-Instruct.Q4_1.gguf, target/models/, and otherwise fetched with
//! `../shared/models/fetch-smollm2.sh` into target/models/. When that fails the test prints why
//! and skips.

use std::path::{Path, PathBuf};

use candle_core::Device;
use vidlm_models::chat_template::ChatTemplate;
use vidlm_models::gguf::GgufChatModel;
use vidlm_models::GenerationParams;

mod common;
use common::ids;

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn find_gguf() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("VIDLM_SMOLLM2_GGUF") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/work/models").join(FILE));
    let cache = repo_root().join("target/models");
    candidates.push(cache.join(FILE));
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let script = repo_root().join("../shared/models/fetch-smollm2.sh");
    if !script.is_file() {
        return Err(format!(
            "{FILE} not found and {} is absent",
            script.display()
        ));
    }
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let dest = cache.join(FILE);
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(&dest)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() && dest.is_file() {
        Ok(dest)
    } else {
        Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ))
    }
}

fn reference() -> serde_json::Value {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2-gguf-reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn smollm2_gguf_greedy_matches_transformers() {
    let path = match find_gguf() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: no SmolLM2 GGUF ({why})");
            return;
        }
    };
    let r = reference();
    let mut m = GgufChatModel::load(&path, &Device::Cpu, true).unwrap();

    // The chat template from the GGUF metadata renders the reference prompt.
    let template = m.chat_template.clone().expect("GGUF has a chat template");
    let prompt = ChatTemplate::new(&template)
        .unwrap()
        .render(&r["messages"], true, &serde_json::Map::new())
        .unwrap();
    assert_eq!(prompt, r["prompt"].as_str().unwrap());
    let prompt_ids = m.encode(&prompt).unwrap();
    assert_eq!(prompt_ids, ids(&r["prompt_ids"]), "prompt ids");

    let params = GenerationParams {
        max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
        ..Default::default()
    };
    let mut streamed = String::new();
    let out = m
        .generate(&prompt_ids, &params, &mut |s| streamed.push_str(s))
        .unwrap();
    let mut expect = ids(&r["generated_ids"]);
    if expect.last().is_some_and(|t| m.stop_ids.contains(t)) {
        expect.pop();
    }
    assert_eq!(out.token_ids, expect, "generated ids");
    assert_eq!(out.text, r["generated_text"].as_str().unwrap());
    assert_eq!(streamed, out.text, "streamed text adds up to the answer");
    println!("dequantized f32 path: {:?}", out.text);

    // The quantized path: same first token, report how far it agrees.
    let mut q = GgufChatModel::load(&path, &Device::Cpu, false).unwrap();
    let qout = q.generate(&prompt_ids, &params, &mut |_| {}).unwrap();
    let same = qout
        .token_ids
        .iter()
        .zip(&expect)
        .take_while(|(a, b)| a == b)
        .count();
    println!(
        "quantized path (qgemv: Q4_1 x 8-bit activation blocks): {same}/{} tokens equal; text {:?}",
        expect.len(),
        qout.text
    );
    assert_eq!(
        qout.token_ids.first(),
        expect.first(),
        "quantized path first token"
    );

    // Decode-step logits (one row: the qgemv kernels on the stored blocks) against the
    // dequantized f32 path's, after the same prompt, for the first reference tokens. The only
    // difference is the 8-bit rounding of each activation row (the prompt itself runs through the
    // same dequantized gemm on both paths).
    let step_logits = |g: &mut GgufChatModel| -> Vec<Vec<f32>> {
        g.model.clear_cache();
        g.model.forward_ids(&prompt_ids, false).unwrap();
        expect
            .iter()
            .take(4)
            .map(|&t| {
                g.model
                    .forward_ids(&[t], false)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect()
    };
    let (lf, lq) = (step_logits(&mut m), step_logits(&mut q));
    let mut worst = 0f32;
    for (a, b) in lf.iter().zip(&lq) {
        let scale = a.iter().fold(1f32, |s, v| s.max(v.abs()));
        let d = a.iter().zip(b).fold(0f32, |d, (x, y)| d.max((x - y).abs()));
        worst = worst.max(d / scale);
    }
    println!(
        "decode-step logits, qgemv vs dequantized f32: max difference {worst:.3e} of max|logit|"
    );
    assert!(
        worst < 5e-2,
        "decode-step logits differ by {worst} of max|logit|"
    );
}
