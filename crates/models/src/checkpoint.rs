//! A checkpoint directory as every model family reads it: `config.json` and the other JSON files
//! (each read and parsed at most once), the chat template, and the safetensors weights (one file
//! or the shards an index names, with one precedence rule).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::ModelError;

/// A model directory (local, or a hub snapshot [`crate::hub::resolve`] found), whose JSON files
/// are read lazily and kept: the loader reads `config.json` once however many parts of the model
/// look at it.
///
/// ```no_run
/// let ckpt = vidlm_models::Checkpoint::open("HuggingFaceTB/SmolVLM2-256M-Video-Instruct")?;
/// println!("{:?} in {}", ckpt.model_type()?, ckpt.dir().display());
/// # Ok::<(), vidlm_models::ModelError>(())
/// ```
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    // A loader runs on one thread; the cache only spares re-reading files.
    json: RefCell<HashMap<String, Option<Value>>>,
}

impl Checkpoint {
    /// The checkpoint `spec` names: a local directory, or a hub id resolved through the local
    /// Hugging Face cache (downloading when the hub is reachable).
    ///
    /// # Errors
    /// [`ModelError::File`] for a missing directory or an unreachable hub.
    pub fn open(spec: &str) -> Result<Self, ModelError> {
        Ok(Self::new(crate::hub::resolve(spec)?))
    }

    /// The checkpoint in `dir` (nothing is read yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            json: RefCell::default(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The parsed JSON file `name` of the directory, `None` when it does not exist.
    ///
    /// # Errors
    /// [`ModelError::File`] when it exists but cannot be read or is not JSON.
    pub fn json(&self, name: &str) -> Result<Option<Value>, ModelError> {
        if let Some(v) = self.json.borrow().get(name) {
            return Ok(v.clone());
        }
        let path = self.path(name);
        let v = if path.is_file() {
            Some(read_json(&path)?)
        } else {
            None
        };
        self.json.borrow_mut().insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// `config.json`.
    ///
    /// # Errors
    /// [`ModelError::File`] when it is missing, unreadable or not JSON.
    pub fn config(&self) -> Result<Value, ModelError> {
        self.json("config.json")?.ok_or_else(|| ModelError::File {
            path: self.path("config.json"),
            reason: "missing (a model directory needs its config.json)".into(),
        })
    }

    /// `config.json`'s `model_type`, which picks the family ([`crate::load::FAMILIES`]).
    ///
    /// # Errors
    /// As [`Self::config`].
    pub fn model_type(&self) -> Result<Option<String>, ModelError> {
        Ok(self
            .config()?
            .get("model_type")
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    /// The chat template, found as transformers 5 finds a processor's: `chat_template.jinja`, else
    /// `chat_template.json` (`{"chat_template": ...}`), else the `chat_template` key of
    /// `processor_config.json`, else of `tokenizer_config.json`. A list of named templates
    /// (`[{"name": "default", "template": ...}]`) yields the one named `default`. `Ok(None)` when
    /// the directory has none.
    ///
    /// # Errors
    /// [`ModelError::File`] when one of those files exists but cannot be read or parsed.
    pub fn chat_template(&self) -> Result<Option<String>, ModelError> {
        let jinja = self.path("chat_template.jinja");
        if jinja.is_file() {
            return std::fs::read_to_string(&jinja)
                .map(Some)
                .map_err(|e| ModelError::File {
                    path: jinja,
                    reason: e.to_string(),
                });
        }
        for name in [
            "chat_template.json",
            "processor_config.json",
            "tokenizer_config.json",
        ] {
            if let Some(t) = self
                .json(name)?
                .as_ref()
                .and_then(|j| j.get("chat_template"))
                .and_then(template_from_value)
            {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// `generation_config.json`'s eos ids (none when the file is absent or has none).
    ///
    /// # Errors
    /// [`ModelError::File`] when the file exists but is not JSON.
    pub fn generation_eos_ids(&self) -> Result<Vec<u32>, ModelError> {
        Ok(self
            .json("generation_config.json")?
            .map(|v| crate::generation::eos_ids(v.get("eos_token_id")))
            .unwrap_or_default())
    }

    /// The safetensors files: `model.safetensors` when present (transformers' precedence), else
    /// the shards `model.safetensors.index.json` names, sorted and each once.
    ///
    /// # Errors
    /// [`ModelError::File`] when neither exists, the index is malformed, or a shard is missing.
    pub fn weight_files(&self) -> Result<Vec<PathBuf>, ModelError> {
        let single = self.path("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = self.path("model.safetensors.index.json");
        if !index.is_file() {
            return Err(ModelError::File {
                path: single,
                reason: "missing (and no model.safetensors.index.json either)".into(),
            });
        }
        let paths: Vec<PathBuf> = index_shards(&read_json(&index)?, &index)?
            .into_iter()
            .map(|n| self.dir.join(n))
            .collect();
        if let Some(p) = paths.iter().find(|p| !p.is_file()) {
            return Err(ModelError::File {
                path: p.clone(),
                reason: "shard named by model.safetensors.index.json is missing".into(),
            });
        }
        Ok(paths)
    }

    /// The weights, memory-mapped, as a candle `VarBuilder` backend whose errors name the file and
    /// tensor.
    ///
    /// # Errors
    /// As [`Self::weight_files`], and [`ModelError::File`] for a file that is not safetensors.
    pub fn tensors(&self) -> Result<Tensors, ModelError> {
        Tensors::open(&self.dir, self.weight_files()?)
    }
}

/// The shard file names of a parsed `model.safetensors.index.json`, sorted and each once.
///
/// # Errors
/// [`ModelError::File`] naming `path` when there is no `weight_map` object.
pub(crate) fn index_shards(index: &Value, path: &Path) -> Result<Vec<String>, ModelError> {
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| ModelError::File {
            path: path.to_path_buf(),
            reason: "no `weight_map` object".into(),
        })?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn template_from_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Reads and parses a JSON file, with errors naming the file.
pub(crate) fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::File {
        path: path.to_owned(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Memory-mapped safetensors files (one or the shards of an index) as a candle `VarBuilder`
/// backend that names the file and tensor in its errors.
pub struct Tensors {
    files: Vec<(PathBuf, candle_core::safetensors::MmapedSafetensors)>,
    route: HashMap<String, usize>,
    dir: PathBuf,
}

impl std::fmt::Debug for Tensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensors")
            .field("dir", &self.dir)
            .field("tensors", &self.route.len())
            .finish()
    }
}

impl Tensors {
    fn open(dir: &Path, paths: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut route = HashMap::new();
        for p in paths {
            // SAFETY: the file is mapped read-only; like every safetensors loader we rely on it not
            // being truncated while the model is alive.
            let st =
                unsafe { candle_core::safetensors::MmapedSafetensors::new(&p) }.map_err(|e| {
                    ModelError::File {
                        path: p.clone(),
                        reason: format!("not a safetensors file: {e}"),
                    }
                })?;
            for (name, _) in st.tensors() {
                route.insert(name, files.len());
            }
            files.push((p, st));
        }
        Ok(Self {
            files,
            route,
            dir: dir.to_path_buf(),
        })
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.route.contains_key(name)
    }
}

impl candle_nn::var_builder::SimpleBackend for Tensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            let file = &self.files[self.route[name]].0;
            candle_core::bail!(
                "{}: tensor `{name}` has shape {:?}, the config needs {:?}",
                file.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.route.get(name) {
            Some(&i) => {
                let (path, st) = &self.files[i];
                st.load(name, dev)
                    .and_then(|t| t.to_dtype(dtype))
                    .map_err(|e| {
                        candle_core::Error::Msg(format!("{}: tensor `{name}`: {e}", path.display()))
                    })
            }
            None => candle_core::bail!(
                "{}: tensor `{name}` is missing from the checkpoint",
                self.dir.display()
            ),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn single_file_wins_over_index_and_shards_are_deduplicated() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = Checkpoint::new(tmp.path());
        let err = ckpt.weight_files().unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");

        write(
            tmp.path(),
            "model.safetensors.index.json",
            r#"{"weight_map": {"a": "b.safetensors", "b": "a.safetensors", "c": "b.safetensors"}}"#,
        );
        let err = ckpt.weight_files().unwrap_err().to_string();
        assert!(
            err.contains("a.safetensors") && err.contains("missing"),
            "{err}"
        );
        write(tmp.path(), "a.safetensors", "");
        write(tmp.path(), "b.safetensors", "");
        let names: Vec<_> = ckpt
            .weight_files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.safetensors", "b.safetensors"]);

        write(tmp.path(), "model.safetensors", "");
        assert_eq!(
            ckpt.weight_files().unwrap(),
            vec![tmp.path().join("model.safetensors")]
        );
    }

    #[test]
    fn json_is_read_once_and_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Checkpoint::new(tmp.path())
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
        write(tmp.path(), "config.json", r#"{"model_type": "smolvlm"}"#);
        let ckpt = Checkpoint::new(tmp.path());
        assert_eq!(ckpt.model_type().unwrap().as_deref(), Some("smolvlm"));
        // Cached: a rewrite after the first read is not seen.
        write(tmp.path(), "config.json", r#"{"model_type": "qwen3_vl"}"#);
        assert_eq!(ckpt.model_type().unwrap().as_deref(), Some("smolvlm"));

        write(tmp.path(), "generation_config.json", "{not json");
        let err = ckpt.generation_eos_ids().unwrap_err().to_string();
        assert!(
            err.contains("generation_config.json") && err.contains("JSON"),
            "{err}"
        );
    }

    #[test]
    fn chat_template_precedence() {
        let tmp = tempfile::tempdir().unwrap();
        let found = |dir: &Path| Checkpoint::new(dir).chat_template().unwrap();
        assert_eq!(found(tmp.path()), None);
        write(
            tmp.path(),
            "tokenizer_config.json",
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        assert_eq!(found(tmp.path()).as_deref(), Some("D"));
        write(tmp.path(), "chat_template.jinja", "J");
        assert_eq!(found(tmp.path()).as_deref(), Some("J"));
    }
}
