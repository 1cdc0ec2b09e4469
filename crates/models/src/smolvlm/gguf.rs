//! SmolVLM2 from llama.cpp's GGUF files, as its converter (`convert_hf_to_gguf.py`, and with
//! `--mmproj` for the vision half) writes them:
//! - the text GGUF: a `llama` decoder (`blk.N.attn_q.weight`, ..., Q/K rows permuted for
//!   interleaved RoPE; read by [`TextModel::from_gguf`]), the tokenizer (`tokenizer.ggml.*`) and
//!   the chat template (`tokenizer.chat_template`);
//! - the mmproj GGUF: `general.architecture` `clip`, `clip.projector_type` `idefics3`, the SigLIP
//!   tower as `v.*` and the connector as `mm.model.fc.weight`, the image size, patch size, scale
//!   factor and normalization in `clip.vision.*`.
//!
//! The vision weights are dequantized to the load dtype once (the tower is a small share of the
//! work) and run through the same [`VisionTower`] as the safetensors weights, under their
//! safetensors names.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::json;

use super::processor::{PixelConfig, ProcessorParts, SmolVlmProcessor};
use super::{Config, SmolVlm, VisionConfig, VisionTower};
use crate::gguf::{meta_str, GgufFiles};
use crate::llama_text::TextModel;
use crate::ModelError;

/// The mmproj projector type SmolVLM2's files carry.
pub const PROJECTOR: &str = "idefics3";

/// The safetensors name of an mmproj tensor (`None` for one the tower does not use).
fn hf_name(gguf: &str) -> Option<String> {
    const VM: &str = "model.vision_model";
    let fixed = match gguf {
        "v.patch_embd.weight" => Some("embeddings.patch_embedding.weight"),
        "v.patch_embd.bias" => Some("embeddings.patch_embedding.bias"),
        "v.position_embd.weight" => Some("embeddings.position_embedding.weight"),
        "v.post_ln.weight" => Some("post_layernorm.weight"),
        "v.post_ln.bias" => Some("post_layernorm.bias"),
        "mm.model.fc.weight" => {
            return Some("model.connector.modality_projection.proj.weight".into())
        }
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(format!("{VM}.{f}"));
    }
    let rest = gguf.strip_prefix("v.blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let part = match part {
        "ln1" => "layer_norm1",
        "ln2" => "layer_norm2",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_out" => "self_attn.out_proj",
        "ffn_up" => "mlp.fc1",
        "ffn_down" => "mlp.fc2",
        _ => return None,
    };
    Some(format!("{VM}.encoder.layers.{layer}.{part}.{kind}"))
}

/// A metadata number, or an [`ModelError::Invalid`] naming the key and file.
fn meta_u32(ct: &gguf_file::Content, key: &str, path: &Path) -> Result<usize, ModelError> {
    ct.metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .ok_or_else(|| missing_key(key, path))
}

fn missing_key(key: &str, path: &Path) -> ModelError {
    ModelError::Invalid(format!(
        "{}: GGUF metadata key `{key}` is missing or not a number",
        path.display()
    ))
}

/// The mmproj's `clip.vision.image_mean` / `image_std`.
fn meta_triple(ct: &gguf_file::Content, key: &str, path: &Path) -> Result<[f32; 3], ModelError> {
    let v = ct
        .metadata
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| missing_key(key, path))?;
    let xs: Vec<f32> = v.iter().filter_map(|x| x.to_f32().ok()).collect();
    <[f32; 3]>::try_from(xs).map_err(|_| {
        ModelError::Invalid(format!("{}: `{key}` is not three numbers", path.display()))
    })
}

/// Checks that an mmproj header is a SmolVLM2 (Idefics3) vision projector.
///
/// # Errors
/// [`ModelError::Invalid`] naming what the file is instead.
pub fn check_mmproj(ct: &gguf_file::Content, path: &Path) -> Result<(), ModelError> {
    let arch = meta_str(ct, "general.architecture").unwrap_or("(none)");
    if arch != "clip" {
        return Err(ModelError::Invalid(format!(
            "{}: not an mmproj file (general.architecture is `{arch}`, a vision projector's is `clip`)",
            path.display()
        )));
    }
    let proj = meta_str(ct, "clip.projector_type").unwrap_or("(none)");
    if proj != PROJECTOR {
        return Err(ModelError::Invalid(format!(
            "{}: projector type `{proj}` is not SmolVLM2's `{PROJECTOR}`",
            path.display()
        )));
    }
    Ok(())
}

/// Loads the weights and the processor from `files`: the text model on `device` (dequantized to
/// f32 with `dequantize`, else on candle's quantized matmuls), the vision tower and connector
/// dequantized to `dtype`.
///
/// # Errors
/// [`ModelError::File`] for a missing, unreadable or truncated file; [`ModelError::Invalid`] for a
/// file of another kind (text GGUF not `llama`, mmproj not an Idefics3 `clip` projector), a
/// missing key or tensor, or towers that do not fit each other.
pub fn load(
    files: &GgufFiles,
    dtype: DType,
    device: &Device,
    dequantize: bool,
) -> Result<(SmolVlm, SmolVlmProcessor), ModelError> {
    let (vct, mut vf) = crate::gguf::open(&files.mmproj)?;
    check_mmproj(&vct, &files.mmproj)?;
    let (tct, mut tf) = crate::gguf::open(&files.text)?;
    if meta_str(&tct, "general.architecture") == Some("clip") {
        return Err(ModelError::Invalid(format!(
            "{}: this is an mmproj (vision projector) file; give the text model as the model and this one as --mmproj",
            files.text.display()
        )));
    }
    let in_text = |e: ModelError| match e {
        ModelError::Invalid(m) => ModelError::Invalid(format!("{}: {m}", files.text.display())),
        other => other,
    };
    let (text, text_config) =
        TextModel::from_gguf(&tct, &mut tf, device, dequantize).map_err(in_text)?;
    let tokenizer = crate::gguf::tokenizer(&tct, &files.text)?;

    let mp = &files.mmproj;
    let u = |k: &str| meta_u32(&vct, &format!("clip.vision.{k}"), mp);
    let image_size = u("image_size")?;
    let projection = u("projection_dim")?;
    if projection != text_config.hidden_size {
        return Err(ModelError::Invalid(format!(
            "{}: the projector outputs {projection} wide tokens, the text model {} is {} wide",
            mp.display(),
            files.text.display(),
            text_config.hidden_size
        )));
    }
    let vision_config = VisionConfig {
        hidden_size: u("embedding_length")?,
        intermediate_size: u("feed_forward_length")?,
        num_hidden_layers: u("block_count")?,
        num_attention_heads: u("attention.head_count")?,
        num_channels: 3,
        image_size,
        patch_size: u("patch_size")?,
        // llama.cpp's clip runs GELU with the tanh approximation, as SigLIP's config names it.
        hidden_act: "gelu_pytorch_tanh".into(),
        layer_norm_eps: vct
            .metadata
            .get("clip.vision.attention.layer_norm_epsilon")
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(1e-6) as f64,
    };
    let image_token = "<image>";
    let image_token_id = tokenizer.token_to_id(image_token).ok_or_else(|| {
        ModelError::Invalid(format!(
            "{}: the vocabulary has no {image_token} token",
            files.text.display()
        ))
    })?;
    let config = Config {
        model_type: Some("smolvlm".into()),
        vision_config,
        tie_word_embeddings: text_config.tie_word_embeddings,
        text_config,
        scale_factor: u("projector.scale_factor")?,
        image_token_id,
        dtype: None,
        torch_dtype: None,
    };
    config
        .check()
        .map_err(|e| ModelError::Invalid(format!("{}: {e}", mp.display())))?;

    let mut tensors = HashMap::new();
    for name in vct.tensor_infos.keys() {
        let Some(hf) = hf_name(name) else { continue };
        let t = vct
            .tensor(&mut vf, name, device)
            .and_then(|q| q.dequantize(device))
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| ModelError::Invalid(format!("{}: tensor `{name}`: {e}", mp.display())))?;
        tensors.insert(hf, t);
    }
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let vision = VisionTower::new(&config, vb).map_err(|e| match e {
        ModelError::Invalid(m) => ModelError::Invalid(format!("{}: {m}", mp.display())),
        other => other,
    })?;

    let mean = meta_triple(&vct, "clip.vision.image_mean", mp)?;
    let std = meta_triple(&vct, "clip.vision.image_std", mp)?;
    // The hub's SmolVLM2 processor settings, with the sizes and normalization the mmproj
    // carries: image mode resizes the longest edge to `preproc_image_size` and splits into
    // `image_size` tiles; video mode resizes each frame to one `image_size` tile; LANCZOS.
    let preproc = u("preproc_image_size").unwrap_or(4 * image_size);
    let pixel = |size: usize, video: bool| {
        PixelConfig::from_json(
            &json!({
                "size": {"longest_edge": size},
                "max_image_size": {"longest_edge": image_size},
                "resample": 1,
                "image_mean": mean,
                "image_std": std,
                "do_image_splitting": !video,
            }),
            video,
        )
    };
    let token_name = |key: &str| {
        tct.metadata
            .get(key)
            .and_then(|v| v.to_u32().ok())
            .and_then(|id| tokenizer.id_to_token(id))
    };
    let mut tok_cfg = serde_json::Map::new();
    for (k, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(t) = token_name(key) {
            tok_cfg.insert(k.into(), t.into());
        }
    }
    let chat_template = meta_str(&tct, "tokenizer.chat_template")
        .ok_or_else(|| {
            ModelError::Invalid(format!(
                "{}: no chat template (`tokenizer.chat_template`) in the GGUF metadata",
                files.text.display()
            ))
        })?
        .to_owned();
    let processor = SmolVlmProcessor::from_parts(ProcessorParts {
        tokenizer,
        source: files.text.clone(),
        tokenizer_config: serde_json::Value::Object(tok_cfg),
        image_cfg: pixel(preproc, false)?,
        video_cfg: pixel(image_size, true)?,
        image_seq_len: config.image_seq_len(),
        extra_eos: Vec::new(),
        chat_template,
        frames_as_images: false,
    })?;
    Ok((
        SmolVlm {
            config,
            vision,
            text,
        },
        processor,
    ))
}
