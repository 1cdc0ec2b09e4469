//! Where a model's files come from: a local directory, or a Hugging Face hub id resolved through
//! `hf-hub` into the standard HF cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), the same layout `huggingface-cli download` and transformers use.
//! `HF_HUB_OFFLINE=1` forbids network access: only cached files are used.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// Files a model directory needs besides its weights.
const REQUIRED: &[&str] = &["config.json", "tokenizer.json"];
/// Files used when present (processor settings, chat template, generation defaults).
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "special_tokens_map.json",
];

/// True when `spec` has the shape of a hub id (`owner/name`, no path-like prefix).
pub fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The HF hub cache directory, as the Python tools compute it.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    hf_hub::Cache::from_env().path().clone()
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Resolves `--model`: an existing directory is used as is; a hub id (`owner/name`) is looked up
/// in the HF cache and, unless `HF_HUB_OFFLINE` is set, downloaded into it. Returns the directory
/// holding the model's files (for a hub id, its snapshot directory in the cache).
///
/// # Errors
/// [`ModelError::File`] when a local path does not exist or is not a directory, or when a hub
/// model is not cached and cannot be downloaded; that message is one line with the command that
/// downloads it.
///
/// ```
/// let err = vidlm_models::hub::resolve("/nonexistent/model-dir").unwrap_err();
/// assert!(err.to_string().contains("/nonexistent/model-dir"));
/// ```
pub fn resolve(spec: &str) -> Result<PathBuf, ModelError> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(ModelError::File {
            path: path.to_path_buf(),
            reason: "not a model directory (expected a directory with config.json and weights)"
                .into(),
        });
    }
    if !looks_like_hub_id(spec) {
        return Err(ModelError::File {
            path: path.to_path_buf(),
            reason: "no such model directory (and not a hub id of the form owner/name)".into(),
        });
    }
    if let Some(dir) = cached_snapshot(spec) {
        return Ok(dir);
    }
    let hint =
        format!("download it with `huggingface-cli download {spec}` (or `hf download {spec}`)");
    let cache = cache_dir();
    if offline() {
        return Err(ModelError::File {
            path: cache,
            reason: format!(
                "model {spec} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
            ),
        });
    }
    download(spec, &cache).map_err(|why| ModelError::File {
        path: cache.clone(),
        reason: format!(
            "model {spec} is not in the Hugging Face cache and the hub cannot be reached ({}); {hint}",
            crate::error_line(&why)
        ),
    })
}

/// The cached snapshot directory of `id` when its config, tokenizer and weights are all there.
pub fn cached_snapshot(id: &str) -> Option<PathBuf> {
    let cache = hf_hub::Cache::new(cache_dir());
    let repo = cache.model(id.to_string());
    let config = repo.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    let complete = REQUIRED.iter().all(|f| dir.join(f).is_file()) && weights_complete(&dir);
    complete.then_some(dir)
}

fn weights_complete(dir: &Path) -> bool {
    crate::Checkpoint::new(dir).weight_files().is_ok()
}

fn download(id: &str, cache: &Path) -> Result<PathBuf, String> {
    use std::io::IsTerminal;
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(1)
        .build()
        .map_err(|e| e.to_string())?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for f in REQUIRED {
        let p = repo.get(f).map_err(|e| e.to_string())?;
        dir = p.parent().map(Path::to_path_buf);
    }
    for f in OPTIONAL {
        // Absent on the hub for many checkpoints: not an error.
        let _ = repo.get(f);
    }
    if repo.get("model.safetensors").is_err() {
        let index = repo
            .get("model.safetensors.index.json")
            .map_err(|e| format!("no model.safetensors nor index: {e}"))?;
        let shards = crate::checkpoint::read_json(&index)
            .and_then(|v| crate::checkpoint::index_shards(&v, &index))
            .map_err(|e| e.to_string())?;
        for s in shards {
            repo.get(&s).map_err(|e| e.to_string())?;
        }
    }
    dir.ok_or_else(|| "no files".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_id_shape() {
        assert!(looks_like_hub_id(
            "HuggingFaceTB/SmolVLM2-256M-Video-Instruct"
        ));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("/abs/dir"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("name"));
    }
}
