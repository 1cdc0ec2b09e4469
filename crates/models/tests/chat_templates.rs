//! The published chat templates of SmolVLM2 (256M, 500M and 2.2B share one) and Qwen3-VL (Instruct
//! and Thinking), rendered by [`ChatTemplate`] over conversations with a system turn, images,
//! videos, several turns, tool calls and tool responses, byte-equal to what transformers'
//! `apply_chat_template` renders (tests/fixtures/chat-templates/renders.json, made by
//! tools/make_fidelity_fixtures.py; the templates' sources are in README-fidelity.md).

use std::path::{Path, PathBuf};

use vidlm_models::chat_template::ChatTemplate;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat-templates")
}

#[test]
fn published_templates_render_as_transformers() {
    let renders: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("renders.json")).unwrap())
            .unwrap();
    let cases = renders["cases"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for case in cases {
        let file = case["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir().join(file)).unwrap();
        let template = ChatTemplate::new(&source).unwrap();
        // transformers' rendering context: the special tokens, `tools` and `documents` (None when
        // not given), the extra keyword arguments; `messages` and `add_generation_prompt`.
        let mut extra = case["special_tokens"].as_object().unwrap().clone();
        extra.insert("tools".into(), case["tools"].clone());
        extra.insert("documents".into(), serde_json::Value::Null);
        for (k, v) in case["extra"].as_object().unwrap() {
            extra.insert(k.clone(), v.clone());
        }
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let got = template
            .render(&case["messages"], gen, &extra)
            .unwrap_or_else(|e| panic!("{file} / {}: {e}", case["conversation"]));
        assert_eq!(
            got,
            case["expected"].as_str().unwrap(),
            "{file} / {} (generation prompt {gen}, extra {})",
            case["conversation"],
            case["extra"]
        );
        seen.insert(file.to_string());
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(cases.len() >= 40, "{} renders", cases.len());
}

/// The Thinking template calls Python string methods on every user turn; without them it fails to
/// render at all (the failure this fixture guards against).
#[test]
fn thinking_template_needs_python_methods() {
    let source = std::fs::read_to_string(dir().join("qwen3vl-thinking.jinja")).unwrap();
    assert!(source.contains("content.startswith('<tool_response>')"));
    assert!(source.contains(".split('</think>')"));
    let t = ChatTemplate::new(&source).unwrap();
    let messages = serde_json::json!([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello."},
    ]);
    let got = t.render(&messages, true, &serde_json::Map::new()).unwrap();
    assert!(got.ends_with("<|im_start|>assistant\n<think>\n"), "{got:?}");
}
