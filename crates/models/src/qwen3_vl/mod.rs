//! Qwen3-VL (transformers' `Qwen3VLForConditionalGeneration`, model_type `qwen3_vl`): a ViT with a
//! temporal conv3d patch embedding, learned position embeddings resampled bilinearly to each
//! image's grid, 2-D rotary attention per frame, a 2x2 patch merger and DeepStack mergers whose
//! features are added to the first language-model layers' hidden states at the visual positions;
//! and a Qwen3 text model (q/k RMS norms) with interleaved multimodal RoPE (M-RoPE).
//!
//! Written from transformers 5.24's `modeling_qwen3_vl.py` (the oracle our fixtures come from).
//! candle-transformers 0.11.1's `qwen3_vl` was read, not used: its text and vision modules are
//! private, its text RoPE is 1-D (no M-RoPE positions at all, so every visual token gets a plain
//! sequence position), it only builds an attention mask when the query length is 1, and it has no
//! `get_rope_index`, processor or timestamp prompt.
//!
//! Weight names as the hub stores them: `model.visual.*`, `model.language_model.*`, `lm_head.weight`
//! (absent when the embeddings are tied, as in Qwen3-VL-2B/4B).

mod engine;
pub mod processor;

pub use engine::Qwen3VlEngine;

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{LayerNorm, Linear, RmsNorm, VarBuilder};
use serde::Deserialize;

use crate::cpu_ops;
use crate::ModelError;

/// RoPE settings in either config spelling (4.x `rope_scaling` + `rope_theta`, 5.x `rope_parameters`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    /// "default" for the text model, "axial" for the vision tower.
    #[serde(default)]
    pub rope_type: Option<String>,
    /// Base of the frequencies.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Rotary frequency pairs given to (t, h, w); sums to head_dim / 2.
    #[serde(default)]
    pub mrope_section: Option<Vec<usize>>,
    /// Qwen3-VL interleaves the sections (t h w t h w ...); always true for this family.
    #[serde(default)]
    pub mrope_interleaved: Option<bool>,
}

/// `vision_config` of config.json.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    /// Transformer blocks.
    pub depth: usize,
    /// Width of the tower.
    pub hidden_size: usize,
    /// MLP activation (`gelu_pytorch_tanh` in the released checkpoints).
    #[serde(default = "default_vision_act")]
    pub hidden_act: String,
    /// MLP width.
    pub intermediate_size: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Input channels (3).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Patches merged per side into one language token.
    pub spatial_merge_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Output width (the language model's hidden size).
    pub out_hidden_size: usize,
    /// Learned position embeddings (a square grid).
    pub num_position_embeddings: usize,
    /// Blocks whose output feeds a DeepStack merger.
    #[serde(default)]
    pub deepstack_visual_indexes: Vec<usize>,
    /// Axial RoPE settings (theta 10000 when absent).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
}

fn default_vision_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_in_channels() -> usize {
    3
}

/// `text_config` of config.json.
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (defaults to the query heads).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width (defaults to hidden / heads).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Longest context.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMS norm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// 5.x RoPE settings.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// 4.x RoPE settings (`mrope_section` lives here).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// 4.x RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Tied lm_head (some checkpoints say it here rather than at the top level).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_max_pos() -> usize {
    262144
}
fn default_eps() -> f64 {
    1e-6
}

impl TextConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    fn rope(&self) -> RopeParameters {
        let mut r = self.rope_parameters.clone().unwrap_or_default();
        if let Some(s) = &self.rope_scaling {
            r.mrope_section = r.mrope_section.or_else(|| s.mrope_section.clone());
            r.rope_theta = r.rope_theta.or(s.rope_theta);
            r.rope_type = r.rope_type.or_else(|| s.rope_type.clone());
        }
        r.rope_theta = r.rope_theta.or(self.rope_theta);
        r
    }
    /// RoPE base (transformers' default 5e6 for this family when absent... it is always present in
    /// released configs; 500000 is the class default).
    pub fn rope_theta(&self) -> f64 {
        self.rope().rope_theta.unwrap_or(500000.0)
    }
    /// `mrope_section` (transformers' default [24, 20, 20] when absent).
    pub fn mrope_section(&self) -> Vec<usize> {
        self.rope()
            .mrope_section
            .unwrap_or_else(|| vec![24, 20, 20])
    }
}

/// config.json of a Qwen3-VL checkpoint.
///
/// ```
/// let cfg: vidlm_models::qwen3_vl::Config = serde_json::from_str(r#"{
///   "model_type": "qwen3_vl", "image_token_id": 151655, "video_token_id": 151656,
///   "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": true,
///   "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
///     "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
///     "rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
///     "rope_theta": 5000000},
///   "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
///     "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048,
///     "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]}
/// }"#).unwrap();
/// assert_eq!(cfg.text_config.mrope_section(), vec![24, 20, 20]);
/// assert_eq!(cfg.text_config.rope_theta(), 5e6);
/// ```
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// "qwen3_vl".
    #[serde(default)]
    pub model_type: Option<String>,
    /// The language model.
    pub text_config: TextConfig,
    /// The vision tower.
    pub vision_config: VisionConfig,
    /// `<|image_pad|>`.
    #[serde(default = "default_image_token")]
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    #[serde(default = "default_video_token")]
    pub video_token_id: u32,
    /// `<|vision_start|>`.
    #[serde(default = "default_vs_token")]
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    #[serde(default = "default_ve_token")]
    pub vision_end_token_id: u32,
    /// Tied lm_head.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
}

fn default_image_token() -> u32 {
    151655
}
fn default_video_token() -> u32 {
    151656
}
fn default_vs_token() -> u32 {
    151652
}
fn default_ve_token() -> u32 {
    151653
}

impl Config {
    /// Reads and checks config.json.
    ///
    /// # Errors
    /// [`ModelError::File`] when unreadable or malformed, [`ModelError::Invalid`] for another
    /// model_type or inconsistent sizes.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        Self::from_json(crate::checkpoint::read_json(path)?, path)
    }

    /// Checks an already parsed config.json (read from `path`, which errors name).
    ///
    /// # Errors
    /// As [`Self::from_file`].
    pub fn from_json(raw: serde_json::Value, path: &Path) -> Result<Self, ModelError> {
        let cfg: Config = serde_json::from_value(raw).map_err(|e| ModelError::File {
            path: path.to_path_buf(),
            reason: format!("not a Qwen3-VL config: {e}"),
        })?;
        if let Some(mt) = &cfg.model_type {
            if mt != "qwen3_vl" {
                return Err(ModelError::Invalid(format!(
                    "{}: model_type {mt} is not supported here (expected \"qwen3_vl\")",
                    path.display()
                )));
            }
        }
        cfg.validate()
            .map_err(|e| ModelError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let sec = t.mrope_section();
        if sec.len() != 3 || sec.iter().sum::<usize>() != t.head_dim() / 2 {
            return Err(format!(
                "mrope_section {sec:?} must have 3 parts summing to head_dim/2 = {}",
                t.head_dim() / 2
            ));
        }
        if !t.num_attention_heads.is_multiple_of(t.kv_heads()) {
            return Err("num_attention_heads is not a multiple of num_key_value_heads".into());
        }
        if !v.hidden_size.is_multiple_of(v.num_heads)
            || !(v.hidden_size / v.num_heads).is_multiple_of(4)
        {
            return Err("vision head_dim must be a multiple of 4 (2-D rope)".into());
        }
        let side = (v.num_position_embeddings as f64).sqrt() as usize;
        if side * side != v.num_position_embeddings {
            return Err("num_position_embeddings must be a square".into());
        }
        if v.out_hidden_size != t.hidden_size {
            return Err("vision out_hidden_size differs from the text hidden_size".into());
        }
        if v.deepstack_visual_indexes.len() > t.num_hidden_layers
            || v.deepstack_visual_indexes.iter().any(|&i| i >= v.depth)
        {
            return Err("deepstack_visual_indexes out of range".into());
        }
        Ok(())
    }

    /// True when lm_head shares the embedding matrix.
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings
            .or(self.text_config.tie_word_embeddings)
            .unwrap_or(false)
    }
}

fn lin(i: usize, o: usize, bias: bool, vb: VarBuilder) -> candle_core::Result<Linear> {
    if bias {
        candle_nn::linear(i, o, vb)
    } else {
        candle_nn::linear_no_bias(i, o, vb)
    }
}

fn gelu(x: &Tensor, act: &str) -> candle_core::Result<Tensor> {
    match act {
        // candle's `gelu` is the tanh approximation (gelu_pytorch_tanh); `gelu_erf` is exact.
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => cpu_ops::gelu_tanh(x),
        _ => x.gelu_erf(),
    }
}

/// `rotate_half` RoPE on `[.., seq, dim]` with cos/sin of `[seq, dim/2]` (the halves repeat).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)
}

// ---------------------------------------------------------------------------------------------
// Vision tower

struct VisionBlock {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    act: String,
}

impl VisionBlock {
    fn new(c: &VisionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            norm1: candle_nn::layer_norm(h, 1e-6, vb.pp("norm1"))?,
            norm2: candle_nn::layer_norm(h, 1e-6, vb.pp("norm2"))?,
            qkv: candle_nn::linear(h, 3 * h, vb.pp("attn.qkv"))?,
            proj: candle_nn::linear(h, h, vb.pp("attn.proj"))?,
            fc1: candle_nn::linear(h, c.intermediate_size, vb.pp("mlp.linear_fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, h, vb.pp("mlp.linear_fc2"))?,
            heads: c.num_heads,
            act: c.hidden_act.clone(),
        })
    }

    /// `x`: `[n, hidden]`; attention runs within each `segments` range (one frame each).
    fn forward(
        &self,
        x: &Tensor,
        segments: &[(usize, usize)],
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (n, hidden) = x.dims2()?;
        let hd = hidden / self.heads;
        let h = self.norm1.forward(x)?;
        let qkv = cpu_ops::dense(&h, &self.qkv)?.reshape((n, 3, self.heads, hd))?;
        // [1, heads, n, hd] views; rope makes q and k contiguous, v stays a strided view that the
        // fused attention reads in place.
        let part = |i| {
            qkv.narrow(1, i, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .unsqueeze(0)
        };
        let q = rope(&part(0)?, cos, sin)?;
        let k = rope(&part(1)?, cos, sin)?;
        let v = part(2)?;
        let scale = (hd as f64).powf(-0.5);
        let a = cpu_ops::attention(&q, &k, &v, scale, segments)?.reshape((n, hidden))?;
        let x = (x + cpu_ops::dense(&a, &self.proj)?)?;
        let m = cpu_ops::dense(
            &gelu(
                &cpu_ops::dense(&self.norm2.forward(&x)?, &self.fc1)?,
                &self.act,
            )?,
            &self.fc2,
        )?;
        x + m
    }
}

struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    postshuffle: bool,
    merged: usize,
}

impl Merger {
    fn new(c: &VisionConfig, postshuffle: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let merged = c.hidden_size * c.spatial_merge_size * c.spatial_merge_size;
        let norm_dim = if postshuffle { merged } else { c.hidden_size };
        Ok(Self {
            norm: candle_nn::layer_norm(norm_dim, 1e-6, vb.pp("norm"))?,
            fc1: candle_nn::linear(merged, merged, vb.pp("linear_fc1"))?,
            fc2: candle_nn::linear(merged, c.out_hidden_size, vb.pp("linear_fc2"))?,
            postshuffle,
            merged,
        })
    }

    /// `[n, hidden]` (n a multiple of merge^2, in merge-block order) -> `[n / merge^2, out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)? * x.dim(1)? / self.merged;
        let x = if self.postshuffle {
            self.norm.forward(&x.reshape((n, self.merged))?)?
        } else {
            self.norm.forward(x)?.reshape((n, self.merged))?
        };
        // The merger's activation is nn.GELU(): the exact erf form.
        cpu_ops::dense(&cpu_ops::dense(&x, &self.fc1)?.gelu_erf()?, &self.fc2)
    }
}

/// The vision tower: pixels (patch rows) to language-space tokens plus DeepStack features.
pub struct VisionTower {
    patch_w: Tensor,
    patch_b: Tensor,
    pos_embed: Tensor,
    blocks: Vec<VisionBlock>,
    merger: Merger,
    deepstack: Vec<(usize, Merger)>,
    cfg: VisionConfig,
    inv_freq: Vec<f32>,
}

/// What the vision tower returns for one image or video.
#[derive(Debug, Clone)]
pub struct VisionOutput {
    /// `[tokens, out_hidden]` merged tokens, in the order the placeholders take them.
    pub embeds: Tensor,
    /// One `[tokens, out_hidden]` tensor per DeepStack layer, same order.
    pub deepstack: Vec<Tensor>,
}

impl VisionTower {
    fn new(c: &VisionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let k = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size;
        let patch_w = vb
            .get(
                (
                    c.hidden_size,
                    c.in_channels,
                    c.temporal_patch_size,
                    c.patch_size,
                    c.patch_size,
                ),
                "patch_embed.proj.weight",
            )?
            .reshape((c.hidden_size, k))?;
        let patch_b = vb.get(c.hidden_size, "patch_embed.proj.bias")?;
        let pos_embed = vb.get(
            (c.num_position_embeddings, c.hidden_size),
            "pos_embed.weight",
        )?;
        let blocks = (0..c.depth)
            .map(|i| VisionBlock::new(c, vb.pp(format!("blocks.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let merger = Merger::new(c, false, vb.pp("merger"))?;
        let deepstack = c
            .deepstack_visual_indexes
            .iter()
            .enumerate()
            .map(|(j, &layer)| {
                Ok((
                    layer,
                    Merger::new(c, true, vb.pp(format!("deepstack_merger_list.{j}")))?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let theta = c
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .unwrap_or(10000.0) as f32;
        let spatial = c.hidden_size / c.num_heads / 2;
        let inv_freq = (0..spatial)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / spatial as f32))
            .collect();
        Ok(Self {
            patch_w,
            patch_b,
            pos_embed,
            blocks,
            merger,
            deepstack,
            cfg: c.clone(),
            inv_freq,
        })
    }

    /// (row, col) of every patch of an `h x w` patch grid, in spatial-merge-block order.
    fn block_order(&self, h: usize, w: usize) -> Vec<(usize, usize)> {
        let m = self.cfg.spatial_merge_size;
        let mut out = Vec::with_capacity(h * w);
        for br in 0..h / m {
            for bc in 0..w / m {
                for ir in 0..m {
                    for ic in 0..m {
                        out.push((br * m + ir, bc * m + ic));
                    }
                }
            }
        }
        out
    }

    /// The learned position embeddings resampled (bilinear, align_corners) to an `h x w` grid,
    /// `[h*w, hidden]` in block order.
    fn pos_embeds(&self, h: usize, w: usize) -> candle_core::Result<Tensor> {
        let side = (self.cfg.num_position_embeddings as f64).sqrt() as usize;
        // Taps and weights along one axis, in f32 as transformers computes them.
        let taps = |i: usize, size: usize| -> [(usize, f32); 2] {
            let src = (i as f32 * (side - 1) as f32) / (size.max(2) - 1) as f32;
            let fl = src.floor();
            let mut r = [(0usize, 0f32); 2];
            for (o, slot) in r.iter_mut().enumerate() {
                let raw = fl as i64 + o as i64;
                let d = (src - fl - o as f32).abs();
                *slot = (raw.clamp(0, side as i64 - 1) as usize, (1.0 - d).max(0.0));
            }
            r
        };
        let order = self.block_order(h, w);
        let mut idx = Vec::with_capacity(order.len() * 4);
        let mut wts = Vec::with_capacity(order.len() * 4);
        for &(r, c) in &order {
            let th = taps(r, h);
            let tw = taps(c, w);
            for &(hi, hw) in &th {
                for &(wi, ww) in &tw {
                    idx.push((hi * side + wi) as u32);
                    wts.push(hw * ww);
                }
            }
        }
        let dev = self.pos_embed.device();
        let n = order.len();
        let idx = Tensor::from_vec(idx, n * 4, dev)?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), dev)?.to_dtype(self.pos_embed.dtype())?;
        let g = self
            .pos_embed
            .index_select(&idx, 0)?
            .reshape((n, 4, self.cfg.hidden_size))?;
        g.broadcast_mul(&wts)?.sum(1)
    }

    /// Rotary cos/sin (`[h*w, head_dim/2]`) for an `h x w` grid in block order.
    fn rotary(&self, h: usize, w: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let order = self.block_order(h, w);
        let nf = self.inv_freq.len();
        let mut freqs = Vec::with_capacity(order.len() * 2 * nf);
        for &(r, c) in &order {
            for &f in &self.inv_freq {
                freqs.push(r as f32 * f);
            }
            for &f in &self.inv_freq {
                freqs.push(c as f32 * f);
            }
        }
        let t = Tensor::from_vec(freqs, (order.len(), 2 * nf), self.pos_embed.device())?;
        let dt = self.pos_embed.dtype();
        Ok((t.cos()?.to_dtype(dt)?, t.sin()?.to_dtype(dt)?))
    }

    /// Encodes the patch rows of one image or video (`[t*h*w, C*T*P*P]`, the processor's layout)
    /// with its patch grid `[t, h, w]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] when the rows do not match the grid; others on failed ops.
    pub fn forward(&self, pixels: &Tensor, grid: [usize; 3]) -> Result<VisionOutput, ModelError> {
        let [t, h, w] = grid;
        let m = self.cfg.spatial_merge_size;
        let k = self.patch_w.dim(1)?;
        if pixels.dims() != [t * h * w, k] || h % m != 0 || w % m != 0 {
            return Err(ModelError::Input(format!(
                "pixel rows {:?} do not fit grid {grid:?} (expected [{}, {k}], sides multiple of {m})",
                pixels.dims(),
                t * h * w
            )));
        }
        let dt = self.patch_w.dtype();
        let x = pixels
            .to_dtype(dt)?
            .matmul(&self.patch_w.t()?)?
            .broadcast_add(&self.patch_b)?;
        let pos = self.pos_embeds(h, w)?;
        let pos = if t > 1 { pos.repeat((t, 1))? } else { pos };
        let mut x = (x + pos)?;
        let (cos, sin) = self.rotary(h, w)?;
        let (cos, sin) = if t > 1 {
            (cos.repeat((t, 1))?, sin.repeat((t, 1))?)
        } else {
            (cos, sin)
        };
        let segments: Vec<(usize, usize)> = (0..t).map(|i| (i * h * w, h * w)).collect();
        let mut deepstack = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x, &segments, &cos, &sin)?;
            for (layer, merger) in &self.deepstack {
                if *layer == i {
                    deepstack.push(merger.forward(&x)?);
                }
            }
        }
        Ok(VisionOutput {
            embeds: self.merger.forward(&x)?,
            deepstack,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Text model

struct TextLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    ln1: RmsNorm,
    ln2: RmsNorm,
    cache: Option<(Tensor, Tensor)>,
    /// (query heads, kv heads, head dim).
    heads: (usize, usize, usize),
}

impl TextLayer {
    fn new(c: &TextConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let (h, hd) = (c.hidden_size, c.head_dim());
        let (nh, nkv) = (c.num_attention_heads, c.kv_heads());
        let b = c.attention_bias;
        Ok(Self {
            q: lin(h, nh * hd, b, vb.pp("self_attn.q_proj"))?,
            k: lin(h, nkv * hd, b, vb.pp("self_attn.k_proj"))?,
            v: lin(h, nkv * hd, b, vb.pp("self_attn.v_proj"))?,
            o: lin(nh * hd, h, b, vb.pp("self_attn.o_proj"))?,
            q_norm: candle_nn::rms_norm(hd, c.rms_norm_eps, vb.pp("self_attn.q_norm"))?,
            k_norm: candle_nn::rms_norm(hd, c.rms_norm_eps, vb.pp("self_attn.k_norm"))?,
            gate: lin(h, c.intermediate_size, false, vb.pp("mlp.gate_proj"))?,
            up: lin(h, c.intermediate_size, false, vb.pp("mlp.up_proj"))?,
            down: lin(c.intermediate_size, h, false, vb.pp("mlp.down_proj"))?,
            ln1: candle_nn::rms_norm(h, c.rms_norm_eps, vb.pp("input_layernorm"))?,
            ln2: candle_nn::rms_norm(h, c.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            cache: None,
            heads: (nh, nkv, hd),
        })
    }

    fn forward(&mut self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let (nh, nkv, hd) = self.heads;
        let (b, s, _) = x.dims3()?;
        let h = self.ln1.forward(x)?;
        let q = self
            .q_norm
            .forward(&cpu_ops::dense(&h, &self.q)?.reshape((b, s, nh, hd))?)?;
        let k = self
            .k_norm
            .forward(&cpu_ops::dense(&h, &self.k)?.reshape((b, s, nkv, hd))?)?;
        let v = cpu_ops::dense(&h, &self.v)?
            .reshape((b, s, nkv, hd))?
            .transpose(1, 2)?;
        let q = rope(&q.transpose(1, 2)?, cos, sin)?;
        let k = rope(&k.transpose(1, 2)?, cos, sin)?;
        let (k, v) = match &self.cache {
            Some((pk, pv)) => (
                Tensor::cat(&[pk, &k], 2)?,
                Tensor::cat(&[pv, &v.contiguous()?], 2)?,
            ),
            None => (k, v.contiguous()?),
        };
        self.cache = Some((k.clone(), v.clone()));
        // Causal over the cache, each kv head serving its group of query heads in place.
        let a = cpu_ops::causal_attention(&q.contiguous()?, &k, &v, (hd as f64).powf(-0.5))?
            .reshape((b, s, nh * hd))?;
        let x = (x + cpu_ops::dense(&a, &self.o)?)?;
        let h = self.ln2.forward(&x)?;
        let m = cpu_ops::dense(
            &cpu_ops::silu_mul(
                &cpu_ops::dense(&h, &self.gate)?,
                &cpu_ops::dense(&h, &self.up)?,
            )?,
            &self.down,
        )?;
        x + m
    }
}

/// The Qwen3 language model with M-RoPE and DeepStack injection, with its KV cache.
pub struct TextModel {
    embed: candle_nn::Embedding,
    layers: Vec<TextLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    cfg: TextConfig,
    inv_freq: Vec<f32>,
    section: Vec<usize>,
    cached: usize,
}

impl TextModel {
    fn new(c: &TextConfig, tied: bool, vb: VarBuilder) -> candle_core::Result<Self> {
        let lm = vb.pp("model.language_model");
        let embed = candle_nn::embedding(c.vocab_size, c.hidden_size, lm.pp("embed_tokens"))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| TextLayer::new(c, lm.pp(format!("layers.{i}"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = candle_nn::rms_norm(c.hidden_size, c.rms_norm_eps, lm.pp("norm"))?;
        let lm_head = if tied {
            Linear::new(embed.embeddings().clone(), None)
        } else {
            candle_nn::linear_no_bias(c.hidden_size, c.vocab_size, vb.pp("lm_head"))?
        };
        let hd = c.head_dim();
        let theta = c.rope_theta() as f32;
        let inv_freq = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / hd as f32))
            .collect();
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            cfg: c.clone(),
            inv_freq,
            section: c.mrope_section(),
            cached: 0,
        })
    }

    /// Embeds token ids: `[n, hidden]`.
    ///
    /// # Errors
    /// On a failed op (an id past the vocabulary).
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        let t = Tensor::new(ids, self.embed.embeddings().device())?;
        Ok(self.embed.forward(&t)?)
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed.embeddings().device().clone()
    }

    /// Tokens in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached
    }

    /// Empties the KV cache.
    pub fn clear_cache(&mut self) {
        for l in &mut self.layers {
            l.cache = None;
        }
        self.cached = 0;
    }

    /// Interleaved M-RoPE cos/sin `[seq, head_dim/2]` for positions `[3][seq]` (t, h, w): frequency
    /// j takes the h position when j % 3 == 1 and j < 3 * section[1], the w position when
    /// j % 3 == 2 and j < 3 * section[2], the t position otherwise.
    fn mrope(&self, pos: &[Vec<i64>; 3]) -> candle_core::Result<(Tensor, Tensor)> {
        let n = pos[0].len();
        let half = self.inv_freq.len();
        let axes: Vec<usize> = (0..half)
            .map(|j| {
                if j % 3 == 1 && j < 3 * self.section[1] {
                    1
                } else if j % 3 == 2 && j < 3 * self.section[2] {
                    2
                } else {
                    0
                }
            })
            .collect();
        let f: Vec<f32> = (0..n)
            .flat_map(|i| {
                axes.iter()
                    .zip(&self.inv_freq)
                    .map(move |(&axis, &inv)| pos[axis][i] as f32 * inv)
            })
            .collect();
        let t = Tensor::from_vec(f, (n, half), self.embed.embeddings().device())?;
        let dt = self.embed.embeddings().dtype();
        Ok((t.cos()?.to_dtype(dt)?, t.sin()?.to_dtype(dt)?))
    }

    /// Runs `embeds` (`[seq, hidden]`) at M-RoPE positions `pos` (`[3][seq]`) after the cached
    /// tokens, adding each DeepStack layer's features (`deepstack.1[l]`, `[visual, hidden]`) to the
    /// hidden states at the sequence indices `deepstack.0` after layer `l`. Returns logits: `[seq,
    /// vocab]` when `all_logits`, else `[vocab]` for the last position.
    ///
    /// # Errors
    /// [`ModelError::Input`] on mismatched shapes or a context overflow; others on failed ops.
    pub fn forward(
        &mut self,
        embeds: &Tensor,
        pos: &[Vec<i64>; 3],
        deepstack: Option<(&[u32], &[Tensor])>,
        all_logits: bool,
    ) -> Result<Tensor, ModelError> {
        let (s, _) = embeds.dims2()?;
        if pos.iter().any(|p| p.len() != s) {
            return Err(ModelError::Input(format!(
                "{s} embeddings but position ids of lengths {:?}",
                pos.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        if self.cached + s > self.cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "{} tokens exceed the model's context of {}",
                self.cached + s,
                self.cfg.max_position_embeddings
            )));
        }
        let dev = embeds.device().clone();
        let dt = self.embed.embeddings().dtype();
        let (cos, sin) = self.mrope(pos)?;
        let ds = match deepstack {
            Some((idx, feats)) => {
                if feats.len() > self.layers.len() {
                    return Err(ModelError::Input(
                        "more DeepStack layers than text layers".into(),
                    ));
                }
                for f in feats {
                    if f.dim(0)? != idx.len() {
                        return Err(ModelError::Input(format!(
                            "DeepStack features for {} tokens but {} visual positions",
                            f.dim(0)?,
                            idx.len()
                        )));
                    }
                }
                Some((Tensor::new(idx, &dev)?, feats))
            }
            None => None,
        };
        let mut x = embeds.to_dtype(dt)?.unsqueeze(0)?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            x = layer.forward(&x, &cos, &sin)?;
            if let Some((idx, feats)) = &ds {
                if let Some(f) = feats.get(l) {
                    x = x
                        .squeeze(0)?
                        .index_add(idx, &f.to_dtype(dt)?.contiguous()?, 0)?
                        .unsqueeze(0)?;
                }
            }
        }
        self.cached += s;
        let x = x.squeeze(0)?;
        let x = if all_logits {
            x
        } else {
            x.narrow(0, s - 1, 1)?
        };
        let logits = cpu_ops::dense(&self.norm.forward(&x)?, &self.lm_head)?;
        Ok(if all_logits {
            logits
        } else {
            logits.squeeze(0)?
        })
    }
}

/// A loaded Qwen3-VL model: vision tower and language model.
pub struct Qwen3Vl {
    /// The vision tower.
    pub vision: VisionTower,
    /// The language model.
    pub text: TextModel,
    /// config.json.
    pub config: Config,
    /// M-RoPE offset for generated tokens: position = sequence index + delta (transformers'
    /// `rope_deltas`), set by [`Qwen3Vl::prefill`].
    rope_delta: i64,
}

/// Placeholder-ordered visual features for one prompt: what [`Qwen3Vl::prefill`] splices in.
#[derive(Debug, Clone)]
pub struct VisualInput {
    /// `[tokens, hidden]`, one row per `<|image_pad|>`/`<|video_pad|>` in prompt order.
    pub embeds: Tensor,
    /// Per DeepStack layer, `[tokens, hidden]`, same order.
    pub deepstack: Vec<Tensor>,
}

impl Qwen3Vl {
    /// Loads config.json and the safetensors weights (single file or sharded with
    /// `model.safetensors.index.json`) of `dir`.
    ///
    /// # Errors
    /// [`ModelError::File`] for a missing or unreadable file, [`ModelError::Invalid`] for another
    /// model_type or a missing/misshapen tensor (the message names the directory and tensor).
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self, ModelError> {
        Self::from_checkpoint(&crate::Checkpoint::new(dir), dtype, device)
    }

    /// [`Self::load`] from a [`crate::Checkpoint`] (its config.json read once).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn from_checkpoint(
        ckpt: &crate::Checkpoint,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let dir = ckpt.dir();
        let config = Config::from_json(ckpt.config()?, &ckpt.path("config.json"))?;
        let vb = VarBuilder::from_backend(Box::new(ckpt.tensors()?), dtype, device.clone());
        let invalid =
            |e: candle_core::Error| ModelError::invalid(&format!("{}: {e}", dir.display()));
        let vision =
            VisionTower::new(&config.vision_config, vb.pp("model.visual")).map_err(invalid)?;
        let text =
            TextModel::new(&config.text_config, config.tied(), vb.clone()).map_err(invalid)?;
        Ok(Self {
            vision,
            text,
            config,
            rope_delta: 0,
        })
    }

    /// Runs the prompt `ids` with 3-D positions `pos` (from [`processor::rope_index`]), replacing
    /// the embeddings of the image/video placeholder tokens by `visual` (in order) and injecting
    /// its DeepStack features. Clears the KV cache first. Returns logits (`[seq, vocab]` when
    /// `all_logits`, else the last position's `[vocab]`).
    ///
    /// # Errors
    /// [`ModelError::Input`] when the placeholder count differs from the visual tokens.
    pub fn prefill(
        &mut self,
        ids: &[u32],
        pos: &[Vec<i64>; 3],
        visual: Option<&VisualInput>,
        all_logits: bool,
    ) -> Result<Tensor, ModelError> {
        self.text.clear_cache();
        let mut embeds = self.text.embed_ids(ids)?;
        let vis_idx: Vec<u32> = ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == self.config.image_token_id || t == self.config.video_token_id)
            .map(|(i, _)| i as u32)
            .collect();
        let ds = match visual {
            Some(v) => {
                if v.embeds.dim(0)? != vis_idx.len() {
                    return Err(ModelError::Input(format!(
                        "{} visual tokens for {} placeholder tokens",
                        v.embeds.dim(0)?,
                        vis_idx.len()
                    )));
                }
                let idx = Tensor::new(vis_idx.as_slice(), embeds.device())?;
                let v_embeds = v.embeds.to_dtype(embeds.dtype())?.contiguous()?;
                // Zero the placeholder rows, then add the visual rows there (masked_scatter).
                let keep: Vec<f32> = ids
                    .iter()
                    .map(|&t| {
                        if t == self.config.image_token_id || t == self.config.video_token_id {
                            0.0
                        } else {
                            1.0
                        }
                    })
                    .collect();
                let keep = Tensor::from_vec(keep, (ids.len(), 1), embeds.device())?
                    .to_dtype(embeds.dtype())?;
                embeds = embeds.broadcast_mul(&keep)?.index_add(&idx, &v_embeds, 0)?;
                Some((vis_idx.as_slice(), v.deepstack.as_slice()))
            }
            None if !vis_idx.is_empty() => {
                return Err(ModelError::Input(format!(
                    "{} image/video placeholder tokens but no visual input",
                    vis_idx.len()
                )))
            }
            None => None,
        };
        let max = pos
            .iter()
            .flat_map(|p| p.iter().copied())
            .max()
            .unwrap_or(-1);
        self.rope_delta = max + 1 - ids.len() as i64;
        self.text.forward(&embeds, pos, ds, all_logits)
    }

    /// Feeds one generated token after the cached ones; returns the next logits (`[vocab]`).
    ///
    /// # Errors
    /// On a failed op or a context overflow.
    pub fn step(&mut self, token: u32) -> Result<Tensor, ModelError> {
        let p = self.text.cached_tokens() as i64 + self.rope_delta;
        let e = self.text.embed_ids(&[token])?;
        self.text
            .forward(&e, &[vec![p], vec![p], vec![p]], None, false)
    }

    /// Encodes several images/videos and concatenates their tokens and DeepStack features in
    /// order (the order of their placeholders in the prompt).
    ///
    /// # Errors
    /// As [`VisionTower::forward`].
    pub fn encode(&self, inputs: &[(Tensor, [usize; 3])]) -> Result<VisualInput, ModelError> {
        let outs = inputs
            .iter()
            .map(|(p, g)| self.vision.forward(p, *g))
            .collect::<Result<Vec<_>, _>>()?;
        if outs.is_empty() {
            return Err(ModelError::Input("no images or videos to encode".into()));
        }
        let embeds = Tensor::cat(&outs.iter().map(|o| &o.embeds).collect::<Vec<_>>(), 0)?;
        let n = outs[0].deepstack.len();
        let deepstack = (0..n)
            .map(|l| Tensor::cat(&outs.iter().map(|o| &o.deepstack[l]).collect::<Vec<_>>(), 0))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(VisualInput { embeds, deepstack })
    }
}
