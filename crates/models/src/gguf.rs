//! A llama-architecture chat model from one llama.cpp GGUF file (e.g. SmolLM2-135M-Instruct, the
//! language model of SmolVLM2-256M): quantized weights through [`crate::llama_text::TextModel`]
//! (the same decoder SmolVLM uses), the tokenizer and chat template from the GGUF metadata.
//!
//! Reached from tests only so far (real SmolLM2 weights against transformers, `tests/smollm2_gguf.rs`):
//! the base of GGUF loading for SmolVLM2's text tower (text GGUF + mmproj), which is the next user.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::Device;

use crate::generation::{decode_loop, Decoded};
use crate::llama_text::{TextConfig, TextModel};
use crate::{GenerationParams, ModelError};

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
        let file_err = |reason: String| ModelError::File {
            path: path.to_path_buf(),
            reason,
        };
        let mut f = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
        let ct = gguf_file::Content::read(&mut f)
            .map_err(|e| file_err(format!("not a GGUF file: {e}")))?;
        let (model, config) = TextModel::from_gguf(&ct, &mut f, device, dequantize)
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        let mut tokenizer = tokenizers::Tokenizer::from_gguf(&ct)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        // candle's builder gives unknown `tokenizer.ggml.pre` values (SmolLM2's "smollm") a
        // byte-level pre-tokenizer that adds a prefix space; the GGUF says whether to
        // (`add_space_prefix`), and transformers follows it: byte-level split, no prefix space.
        let add_prefix = ct
            .metadata
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("gpt2");
        if !matches!(pre, "qwen2" | "llama3" | "smaug-bpe" | "lfm2") {
            tokenizer.with_pre_tokenizer(Some(
                tokenizers::pre_tokenizers::byte_level::ByteLevel::new(add_prefix, true, true),
            ));
        }
        let chat_template = ct
            .metadata
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
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
