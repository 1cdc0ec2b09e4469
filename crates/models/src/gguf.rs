//! llama.cpp's GGUF files: reading one ([`open`], which also catches a file cut short), its
//! tokenizer ([`tokenizer`]), finding a vision-language model's text file and mmproj as llama.cpp
//! users give them ([`GgufFiles::find`]; [`crate::load_model`] loads them, SmolVLM2's through
//! [`crate::smolvlm::gguf`]), and a llama-architecture chat model from one text GGUF
//! ([`GgufChatModel`], e.g. SmolLM2-135M-Instruct, the language model of SmolVLM2-256M; checked
//! against transformers in `tests/smollm2_gguf.rs`): quantized weights through
//! [`crate::llama_text::TextModel`] (the same decoder SmolVLM uses), the tokenizer and chat
//! template from the GGUF metadata.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::Device;

use crate::generation::{decode_loop, Decoded};
use crate::llama_text::{TextConfig, TextModel};
use crate::{GenerationParams, ModelError};

/// Opens a GGUF file and reads its header (metadata and tensor index); the file is returned for
/// reading tensors.
///
/// # Errors
/// [`ModelError::File`] when the file is missing, unreadable, not GGUF or cut short.
///
/// ```no_run
/// let (ct, _file) = vidlm_models::gguf::open("SmolVLM2-256M-Video-Instruct-Q8_0.gguf".as_ref())?;
/// println!("{:?}", vidlm_models::gguf::meta_str(&ct, "general.architecture"));
/// # Ok::<(), vidlm_models::ModelError>(())
/// ```
pub fn open(path: &Path) -> Result<(gguf_file::Content, std::fs::File), ModelError> {
    let file_err = |reason: String| ModelError::File {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
    let ct =
        gguf_file::Content::read(&mut f).map_err(|e| file_err(format!("not a GGUF file: {e}")))?;
    // A file cut short keeps its header; every tensor must lie inside it.
    let len = f.metadata().map_err(|e| file_err(e.to_string()))?.len();
    for (name, info) in &ct.tensor_infos {
        let size =
            info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = ct.tensor_data_offset + info.offset + size as u64;
        if end > len {
            return Err(file_err(format!(
                "truncated: tensor `{name}` ends at byte {end}, the file has {len}"
            )));
        }
    }
    Ok((ct, f))
}

/// A string metadata value, if present and a string.
pub fn meta_str<'a>(ct: &'a gguf_file::Content, key: &str) -> Option<&'a str> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
}

/// The tokenizer in a GGUF file's `tokenizer.ggml.*` metadata (`path` names it in errors).
///
/// # Errors
/// [`ModelError::Tokenizer`] when the metadata holds no usable tokenizer.
pub fn tokenizer(
    ct: &gguf_file::Content,
    path: &Path,
) -> Result<tokenizers::Tokenizer, ModelError> {
    let mut tokenizer = tokenizers::Tokenizer::from_gguf(ct)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    // candle's builder gives unknown `tokenizer.ggml.pre` values (SmolLM2's "smollm") a
    // byte-level pre-tokenizer that adds a prefix space; the GGUF says whether to
    // (`add_space_prefix`), and transformers follows it: byte-level split, no prefix space.
    let add_prefix = ct
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let pre = meta_str(ct, "tokenizer.ggml.pre").unwrap_or("gpt2");
    if !matches!(pre, "qwen2" | "llama3" | "smaug-bpe" | "lfm2") {
        tokenizer.with_pre_tokenizer(Some(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(add_prefix, true, true),
        ));
    }
    Ok(tokenizer)
}

/// A GGUF chat model: decoder, tokenizer, stop ids and chat template.
pub struct GgufChatModel {
    /// The decoder (quantized matmuls, or dequantized f32 ones).
    pub model: TextModel,
    /// The config read from the metadata.
    pub config: TextConfig,
    /// The tokenizer built from `tokenizer.ggml.*`.
    pub tokenizer: tokenizers::Tokenizer,
    /// `tokenizer.chat_template`, when the file has one.
    pub chat_template: Option<String>,
    /// Ids that end a reply (eos and `<|im_end|>` when present).
    pub stop_ids: Vec<u32>,
}

impl std::fmt::Debug for GgufChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufChatModel")
            .field("config", &self.config)
            .finish()
    }
}

impl GgufChatModel {
    /// Loads `path`. With `dequantize` every weight is expanded to f32 once, at load (what
    /// transformers does with `gguf_file=`); otherwise matmuls run on the quantized blocks (candle's
    /// `QMatMul`, which quantizes activations to 8 bits on CPU: faster, not bit-identical).
    ///
    /// # Errors
    /// [`ModelError::File`] when the file is missing or not GGUF, [`ModelError::Invalid`] for
    /// another architecture or a missing tensor/key.
    pub fn load(path: &Path, device: &Device, dequantize: bool) -> Result<Self, ModelError> {
        let (ct, mut f) = open(path)?;
        let (model, config) = TextModel::from_gguf(&ct, &mut f, device, dequantize)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        let tokenizer = tokenizer(&ct, path)?;
        let chat_template = meta_str(&ct, "tokenizer.chat_template").map(str::to_owned);
        let mut stop_ids = config.eos_ids();
        if let Some(id) = tokenizer.token_to_id("<|im_end|>") {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
            }
        }
        Ok(Self {
            model,
            config,
            tokenizer,
            chat_template,
            stop_ids,
        })
    }

    /// Token ids of `text` (special tokens in the text are recognized; nothing is added).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] when encoding fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Generates after `prompt_ids` from an empty cache, stopping on [`GgufChatModel::stop_ids`].
    ///
    /// # Errors
    /// [`ModelError::Input`] past the context; others on failed ops.
    pub fn generate(
        &mut self,
        prompt_ids: &[u32],
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Decoded, ModelError> {
        self.model.clear_cache();
        let first = self.model.forward_ids(prompt_ids, false)?.squeeze(0)?;
        let model = &mut self.model;
        let mut step = |t: u32| Ok(model.forward_ids(&[t], false)?.squeeze(0)?);
        decode_loop(
            first,
            prompt_ids,
            params,
            &self.stop_ids,
            &self.tokenizer,
            &mut step,
            on_text,
        )
    }
}

/// A llama.cpp vision-language model on disk: the text GGUF and its `mmproj` GGUF (the vision
/// tower and projector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufFiles {
    /// The text model (`general.architecture` of a decoder, e.g. `llama`).
    pub text: PathBuf,
    /// The vision projector (`general.architecture` `clip`).
    pub mmproj: PathBuf,
}

impl GgufFiles {
    /// The GGUF files `spec` names, as llama.cpp users give them: a `.gguf` text file with
    /// `mmproj` (or, without it, the one `mmproj*.gguf` next to it, or among several the one named
    /// `mmproj-<text file name>`), or a directory holding one text `.gguf` and its `mmproj*.gguf`. `None` when `spec` is not GGUF at all (a checkpoint
    /// directory with a `config.json`, or a hub id) and no `mmproj` is given.
    ///
    /// # Errors
    /// [`ModelError::File`] when the mmproj is missing or ambiguous, or `mmproj` is given with a
    /// model that is not GGUF.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// for f in ["SmolVLM2-256M-Video-Instruct-Q8_0.gguf", "mmproj-SmolVLM2-256M-Video-Instruct-Q8_0.gguf"] {
    ///     std::fs::write(dir.path().join(f), b"")?;
    /// }
    /// let files = vidlm_models::gguf::GgufFiles::find(dir.path(), None)?.unwrap();
    /// assert!(files.mmproj.ends_with("mmproj-SmolVLM2-256M-Video-Instruct-Q8_0.gguf"));
    /// assert!(vidlm_models::gguf::GgufFiles::find("HuggingFaceTB/SmolVLM2-256M-Video-Instruct".as_ref(), None)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find(spec: &Path, mmproj: Option<&Path>) -> Result<Option<Self>, ModelError> {
        let is_gguf = |p: &Path| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        };
        let is_mmproj = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.to_ascii_lowercase().starts_with("mmproj"))
        };
        let list = |dir: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && is_gguf(p))
                .collect();
            v.sort();
            v
        };
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let one = |v: Vec<PathBuf>, dir: &Path, what: &str| -> Result<PathBuf, ModelError> {
            match v.len() {
                1 => Ok(v.into_iter().next().expect("one")),
                0 => Err(ModelError::File {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "no {what} .gguf file here (a GGUF text model needs its vision projector: pass it with --mmproj)"
                    ),
                }),
                _ => Err(ModelError::File {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "several {what} .gguf files, name one (--mmproj for the projector): {}",
                        names(&v)
                    ),
                }),
            }
        };
        let text = if spec.is_dir() && !spec.join("config.json").is_file() && !list(spec).is_empty()
        {
            let texts: Vec<PathBuf> = list(spec).into_iter().filter(|p| !is_mmproj(p)).collect();
            one(texts, spec, "text model")?
        } else if is_gguf(spec) {
            spec.to_path_buf()
        } else if let Some(m) = mmproj {
            return Err(ModelError::File {
                path: m.to_path_buf(),
                reason: format!(
                    "an mmproj goes with a .gguf text model, and {} is not one",
                    spec.display()
                ),
            });
        } else {
            return Ok(None);
        };
        if !text.is_file() {
            return Err(ModelError::File {
                path: text,
                reason: "no such file".into(),
            });
        }
        let mmproj = match mmproj {
            Some(m) if m.is_file() => m.to_path_buf(),
            Some(m) => {
                return Err(ModelError::File {
                    path: m.to_path_buf(),
                    reason: "no such mmproj file".into(),
                })
            }
            None => {
                let dir = text.parent().unwrap_or(Path::new("."));
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                let mut found: Vec<PathBuf> =
                    list(dir).into_iter().filter(|p| is_mmproj(p)).collect();
                // Several (one per quantization, as hub repositories hold): the one named after
                // the text file, `mmproj-<text file name>`, when there is one.
                let twin = text
                    .file_name()
                    .map(|n| format!("mmproj-{}", n.to_string_lossy()).to_ascii_lowercase());
                if let Some(t) = found.iter().find(|p| {
                    p.file_name()
                        .is_some_and(|n| Some(n.to_string_lossy().to_ascii_lowercase()) == twin)
                }) {
                    found = vec![t.clone()];
                }
                one(found, dir, "mmproj")?
            }
        };
        Ok(Some(Self { text, mmproj }))
    }
}
