//! llama.cpp's GGUF files: reading one ([`open`], which also catches a file cut short), its
//! tokenizer ([`tokenizer`]), finding a vision-language model's text file and mmproj as llama.cpp
//! users give them ([`GgufFiles::find`]; [`crate::load_model`] loads them, SmolVLM2's through
//! [`crate::smolvlm::gguf`]), and a llama-architecture chat model from one text GGUF
//! ([`GgufChatModel`], e.g. SmolLM2-135M-Instruct, the language model of SmolVLM2-256M; checked
//! against transformers in `tests/smollm2_gguf.rs`): quantized weights through
//! [`crate::llama_text::TextModel`] (the same decoder SmolVLM uses), the tokenizer and chat
//! template from the GGUF metadata.
//!
//! Tensor types: every type in [`SUPPORTED_TYPES`] loads, including the mixes `llama-quantize`
//! writes (Q4_K_M: Q4_K and Q6_K, and for rows whose length is not a multiple of 256, as
//! SmolVLM2-256M's 576, its fallbacks Q5_0, Q5_1 and Q8_0); another type (`IQ*`, `TQ*`, `MXFP4`,
//! ...) is a [`ModelError::UnsupportedGgmlType`] naming the tensor and the type.

use std::path::{Path, PathBuf};

use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;

use crate::generation::{decode_loop, Decoded};
use crate::llama_text::{TextConfig, TextModel};
use crate::{GenerationParams, ModelError};

/// Opens a GGUF file and reads its header (metadata and tensor index); the file is returned for
/// reading tensors.
///
/// # Errors
/// [`ModelError::File`] when the file is missing, unreadable, not GGUF or cut short;
/// [`ModelError::UnsupportedGgmlType`] naming the first tensor stored in a type vidlm cannot
/// decode (not in [`SUPPORTED_TYPES`]).
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
    let ct = match gguf_file::Content::read(&mut f) {
        Ok(ct) => ct,
        Err(e) => {
            // candle rejects a type it does not know without naming the tensor: find it.
            if let Ok(Some((tensor, id))) = first_unsupported_tensor(&mut f) {
                return Err(ModelError::UnsupportedGgmlType {
                    path: path.to_path_buf(),
                    tensor,
                    ggml_type: format!("{} ({id})", ggml_type_name(id).unwrap_or("unknown")),
                });
            }
            return Err(file_err(format!("not a GGUF file: {e}")));
        }
    };
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

/// The GGML tensor types vidlm decodes (candle's block formats), by llama.cpp's names. Every one
/// runs through candle's quantized matmul or is dequantized to f32 at load. Tested on fixtures
/// (`tests/smolvlm_gguf.rs`, `tests/smolvlm_gguf_k.rs`): F32, F16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_0,
/// Q5_1, Q6_K; BF16, Q2_K, Q3_K and Q5_K go through the same candle code without a fixture.
pub const SUPPORTED_TYPES: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K",
];

/// llama.cpp's name of a GGML tensor type id (`enum ggml_type` in ggml.h), `None` for an id it
/// does not define.
///
/// ```
/// assert_eq!(vidlm_models::gguf::ggml_type_name(12), Some("Q4_K"));
/// assert_eq!(vidlm_models::gguf::ggml_type_name(4), None); // Q4_2, long removed
/// ```
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 43] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0",
        "TQ2_0", "", "", "", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
    ];
    NAMES
        .get(id as usize)
        .copied()
        .filter(|name| !name.is_empty())
}

/// llama.cpp's name of a type candle reads (`Q4_K` where candle's `Debug` says `Q4K`).
pub fn dtype_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// The type ids candle reads (its `GgmlDType`): the supported types plus the two activation
/// formats (Q8_1, Q8_K) no model file uses.
fn candle_reads(id: u32) -> bool {
    matches!(id, 0..=3 | 6..=15 | 30)
}

/// Walks a GGUF header (metadata skipped) to the first tensor whose type candle does not read:
/// its name and type id. `Ok(None)` when there is none, an error when the header is malformed.
fn first_unsupported_tensor<R: std::io::Read + std::io::Seek>(
    r: &mut R,
) -> std::io::Result<Option<(String, u32)>> {
    use std::io::{Error, ErrorKind, Read, SeekFrom};
    let len = r.seek(SeekFrom::End(0))?;
    r.seek(SeekFrom::Start(0))?;
    let mut r = std::io::BufReader::new(r);
    let bad = |m: &str| Error::new(ErrorKind::InvalidData, m.to_string());
    fn u32_of(r: &mut impl Read) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64_of(r: &mut impl Read) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    let version = u32_of(&mut r)?;
    if &magic != b"GGUF" || !(1..=3).contains(&version) {
        return Err(bad("not GGUF"));
    }
    // Version 1 counts and lengths are u32, later ones u64.
    let count = |r: &mut std::io::BufReader<&mut R>| -> std::io::Result<u64> {
        let n = if version == 1 {
            u64::from(u32_of(r)?)
        } else {
            u64_of(r)?
        };
        if n > len {
            return Err(bad("a count larger than the file"));
        }
        Ok(n)
    };
    let skip = |r: &mut std::io::BufReader<&mut R>, n: u64| -> std::io::Result<()> {
        let n = i64::try_from(n).map_err(|_| bad("a length larger than the file"))?;
        r.seek_relative(n)
    };
    let tensors = count(&mut r)?;
    let kvs = count(&mut r)?;
    for _ in 0..kvs {
        let key = count(&mut r)?;
        skip(&mut r, key)?;
        let vtype = u32_of(&mut r)?;
        // GGUF value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool, 8 string,
        // 9 array (element type, count, elements), 10 u64, 11 i64, 12 f64.
        let size = |t: u32| match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match vtype {
            8 => {
                let n = count(&mut r)?;
                skip(&mut r, n)?;
            }
            9 => {
                let etype = u32_of(&mut r)?;
                let n = count(&mut r)?;
                match (etype, size(etype)) {
                    (_, Some(s)) => skip(&mut r, n * s)?,
                    (8, None) => {
                        for _ in 0..n {
                            let l = count(&mut r)?;
                            skip(&mut r, l)?;
                        }
                    }
                    _ => return Err(bad("an array of arrays")),
                }
            }
            t => skip(&mut r, size(t).ok_or_else(|| bad("an unknown value type"))?)?,
        }
    }
    for _ in 0..tensors {
        let n = count(&mut r)?;
        let mut name = vec![0u8; n as usize];
        r.read_exact(&mut name)?;
        let dims = u32_of(&mut r)?;
        skip(&mut r, u64::from(dims) * if version == 1 { 4 } else { 8 })?;
        let id = u32_of(&mut r)?;
        let _offset = u64_of(&mut r)?;
        if !candle_reads(id) {
            return Ok(Some((String::from_utf8_lossy(&name).into_owned(), id)));
        }
    }
    Ok(None)
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
