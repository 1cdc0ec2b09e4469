//! Likelihood scoring against transformers: each option letter's log-probability after the prompt,
//! for a video file through vidlm's decoder, the condition opener, the model's encoder and one
//! forward pass, within 1e-4 of transformers' on the tiny fixtures.
//!
//! Reference: tests/fixtures/likelihood-reference.json, made by tools/make_eval_likelihood_refs.py
//! (transformers 5.24, torchcodec, f32, eager attention).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vidlm_eval::conditions::{run_key, ConditionOpener, Route};
use vidlm_eval::run::{likelihood_scores, HfTokenizer, Target, Tokenize};
use vidlm_eval::Condition;
use vidlm_pipeline::SampleRequest;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures")
}

#[test]
fn option_logprobs_match_transformers() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/likelihood-reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let name = case["fixture"].as_str().unwrap();
        let clip = fixtures().join(case["clip"].as_str().unwrap());
        let row = serde_json::json!({
            "id": "q", "video": clip.to_string_lossy(), "question": reference["question"],
            "options": reference["options"], "answer": "A",
        });
        let (_, items) =
            vidlm_eval::suite::parse_suite(&format!("{row}\n"), "s", Path::new(".")).unwrap();
        // The prompt vidlm builds is lmms-eval's, as the reference script builds it.
        assert_eq!(items[0].prompt, reference["prompt_text"].as_str().unwrap());
        let spec = fixtures().join(name).to_string_lossy().into_owned();
        let tokenizer = HfTokenizer::for_model(&spec).unwrap();
        let ids: Vec<u32> = ["A", "B", "C", "D"]
            .iter()
            .map(|l| tokenizer.ids(l).unwrap()[0])
            .collect();
        let want_ids: Vec<u32> = case["letter_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want_ids, "{name}: letter tokens");
        let mut model =
            vidlm_models::load_model(&spec, &vidlm_models::LoadOptions::default()).unwrap();
        let key = run_key("q", Condition::Video);
        let routes = HashMap::from([(
            key.clone(),
            Route {
                video: items[0].video.clone(),
                item: "q".into(),
                condition: Condition::Video,
                window: None,
            },
        )]);
        let request = SampleRequest {
            strategy: case["vidlm_sample"].as_str().unwrap().into(),
            from: 0.0,
            to: None,
            max_frames: None,
            size: None,
        };
        let option_ids: Vec<Vec<u32>> = case["option_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ids| {
                ids.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect();
        for (o, want) in reference["options"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&option_ids)
        {
            assert_eq!(
                &tokenizer.ids(o.as_str().unwrap()).unwrap(),
                want,
                "{name}: {o}"
            );
        }
        assert!(
            option_ids.iter().any(|ids| ids.len() > 1),
            "an option of several tokens"
        );
        for (target, field) in [
            (Target::Letter, "logprobs"),
            (Target::Option, "option_logprobs"),
        ] {
            // A fresh opener per target: each serves its key once.
            let opener = ConditionOpener::new(routes.clone(), 0);
            let got = likelihood_scores(
                model.as_mut(),
                &tokenizer,
                &opener,
                &key,
                &items[0],
                &request,
                target,
            )
            .unwrap();
            let want: Vec<f64> = case[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f64::max);
            eprintln!("{name} {target:?}: max |vidlm - transformers| = {worst:.2e}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() < 1e-4,
                    "{name} {target:?}: {got:?} vs transformers {want:?}"
                );
            }
            // The options are not all equally likely (the check is not of a flat distribution).
            assert!(
                want.iter().any(|w| (w - want[0]).abs() > 1e-3),
                "{name}: {want:?}"
            );
        }
    }
}
