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

/// A GGUF model on the hub, named as llama.cpp's `-hf` names one: `owner/name[:QUANT]` (e.g.
/// `ggml-org/SmolVLM2-256M-Video-Instruct-GGUF:Q8_0`). Returns the text model's file in the HF
/// cache (downloading it and the repository's mmproj files when the hub is reachable), for
/// [`crate::gguf::GgufFiles::find`] to pair with its projector; `Ok(None)` when `spec` is a
/// local path or a hub id whose repository holds no GGUF files (a safetensors checkpoint).
///
/// Without `:QUANT` the only text model is taken, else `Q4_K_M` (llama.cpp's default), else
/// `Q8_0`; otherwise the error lists the choices.
///
/// # Errors
/// [`ModelError::File`] when the quantization is not in the repository, the choice is ambiguous,
/// or the files are not cached and cannot be downloaded (one line with the download command).
///
/// ```no_run
/// let text = vidlm_models::hub::resolve_gguf("ggml-org/SmolVLM2-256M-Video-Instruct-GGUF:Q8_0")?;
/// assert!(text.is_some_and(|p| p.ends_with("SmolVLM2-256M-Video-Instruct-Q8_0.gguf")));
/// # Ok::<(), vidlm_models::ModelError>(())
/// ```
pub fn resolve_gguf(spec: &str) -> Result<Option<PathBuf>, ModelError> {
    if Path::new(spec).exists() {
        return Ok(None);
    }
    let (id, quant) = match spec.rsplit_once(':') {
        Some((id, q)) if looks_like_hub_id(id) && !q.is_empty() => (id, Some(q)),
        _ => (spec, None),
    };
    if !looks_like_hub_id(id) {
        return Ok(None);
    }
    let cached = snapshot_ggufs(id);
    let names = if !cached.is_empty() {
        cached
    } else if quant.is_some() || id.to_ascii_lowercase().ends_with("-gguf") {
        hub_ggufs(id)?
    } else {
        return Ok(None);
    };
    let file = pick_gguf(id, &names, quant)?;
    let mmprojs: Vec<&String> = names
        .iter()
        .filter(|n| n.to_ascii_lowercase().starts_with("mmproj"))
        .collect();
    let mut text = None;
    for name in std::iter::once(&file).chain(mmprojs) {
        let path = fetch_file(id, name)?;
        if *name == file {
            text = Some(path);
        }
    }
    Ok(text)
}

/// The `.gguf` file names of `id`'s cached snapshot (`refs/main`), empty when none is cached.
fn snapshot_ggufs(id: &str) -> Vec<String> {
    let repo = cache_dir().join(format!("models--{}", id.replace('/', "--")));
    let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) else {
        return Vec::new();
    };
    let dir = repo.join("snapshots").join(rev.trim());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    names.sort();
    names
}

/// The `.gguf` file names the hub lists for `id`.
fn hub_ggufs(id: &str) -> Result<Vec<String>, ModelError> {
    let hint = format!("download it with `hf download {id} --include '*.gguf'`");
    let cache = cache_dir();
    if offline() {
        return Err(ModelError::File {
            path: cache,
            reason: format!(
                "GGUF model {id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
            ),
        });
    }
    let listed = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.clone())
        .with_retries(1)
        .build()
        .and_then(|api| api.model(id.to_string()).info())
        .map_err(|e| ModelError::File {
            path: cache,
            reason: format!(
                "GGUF model {id} is not in the Hugging Face cache and the hub cannot be reached ({}); {hint}",
                crate::error_line(&e)
            ),
        })?;
    let mut names: Vec<String> = listed
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    names.sort();
    Ok(names)
}

/// The text model among `names` for `quant` (see [`resolve_gguf`]).
fn pick_gguf(id: &str, names: &[String], quant: Option<&str>) -> Result<String, ModelError> {
    let texts: Vec<&String> = names
        .iter()
        .filter(|n| !n.to_ascii_lowercase().starts_with("mmproj"))
        .collect();
    let tagged = |q: &str| -> Vec<&String> {
        let suffix = format!("-{}.gguf", q.to_ascii_lowercase());
        texts
            .iter()
            .copied()
            .filter(|n| n.to_ascii_lowercase().ends_with(&suffix))
            .collect()
    };
    let list = texts
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let chosen = match quant {
        Some(q) => tagged(q),
        None if texts.len() == 1 => texts.clone(),
        None => {
            let mut v = tagged("Q4_K_M");
            if v.is_empty() {
                v = tagged("Q8_0");
            }
            v
        }
    };
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(ModelError::File {
            path: PathBuf::from(id),
            reason: match quant {
                Some(q) => format!("no single {q} text model in the repository (it has: {list})"),
                None => format!("several text models, name one as {id}:QUANT (it has: {list})"),
            },
        }),
    }
}

/// `name` of `id` in the cache, downloaded when absent.
fn fetch_file(id: &str, name: &str) -> Result<PathBuf, ModelError> {
    let cache = hf_hub::Cache::new(cache_dir());
    if let Some(p) = cache.model(id.to_string()).get(name) {
        return Ok(p);
    }
    let hint = format!("download it with `hf download {id} {name}`");
    if offline() {
        return Err(ModelError::File {
            path: cache_dir(),
            reason: format!("{id}: {name} is not cached and HF_HUB_OFFLINE is set; {hint}"),
        });
    }
    use std::io::IsTerminal;
    hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache_dir())
        .with_progress(std::io::stderr().is_terminal())
        .with_retries(1)
        .build()
        .and_then(|api| api.model(id.to_string()).get(name))
        .map_err(|e| ModelError::File {
            path: cache_dir(),
            reason: format!(
                "{id}: {name} cannot be downloaded ({}); {hint}",
                crate::error_line(&e)
            ),
        })
}

#[cfg(test)]
mod gguf_tests {
    use super::pick_gguf;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quant_tags_pick_the_text_model_as_llama_cpp_does() {
        // The layout of ggml-org's SmolVLM2 GGUF repositories.
        let repo = names(&[
            "SmolVLM2-256M-Video-Instruct-Q4_K_M.gguf",
            "SmolVLM2-256M-Video-Instruct-Q8_0.gguf",
            "SmolVLM2-256M-Video-Instruct-f16.gguf",
            "mmproj-SmolVLM2-256M-Video-Instruct-Q8_0.gguf",
            "mmproj-SmolVLM2-256M-Video-Instruct-f16.gguf",
        ]);
        let pick = |q| pick_gguf("o/r", &repo, q).unwrap();
        assert_eq!(pick(Some("q8_0")), "SmolVLM2-256M-Video-Instruct-Q8_0.gguf");
        assert_eq!(pick(Some("F16")), "SmolVLM2-256M-Video-Instruct-f16.gguf");
        assert_eq!(pick(None), "SmolVLM2-256M-Video-Instruct-Q4_K_M.gguf");
        let e = pick_gguf("o/r", &repo, Some("Q5_K_M"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Q5_K_M") && e.contains("Q8_0.gguf"), "{e}");
        // One text model: taken whatever its type; none with a tag: the error names the tag.
        let one = names(&["m-Q6_K.gguf", "mmproj-m-f16.gguf"]);
        assert_eq!(pick_gguf("o/r", &one, None).unwrap(), "m-Q6_K.gguf");
        let two = names(&["m-Q6_K.gguf", "m-Q5_0.gguf"]);
        let e = pick_gguf("o/r", &two, None).unwrap_err().to_string();
        assert!(e.contains("o/r:QUANT"), "{e}");
    }
}
