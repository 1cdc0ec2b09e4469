//! `vidlm ask FILE` with the `--sample` that picks transformers' frames gives transformers' frame
//! times, prompt length and greedy tokens, for a SmolVLM2 and a Qwen3-VL checkpoint (references made
//! by tools/make_fidelity_fixtures.py from the same files; the library-level checks of ids and
//! logits for every published size are in crates/pipeline/tests/file_parity.rs).

mod common;

use common::{fixture_model, root, vidlm};

fn reference(name: &str) -> serde_json::Value {
    let path = root().join(format!(
        "crates/models/tests/fixtures/{name}.file-reference.json"
    ));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(name: &str, frames_per_group: usize) {
    let r = reference(name);
    let case = r["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "video_frames")
        .unwrap();
    let clip = root()
        .join("crates/models/tests/fixtures")
        .join(case["clip"].as_str().unwrap());
    let out = vidlm()
        .args(["ask", "--model", &fixture_model(name)])
        .arg(&clip)
        .arg(case["question"].as_str().unwrap())
        .args(["--sample", case["vidlm_sample"].as_str().unwrap()])
        .args([
            "--max-new-tokens",
            &r["max_new_tokens"].to_string(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // `frames` lists each group's start: every frame (SmolVLM2) or every pair's first (Qwen3-VL).
    let want: Vec<f64> = case["frame_times"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(frames_per_group)
        .map(|t| t.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9),
        "{name}: {got:?} vs {want:?}"
    );
    assert_eq!(v["usage"]["prompt_tokens"], case["seq_len"], "{name}");
    assert_eq!(v["token_ids"], case["greedy_ids"], "{name}: greedy tokens");
}

#[test]
fn ask_file_smolvlm2_matches_transformers() {
    check("smolvlm2-256m-tiny", 1);
}

#[test]
fn ask_file_qwen3vl_matches_transformers() {
    check("qwen3vl-8b-tiny", 2);
}
