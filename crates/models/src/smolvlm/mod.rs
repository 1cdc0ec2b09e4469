//! SmolVLM / SmolVLM2 (transformers' `SmolVLMForConditionalGeneration`, model_type `smolvlm`).
//!
//! Three parts, with the weight names the hub stores:
//! - the vision tower `model.vision_model.*`: a SigLIP-style ViT (a stride-`patch` convolution as
//!   patch embedding, learned position embeddings addressed through Idefics3's patch-position
//!   bucketing, pre-norm encoder layers with a `gelu_pytorch_tanh` MLP, a final layer norm);
//! - the connector `model.connector.modality_projection.proj.weight`: a pixel shuffle that folds
//!   `scale_factor x scale_factor` neighbouring patches into one token, then a bias-free linear into
//!   the text model's width;
//! - the text model `model.text_model.*` (Llama / SmolLM2, see [`crate::llama_text`]) and `lm_head`,
//!   whose input embeddings at the `<image>` token positions are replaced, in order, by the
//!   connector's output.

mod engine;
pub mod gguf;
#[cfg(feature = "cuda")]
mod gpu;
pub mod processor;

pub use engine::SmolVlmEngine;

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::cpu_ops;
use crate::llama_text::{TextConfig, TextModel};
use crate::{Checkpoint, ModelError};

/// The vision tower's config (`vision_config`); missing fields take transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    /// Width of the ViT.
    #[serde(default = "d_vhidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_vinter")]
    pub intermediate_size: usize,
    /// Encoder layers.
    #[serde(default = "d_vlayers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_vheads")]
    pub num_attention_heads: usize,
    /// Input channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Side of the square input image, pixels.
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Side of a patch, pixels.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// MLP activation (`gelu_pytorch_tanh`).
    #[serde(default = "d_vact")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_veps")]
    pub layer_norm_eps: f64,
}

fn d_vhidden() -> usize {
    1152
}
fn d_vinter() -> usize {
    3072
}
fn d_vlayers() -> usize {
    12
}
fn d_vheads() -> usize {
    16
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_vact() -> String {
    "gelu_pytorch_tanh".into()
}
fn d_veps() -> f64 {
    1e-6
}
fn d_scale() -> usize {
    2
}
fn d_image_token() -> u32 {
    128257
}

/// SmolVLM's `config.json`. Both transformers 4.x (`rope_theta`, `rope_scaling`, `torch_dtype`) and
/// 5.x (`rope_parameters`, `dtype`) spellings parse.
///
/// ```
/// let cfg: vidlm_models::smolvlm::Config = serde_json::from_str(r#"{
///   "model_type": "smolvlm", "scale_factor": 4, "image_token_id": 49190,
///   "vision_config": {"hidden_size": 768, "image_size": 512, "patch_size": 16, "num_attention_heads": 12},
///   "text_config": {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
///                   "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49280,
///                   "rope_theta": 100000.0}
/// }"#).unwrap();
/// assert_eq!(cfg.image_seq_len(), 64);
/// assert_eq!(cfg.text_config.rope_theta(), 100000.0);
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Must be `smolvlm` (checked by [`Config::from_file`]).
    #[serde(default)]
    pub model_type: Option<String>,
    /// The vision tower.
    pub vision_config: VisionConfig,
    /// The language model.
    pub text_config: TextConfig,
    /// Pixel-shuffle factor of the connector.
    #[serde(default = "d_scale")]
    pub scale_factor: usize,
    /// Id of the `<image>` placeholder token.
    #[serde(default = "d_image_token")]
    pub image_token_id: u32,
    /// Whether `lm_head` is the input embedding (top-level flag, as transformers 5 reads it).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Weight dtype (5.x spelling).
    #[serde(default)]
    pub dtype: Option<String>,
    /// Weight dtype (4.x spelling).
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

impl Config {
    /// Reads and checks `config.json`.
    ///
    /// # Errors
    /// [`ModelError::File`] when it is missing or does not parse, [`ModelError::Invalid`] for a
    /// model_type other than `smolvlm` or inconsistent sizes.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        Self::from_json(crate::checkpoint::read_json(path)?, path)
    }

    /// Checks an already parsed `config.json` (read from `path`, which errors name).
    ///
    /// # Errors
    /// As [`Self::from_file`].
    pub fn from_json(raw: serde_json::Value, path: &Path) -> Result<Self, ModelError> {
        match raw.get("model_type").and_then(|v| v.as_str()) {
            // Idefics3 (SmolVLM v1) is the same model; only its processor differs.
            Some("smolvlm" | "idefics3") => {}
            other => {
                return Err(ModelError::Invalid(format!(
                    "{}: model_type {} is not supported (expected \"smolvlm\" or \"idefics3\")",
                    path.display(),
                    other
                        .map(|s| format!("\"{s}\""))
                        .unwrap_or_else(|| "(missing)".into())
                )))
            }
        }
        let cfg: Config = serde_json::from_value(raw).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            reason: format!("not a SmolVLM config: {e}"),
        })?;
        cfg.check()
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let v = &self.vision_config;
        // SigLIP's patch conv has no padding: 384 px at patch 14 (SmolVLM2-2.2B) is a 27x27 grid,
        // the last 6 pixels of each side unused.
        if v.patch_size == 0 || v.image_size < v.patch_size {
            return Err(format!(
                "vision image_size {} is smaller than patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        let side = v.image_size / v.patch_size;
        if self.scale_factor == 0 || !side.is_multiple_of(self.scale_factor) {
            return Err(format!(
                "patch grid {side} is not a multiple of scale_factor {}",
                self.scale_factor
            ));
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err("vision hidden_size is not a multiple of num_attention_heads".into());
        }
        if v.hidden_act != "gelu_pytorch_tanh" {
            return Err(format!(
                "vision hidden_act `{}` is not supported",
                v.hidden_act
            ));
        }
        let t = &self.text_config;
        if t.num_attention_heads == 0
            || t.kv_heads() == 0
            || !t.num_attention_heads.is_multiple_of(t.kv_heads())
        {
            return Err("text num_attention_heads is not a multiple of num_key_value_heads".into());
        }
        Ok(())
    }

    /// Visual tokens per image: `(image_size / patch_size)^2 / scale_factor^2`.
    pub fn image_seq_len(&self) -> usize {
        let side = self.vision_config.image_size / self.vision_config.patch_size;
        side * side / (self.scale_factor * self.scale_factor)
    }

    /// The checkpoint's dtype as the config names it (`dtype` or `torch_dtype`).
    pub fn weight_dtype(&self) -> Option<&str> {
        self.dtype.as_deref().or(self.torch_dtype.as_deref())
    }
}

/// A load error as one line.
fn invalid(e: candle_core::Error) -> ModelError {
    ModelError::invalid(&e)
}

#[derive(Debug, Clone)]
struct VisionLayer {
    ln1: candle_nn::LayerNorm,
    q: candle_nn::Linear,
    k: candle_nn::Linear,
    v: candle_nn::Linear,
    o: candle_nn::Linear,
    ln2: candle_nn::LayerNorm,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    heads: usize,
}

impl VisionLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let hd = d / self.heads;
        let h = self.ln1.forward(x)?;
        // [b, heads, n, hd] views of the projections; the fused attention reads them strided.
        let split = |t: Tensor| t.reshape((b, n, self.heads, hd))?.transpose(1, 2);
        let q = split(cpu_ops::dense(&h, &self.q)?)?;
        let k = split(cpu_ops::dense(&h, &self.k)?)?;
        let v = split(cpu_ops::dense(&h, &self.v)?)?;
        let y =
            cpu_ops::attention(&q, &k, &v, 1.0 / (hd as f64).sqrt(), &[])?.reshape((b, n, d))?;
        let x = (x + cpu_ops::dense(&y, &self.o)?)?;
        let h = cpu_ops::gelu_tanh(&cpu_ops::dense(&self.ln2.forward(&x)?, &self.fc1)?)?;
        x + cpu_ops::dense(&h, &self.fc2)?
    }
}

/// The SigLIP-style vision tower with the connector: pixels in, text-space tokens out.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_w: Tensor,
    patch_b: Tensor,
    pos: Tensor,
    layers: Vec<VisionLayer>,
    post_ln: candle_nn::LayerNorm,
    proj: candle_nn::Linear,
    patch: usize,
    side: usize,
    scale: usize,
    channels: usize,
}

impl VisionTower {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self, ModelError> {
        let v = &cfg.vision_config;
        let vm = vb.pp("model.vision_model");
        let d = v.hidden_size;
        let ln = |vb: VarBuilder| candle_nn::layer_norm(d, v.layer_norm_eps, vb);
        let emb = vm.pp("embeddings");
        let patch_w = emb
            .get(
                (d, v.num_channels, v.patch_size, v.patch_size),
                "patch_embedding.weight",
            )
            .map_err(invalid)?;
        let patch_b = emb.get(d, "patch_embedding.bias").map_err(invalid)?;
        let side = v.image_size / v.patch_size;
        let pos = emb
            .get((side * side, d), "position_embedding.weight")
            .map_err(invalid)?;
        let mut layers = Vec::with_capacity(v.num_hidden_layers);
        for i in 0..v.num_hidden_layers {
            let l = vm.pp(format!("encoder.layers.{i}"));
            let a = l.pp("self_attn");
            layers.push(VisionLayer {
                ln1: ln(l.pp("layer_norm1")).map_err(invalid)?,
                q: candle_nn::linear(d, d, a.pp("q_proj")).map_err(invalid)?,
                k: candle_nn::linear(d, d, a.pp("k_proj")).map_err(invalid)?,
                v: candle_nn::linear(d, d, a.pp("v_proj")).map_err(invalid)?,
                o: candle_nn::linear(d, d, a.pp("out_proj")).map_err(invalid)?,
                ln2: ln(l.pp("layer_norm2")).map_err(invalid)?,
                fc1: candle_nn::linear(d, v.intermediate_size, l.pp("mlp.fc1")).map_err(invalid)?,
                fc2: candle_nn::linear(v.intermediate_size, d, l.pp("mlp.fc2")).map_err(invalid)?,
                heads: v.num_attention_heads,
            });
        }
        let post_ln = ln(vm.pp("post_layernorm")).map_err(invalid)?;
        let s = cfg.scale_factor;
        let proj = candle_nn::linear_no_bias(
            d * s * s,
            cfg.text_config.hidden_size,
            vb.pp("model.connector.modality_projection.proj"),
        )
        .map_err(invalid)?;
        Ok(Self {
            patch_w: patch_w.reshape((d, v.num_channels * v.patch_size * v.patch_size))?,
            patch_b,
            pos,
            layers,
            post_ln,
            proj,
            patch: v.patch_size,
            side,
            scale: s,
            channels: v.num_channels,
        })
    }

    /// Position ids of an `nh x nw` patch grid (all patches real): Idefics3's bucketing of each
    /// patch's fractional coordinate onto the `side x side` table. For the full grid this is the
    /// identity; smaller grids spread over the table as transformers' f32 `bucketize` does.
    fn position_ids(&self, nh: usize, nw: usize) -> Vec<u32> {
        let n = self.side;
        let bucket = |i: usize, count: usize| -> usize {
            if count == n {
                return i;
            }
            let step = 1.0f32 / count as f32;
            let c = (i as f32 * step).min(1.0 - 1e-6);
            // bucketize(right=True) over boundaries k/n, k = 1..n-1: how many boundaries are <= c.
            (1..n).filter(|&k| (k as f32 / n as f32) <= c).count()
        };
        let mut ids = Vec::with_capacity(nh * nw);
        for i in 0..nh {
            for j in 0..nw {
                ids.push((bucket(i, nh) * n + bucket(j, nw)) as u32);
            }
        }
        ids
    }

    /// Encodes `[b, channels, H, W]` pixel values into the vision tower's last hidden states
    /// `[b, patches, hidden]` (post layer norm, before the connector). As the patch convolution
    /// (stride = kernel = patch, no padding), rows and columns past the last whole patch are unused.
    ///
    /// # Errors
    /// [`ModelError::Input`] for a shape the tower cannot take.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        let (b, c, h, w) = pixels.dims4()?;
        let p = self.patch;
        if c != self.channels || h < p || w < p {
            return Err(ModelError::Input(format!(
                "pixel values of shape {:?} do not fit the vision tower ({} channels, patch {p})",
                pixels.dims(),
                self.channels
            )));
        }
        let (nh, nw) = (h / p, w / p);
        if nh > self.side || nw > self.side {
            return Err(ModelError::Input(format!(
                "a {h}x{w} image is larger than the vision tower's {0}x{0}",
                self.side * p
            )));
        }
        let dtype = self.patch_w.dtype();
        let pixels = if (nh * p, nw * p) == (h, w) {
            pixels.clone()
        } else {
            pixels.narrow(2, 0, nh * p)?.narrow(3, 0, nw * p)?
        };
        // The stride-p convolution as one matmul over flattened (c, ky, kx) patches.
        let x = pixels
            .to_dtype(dtype)?
            .reshape((b, c, nh, p, nw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b, nh * nw, c * p * p))?;
        let x = x
            .broadcast_matmul(&self.patch_w.t()?)?
            .broadcast_add(&self.patch_b)?;
        let ids = Tensor::new(self.position_ids(nh, nw), pixels.device())?;
        let pos = self.pos.index_select(&ids, 0)?;
        let mut x = x.broadcast_add(&pos)?;
        for l in &self.layers {
            x = l.forward(&x)?;
        }
        Ok(self.post_ln.forward(&x)?)
    }

    /// The connector: pixel shuffle by `scale_factor`, then the projection into the text width.
    /// `[b, side*side, hidden]` -> `[b, side*side/scale^2, text_hidden]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the token count is not a square divisible by the scale.
    pub fn connect(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let (b, n, d) = x.dims3()?;
        let side = (n as f64).sqrt().round() as usize;
        let s = self.scale;
        if side * side != n || !side.is_multiple_of(s) {
            return Err(ModelError::Input(format!(
                "{n} vision tokens do not form a square grid divisible by {s}"
            )));
        }
        // Same element order as transformers' pixel_shuffle: (row block, col block) tokens made of
        // s rows, each of s neighbouring patches.
        let x = x
            .reshape((b, side, side / s, d * s))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, side / s, side / s, d * s * s))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((b, n / (s * s), d * s * s))?;
        Ok(cpu_ops::dense(&x, &self.proj)?)
    }

    /// The dtype the tower computes in (its weights').
    pub fn dtype(&self) -> DType {
        self.patch_w.dtype()
    }

    /// Pixels to text-space tokens: [`VisionTower::encode`] then [`VisionTower::connect`].
    ///
    /// # Errors
    /// As those two.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        self.connect(&self.encode(pixels)?)
    }
}

/// SmolVLM's weights: the vision tower + connector and the text model.
#[derive(Debug, Clone)]
pub struct SmolVlm {
    /// The parsed `config.json`.
    pub config: Config,
    /// Vision tower and connector.
    pub vision: VisionTower,
    /// Language model (with its KV cache).
    pub text: TextModel,
}

impl SmolVlm {
    /// Loads `config.json` and the safetensors weights (single file or sharded) of a model
    /// directory, in `dtype` on `device`.
    ///
    /// # Errors
    /// [`ModelError::File`] for a missing or unreadable file, [`ModelError::Invalid`] for an
    /// unknown model_type or a missing/misshapen tensor (the message names the file and tensor).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        Self::from_checkpoint(&Checkpoint::new(dir), dtype, device)
    }

    /// [`Self::load`] from a [`Checkpoint`] (its `config.json` read once).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_checkpoint(
        ckpt: &Checkpoint,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let config = Config::from_json(ckpt.config()?, &ckpt.path("config.json"))?;
        let tensors = ckpt.tensors()?;
        let has_head = tensors.contains("lm_head.weight");
        let vb = VarBuilder::from_backend(Box::new(tensors), dtype, device.clone());
        let vision = VisionTower::new(&config, vb.clone())?;
        let tied = match config.tie_word_embeddings {
            Some(t) => t,
            // transformers 4.x read the text config's flag; only tie when the head is absent.
            None => !has_head && config.text_config.tie_word_embeddings.unwrap_or(false),
        };
        let t = &config.text_config;
        let lm_head = if tied {
            None
        } else {
            Some(
                candle_nn::linear_no_bias(t.hidden_size, t.vocab_size, vb.pp("lm_head"))
                    .map_err(invalid)?,
            )
        };
        let text = TextModel::from_varbuilder(t, vb.pp("model.text_model"), lm_head).map_err(
            |e| match e {
                ModelError::Candle(c) => invalid(c),
                other => other,
            },
        )?;
        Ok(Self {
            config,
            vision,
            text,
        })
    }

    /// Input embeddings for `ids` with the rows at `<image>` positions replaced, in order, by the
    /// rows of `image_features` (`[n_image_tokens, text_hidden]`). Returns `[1, len, hidden]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the number of `<image>` tokens differs from the feature rows.
    pub fn embed_with_images(
        &self,
        ids: &[u32],
        image_features: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let image_id = self.config.image_token_id;
        let n_img = ids.iter().filter(|&&i| i == image_id).count();
        let rows = match image_features {
            Some(f) => f.dim(0)?,
            None => 0,
        };
        if n_img != rows {
            return Err(ModelError::Input(format!(
                "the prompt has {n_img} <image> tokens but {rows} image feature rows were given"
            )));
        }
        let dtype = self.text.dtype();
        let mut parts = Vec::new();
        let mut used = 0usize;
        let mut i = 0usize;
        while i < ids.len() {
            let is_img = ids[i] == image_id;
            let mut j = i;
            while j < ids.len() && (ids[j] == image_id) == is_img {
                j += 1;
            }
            if is_img {
                let f = image_features.expect("rows > 0 checked above");
                parts.push(f.narrow(0, used, j - i)?.to_dtype(dtype)?);
                used += j - i;
            } else {
                parts.push(self.text.embed_ids(&ids[i..j])?);
            }
            i = j;
        }
        Ok(Tensor::cat(&parts, 0)?.unsqueeze(0)?)
    }

    /// The device the weights live on.
    pub fn vision_device(&self) -> &Device {
        self.vision.patch_w.device()
    }

    /// A full forward pass from an empty cache: pixels (`[images, c, h, w]`, may be `None`) and
    /// prompt ids -> logits `[len, vocab]` at every position (f32). Leaves the prompt in the KV
    /// cache.
    ///
    /// # Errors
    /// As [`SmolVlm::embed_with_images`] and the towers.
    pub fn forward_all(
        &mut self,
        ids: &[u32],
        pixels: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let feats = match pixels {
            Some(p) => {
                let f = self.vision.forward(p)?;
                let (b, n, d) = f.dims3()?;
                Some(f.reshape((b * n, d))?)
            }
            None => None,
        };
        let e = self.embed_with_images(ids, feats.as_ref())?;
        self.text.clear_cache();
        self.text.forward_embeds(&e, true)
    }
}
