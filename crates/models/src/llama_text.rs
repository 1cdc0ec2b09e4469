//! The Llama / SmolLM2 decoder that SmolVLM uses as its language model, with a KV cache and
//! input-embedding injection.
//!
//! One implementation serves two weight sources: HF safetensors (`model.text_model.*`, dense
//! [`candle_nn::Linear`]) and llama.cpp GGUF files (quantized [`QMatMul`]). llama.cpp stores the Q
//! and K projection rows permuted so that its rotary embedding rotates *adjacent* pairs; instead of
//! undoing the permutation (which would need a dequantize/requantize round trip), the GGUF path
//! applies the interleaved rotation ([`candle_nn::rotary_emb::rope_i`]). Permuting the rows of both Q
//! and K by the same permutation leaves every attention score `q . k` unchanged, so the outputs equal
//! the HF layout's.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::ModelError;

/// How the rotary embedding is scaled (`rope_scaling` in transformers 4.x, `rope_parameters` in 5.x).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// Scale factor.
        factor: f64,
        /// Low-frequency factor.
        low_freq_factor: f64,
        /// High-frequency factor.
        high_freq_factor: f64,
        /// Context length the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// The Llama text config as SmolVLM's `text_config` (or a Llama `config.json`) spells it. Missing
/// fields take transformers' `LlamaConfig` defaults (SmolVLM overrides `rms_norm_eps` to 1e-5).
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    /// Vocabulary size (rows of `embed_tokens`).
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Model width.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Decoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (4.x spelling).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (4.x spelling).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// RoPE parameters (5.x spelling: `{"rope_type": ..., "rope_theta": ...}`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Longest context.
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    /// MLP activation (only `silu` is supported).
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Whether q/k/v/o have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether `lm_head` shares `embed_tokens` (as the text config says; SmolVLM reads the top-level
    /// flag first).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn d_vocab() -> usize {
    32000
}
fn d_hidden() -> usize {
    4096
}
fn d_inter() -> usize {
    11008
}
fn d_layers() -> usize {
    32
}
fn d_heads() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_maxpos() -> usize {
    2048
}
fn d_act() -> String {
    "silu".into()
}

impl TextConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The RoPE base, from either spelling (10000 when absent).
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// The RoPE scaling, from either spelling.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for a scaling type this implementation does not know.
    pub fn rope_scaling(&self) -> Result<RopeScaling, ModelError> {
        let v = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) if p.is_object() => p,
            (_, Some(s)) if s.is_object() => s,
            _ => return Ok(RopeScaling::Default),
        };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
        match kind {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor").unwrap_or(1.0),
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor").unwrap_or(8.0),
                low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
                high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
                original_max_position_embeddings: num("original_max_position_embeddings")
                    .unwrap_or(8192.0) as usize,
            }),
            other => Err(ModelError::Invalid(format!(
                "text_config: rope type `{other}` is not supported (default, linear, llama3 are)"
            ))),
        }
    }

    /// End-of-sequence ids named by the config.
    pub fn eos_ids(&self) -> Vec<u32> {
        crate::generation::eos_ids(self.eos_token_id.as_ref())
    }
}

/// A linear layer whose weight is either dense (safetensors) or quantized (GGUF).
#[derive(Debug, Clone)]
pub enum Lin {
    /// Dense weight `[out, in]` and optional bias.
    Dense(candle_nn::Linear),
    /// Quantized weight (llama.cpp block formats). On the CPU, for the types [`crate::qgemv`]
    /// reads: up to [`QGEMV_MAX_ROWS`] rows (decode steps, short prompts) run its kernels on the
    /// stored blocks, more rows [`crate::qgemv::prompt_matmul`] (the weight decoded one cached
    /// panel of rows at a time for an f32 gemm; it stays stored once, quantized). Other types and
    /// devices take candle's `QMatMul`.
    Quant(QMatMul),
    /// candle's `QMatMul` for every shape: the path before [`crate::qgemv`], kept for comparison
    /// ([`TextModel::use_candle_qmatmul`]).
    CandleQuant(QMatMul),
    /// An f16 weight `[out, in]` on the CPU with f32 activations (a GGUF F16 tensor kept as
    /// stored): up to [`QGEMV_MAX_ROWS`] rows through [`crate::qgemv::matmul_f16`] (half the
    /// bytes of an f32 copy per decode step), more rows through
    /// [`crate::qgemv::prompt_matmul_f16`] (converted panel by panel for an f32 gemm).
    F16(Tensor),
}

/// Rows up to which a quantized [`Lin`] on the CPU runs [`crate::qgemv`] rather than dequantizing
/// its weight for an f32 gemm. Each qgemv row is a pass of integer dot products over the weight
/// (its blocks stay in L1 across the rows), the gemm pays one dequantization (4 bytes written per
/// weight) and then runs faster per row. benches/text_gen.rs times both on SmolLM2's `ffn_up`
/// (1536 x 576 Q4_1, 2 threads): qgemv ~0.13 ms a row, dequantization + gemm ~4 ms for up to 32
/// rows, even at about 32.
pub const QGEMV_MAX_ROWS: usize = 24;

impl Lin {
    /// Output features (the weight's rows).
    ///
    /// # Errors
    /// A weight that is not 2-D.
    pub fn out_features(&self) -> candle_core::Result<usize> {
        match self {
            Lin::Dense(l) => l.weight().dim(0),
            Lin::Quant(QMatMul::QTensor(q)) | Lin::CandleQuant(QMatMul::QTensor(q)) => {
                Ok(q.shape().dims2()?.0)
            }
            Lin::Quant(QMatMul::Tensor(w) | QMatMul::TensorF16(w))
            | Lin::CandleQuant(QMatMul::Tensor(w) | QMatMul::TensorF16(w))
            | Lin::F16(w) => w.dim(0),
        }
    }

    /// Bytes of weight (and bias) one forward pass reads.
    pub fn weight_bytes(&self) -> usize {
        let t = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            Lin::Dense(l) => t(l.weight()) + l.bias().map_or(0, t),
            Lin::Quant(QMatMul::QTensor(q)) | Lin::CandleQuant(QMatMul::QTensor(q)) => {
                q.storage_size_in_bytes()
            }
            Lin::Quant(QMatMul::Tensor(w) | QMatMul::TensorF16(w))
            | Lin::CandleQuant(QMatMul::Tensor(w) | QMatMul::TensorF16(w))
            | Lin::F16(w) => t(w),
        }
    }
}

impl Module for Lin {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // One row (a decode step) on the CPU: a matrix-vector product, see cpu_ops::linear.
            // One row: a matrix-vector product; many: our tile kernel (see cpu_ops::linear_bias).
            Lin::Dense(l) => crate::cpu_ops::dense(xs, l),
            Lin::Quant(QMatMul::QTensor(w))
                if xs.device().is_cpu() && crate::qgemv::supports(w.dtype()) =>
            {
                let k = w.shape().dims2()?.1;
                if xs.elem_count() <= QGEMV_MAX_ROWS * k {
                    crate::qgemv::matmul(xs, w)
                } else {
                    crate::qgemv::prompt_matmul(xs, w)
                }
            }
            Lin::Quant(q) | Lin::CandleQuant(q) => q.forward(xs),
            Lin::F16(w) => {
                if xs.elem_count() <= QGEMV_MAX_ROWS * w.dim(1)? {
                    crate::qgemv::matmul_f16(xs, w)
                } else {
                    crate::qgemv::prompt_matmul_f16(xs, w)
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: KvCache,
}

/// Keys and values of past positions, `[b, kv_heads, capacity, head_dim]` buffers written in place.
/// Appending one token copies only that token (a `Tensor::cat` per step would copy the whole cache,
/// O(n) per token); the buffers grow by doubling when full.
#[derive(Debug, Default)]
struct KvCache {
    kv: Option<(Tensor, Tensor)>,
    len: usize,
}

impl Clone for KvCache {
    // The buffers are written in place, so a clone must own its storage.
    fn clone(&self) -> Self {
        let kv = self.kv.as_ref().map(|(k, v)| {
            (
                k.copy().expect("copying a CPU tensor"),
                v.copy().expect("copying a CPU tensor"),
            )
        });
        Self { kv, len: self.len }
    }
}

impl KvCache {
    /// Smallest buffer, in positions, so short chats never regrow.
    const MIN_CAPACITY: usize = 256;

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends contiguous `k`, `v` (`[b, kv_heads, s, head_dim]`) and returns views of every
    /// position so far.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, h, s, d) = k.dims4()?;
        let need = self.len + s;
        let cap = self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0));
        let fits = self.kv.as_ref().is_some_and(|(bk, _)| {
            bk.dims4().ok() == Some((b, h, cap, d)) && bk.dtype() == k.dtype()
        });
        if !fits || need > cap {
            let new_cap = need.max(2 * cap).max(Self::MIN_CAPACITY);
            let nk = Tensor::zeros((b, h, new_cap, d), k.dtype(), k.device())?;
            let nv = Tensor::zeros((b, h, new_cap, d), v.dtype(), v.device())?;
            if let (true, Some((ok, ov))) = (fits, &self.kv) {
                if self.len > 0 {
                    nk.slice_set(&ok.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    nv.slice_set(&ov.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            } else {
                self.len = 0;
            }
            self.kv = Some((nk, nv));
        }
        let need = self.len + s;
        let (bk, bv) = self.kv.as_ref().expect("allocated above");
        bk.slice_set(k, 2, self.len)?;
        bv.slice_set(v, 2, self.len)?;
        self.len = need;
        Ok((bk.narrow(2, 0, need)?, bv.narrow(2, 0, need)?))
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Lin,
    up: Lin,
    down: Lin,
}

#[derive(Debug, Clone)]
struct Layer {
    attn: Attention,
    mlp: Mlp,
    input_norm: candle_nn::RmsNorm,
    post_norm: candle_nn::RmsNorm,
}

/// The decoder: token embeddings, layers with a KV cache, final norm and LM head.
#[derive(Debug, Clone)]
pub struct TextModel {
    embed: Tensor,
    layers: Vec<Layer>,
    norm: candle_nn::RmsNorm,
    lm_head: Lin,
    cos: Tensor,
    sin: Tensor,
    interleaved_rope: bool,
    dtype: DType,
    hidden: usize,
    pos: usize,
    /// The norms' epsilon, for the fused decode step.
    rms_eps: f32,
    /// Single-token steps on the CPU in f32 take [`TextModel::decode_step_cpu`].
    fused_decode: bool,
}

fn rope_tables(
    cfg: &TextConfig,
    max_pos: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), ModelError> {
    let dim = cfg.head_dim();
    let base = cfg.rope_theta();
    // transformers computes the inverse frequencies and angles in f32.
    let mut inv: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64) as f32)
        .collect();
    match cfg.rope_scaling()? {
        RopeScaling::Default => {}
        RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor as f32),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wl = old as f64 / low_freq_factor;
            let high_wl = old as f64 / high_freq_factor;
            for f in inv.iter_mut() {
                let wl = 2.0 * std::f64::consts::PI / *f as f64;
                let fv = *f as f64;
                *f = if wl < high_wl {
                    fv
                } else if wl > low_wl {
                    fv / factor
                } else {
                    let smooth =
                        (old as f64 / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * fv / factor + smooth * fv
                } as f32;
            }
        }
    }
    let half = inv.len();
    let mut angles = Vec::with_capacity(max_pos * half);
    for p in 0..max_pos {
        for f in &inv {
            angles.push(p as f32 * f);
        }
    }
    let t = Tensor::from_vec(angles, (max_pos, half), device)?;
    Ok((t.cos()?, t.sin()?))
}

impl Attention {
    fn forward(
        &mut self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        interleaved: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let q = self
            .q
            .forward(x)?
            .reshape((b, s, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = self
            .k
            .forward(x)?
            .reshape((b, s, self.kv_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = self
            .v
            .forward(x)?
            .reshape((b, s, self.kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        let (q, k) = if interleaved {
            (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            )
        };
        let (k, v) = self.cache.append(&k, &v.contiguous()?)?;
        // Grouped-query attention without repeating K/V, the cache views (capacity > length) read
        // in place; fused on the CPU in f32, candle's ops elsewhere.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = crate::cpu_ops::causal_attention(&q, &k, &v, scale)?;
        self.o
            .forward(&y.reshape((b, s, self.heads * self.head_dim))?)
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.gate.forward(x)?;
        self.down
            .forward(&crate::cpu_ops::silu_mul(&g, &self.up.forward(x)?)?)
    }
}

fn map_load<T>(r: candle_core::Result<T>, what: &str) -> Result<T, ModelError> {
    r.map_err(|e| ModelError::Invalid(format!("{what}: {e}")))
}

impl TextModel {
    /// Builds the decoder from HF safetensors under `vb` (the `model.text_model` prefix), with
    /// `lm_head` given separately (it lives outside that prefix, or is the tied embedding).
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for a missing or misshapen tensor (the message names it), or an
    /// unsupported config.
    pub fn from_varbuilder(
        cfg: &TextConfig,
        vb: VarBuilder,
        lm_head: Option<candle_nn::Linear>,
    ) -> Result<Self, ModelError> {
        if cfg.hidden_act != "silu" {
            return Err(ModelError::Invalid(format!(
                "text_config: hidden_act `{}` is not supported (silu is)",
                cfg.hidden_act
            )));
        }
        let dtype = vb.dtype();
        let device = vb.device().clone();
        let h = cfg.hidden_size;
        let hd = cfg.head_dim();
        let (nh, nkv) = (cfg.num_attention_heads, cfg.kv_heads());
        let lin = |i: usize, o: usize, bias: bool, vb: VarBuilder| -> Result<Lin, ModelError> {
            let l = if bias {
                candle_nn::linear(i, o, vb)
            } else {
                candle_nn::linear_no_bias(i, o, vb)
            };
            l.map(Lin::Dense).map_err(ModelError::from)
        };
        let embed = vb
            .get((cfg.vocab_size, h), "embed_tokens.weight")
            .map_err(ModelError::from)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("layers.{i}"));
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            let ab = cfg.attention_bias;
            let mb = cfg.mlp_bias;
            layers.push(Layer {
                attn: Attention {
                    q: lin(h, nh * hd, ab, a.pp("q_proj"))?,
                    k: lin(h, nkv * hd, ab, a.pp("k_proj"))?,
                    v: lin(h, nkv * hd, ab, a.pp("v_proj"))?,
                    o: lin(nh * hd, h, ab, a.pp("o_proj"))?,
                    heads: nh,
                    kv_heads: nkv,
                    head_dim: hd,
                    cache: KvCache::default(),
                },
                mlp: Mlp {
                    gate: lin(h, cfg.intermediate_size, mb, m.pp("gate_proj"))?,
                    up: lin(h, cfg.intermediate_size, mb, m.pp("up_proj"))?,
                    down: lin(cfg.intermediate_size, h, mb, m.pp("down_proj"))?,
                },
                input_norm: candle_nn::rms_norm(h, cfg.rms_norm_eps, l.pp("input_layernorm"))?,
                post_norm: candle_nn::rms_norm(
                    h,
                    cfg.rms_norm_eps,
                    l.pp("post_attention_layernorm"),
                )?,
            });
        }
        let norm = candle_nn::rms_norm(h, cfg.rms_norm_eps, vb.pp("norm"))?;
        let lm_head = match lm_head {
            Some(l) => Lin::Dense(l),
            None => Lin::Dense(candle_nn::Linear::new(embed.clone(), None)),
        };
        let (cos, sin) = rope_tables(cfg, cfg.max_position_embeddings.max(1), &device)?;
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            cos: cos.to_dtype(dtype)?,
            sin: sin.to_dtype(dtype)?,
            interleaved_rope: false,
            dtype,
            hidden: h,
            pos: 0,
            rms_eps: cfg.rms_norm_eps as f32,
            fused_decode: true,
        })
    }

    /// Builds the decoder from a llama.cpp GGUF file (architecture `llama`), keeping the projection
    /// weights quantized unless `dequantize` is set (then every matmul runs in f32 on dequantized
    /// weights, as transformers does when it loads a GGUF).
    ///
    /// Returns the model and the [`TextConfig`] read from the GGUF metadata.
    ///
    /// # Errors
    /// [`ModelError::Invalid`] for a missing key or tensor, or another architecture.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        dequantize: bool,
    ) -> Result<(Self, TextConfig), ModelError> {
        let md = |k: &str| {
            ct.metadata
                .get(k)
                .ok_or_else(|| ModelError::Invalid(format!("GGUF metadata key `{k}` is missing")))
        };
        let arch = md("general.architecture")?
            .to_string()
            .map_err(ModelError::from)?
            .clone();
        if arch != "llama" {
            return Err(ModelError::Invalid(format!(
                "GGUF architecture `{arch}` is not supported (llama is)"
            )));
        }
        let u = |k: &str| -> Result<usize, ModelError> {
            md(&format!("llama.{k}"))?
                .to_u32()
                .map(|x| x as usize)
                .map_err(ModelError::from)
        };
        let heads = u("attention.head_count")?;
        let kv_heads = u("attention.head_count_kv").unwrap_or(heads);
        let hidden = u("embedding_length")?;
        let layers_n = u("block_count")?;
        let inter = u("feed_forward_length")?;
        let ctx = u("context_length").unwrap_or(2048);
        let eps = md("llama.attention.layer_norm_rms_epsilon")?
            .to_f32()
            .map_err(ModelError::from)? as f64;
        let theta = md("llama.rope.freq_base")
            .and_then(|v| v.to_f32().map_err(ModelError::from))
            .unwrap_or(10000.0) as f64;
        let get = |reader: &mut R, name: &str| -> Result<QTensor, ModelError> {
            map_load(
                ct.tensor(reader, name, device),
                &format!("GGUF tensor `{name}`"),
            )
        };
        let qlin = |reader: &mut R, name: &str| -> Result<Lin, ModelError> {
            let t = get(reader, name)?;
            if dequantize {
                let w = t.dequantize(device)?;
                Ok(Lin::Dense(candle_nn::Linear::new(w, None)))
            } else {
                stored_lin(t)
            }
        };
        let norm = |reader: &mut R, name: &str| -> Result<candle_nn::RmsNorm, ModelError> {
            let w = get(reader, name)?.dequantize(device)?;
            Ok(candle_nn::RmsNorm::new(w, eps))
        };
        let embed_q = get(reader, "token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let vocab = embed.dim(0)?;
        let hd = hidden / heads;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn: Attention {
                    q: qlin(reader, &format!("{p}.attn_q.weight"))?,
                    k: qlin(reader, &format!("{p}.attn_k.weight"))?,
                    v: qlin(reader, &format!("{p}.attn_v.weight"))?,
                    o: qlin(reader, &format!("{p}.attn_output.weight"))?,
                    heads,
                    kv_heads,
                    head_dim: hd,
                    cache: KvCache::default(),
                },
                mlp: Mlp {
                    gate: qlin(reader, &format!("{p}.ffn_gate.weight"))?,
                    up: qlin(reader, &format!("{p}.ffn_up.weight"))?,
                    down: qlin(reader, &format!("{p}.ffn_down.weight"))?,
                },
                input_norm: norm(reader, &format!("{p}.attn_norm.weight"))?,
                post_norm: norm(reader, &format!("{p}.ffn_norm.weight"))?,
            });
        }
        let final_norm = norm(reader, "output_norm.weight")?;
        // SmolLM2 ties the head to the embedding: llama.cpp then omits `output.weight`.
        let lm_head = if ct.tensor_infos.contains_key("output.weight") {
            qlin(reader, "output.weight")?
        } else if dequantize {
            Lin::Dense(candle_nn::Linear::new(embed.clone(), None))
        } else {
            stored_lin(embed_q)?
        };
        let cfg = TextConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers_n,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv_heads),
            head_dim: Some(hd),
            rms_norm_eps: eps,
            rope_theta: Some(theta),
            rope_scaling: None,
            rope_parameters: None,
            max_position_embeddings: ctx,
            hidden_act: "silu".into(),
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: Some(!ct.tensor_infos.contains_key("output.weight")),
            eos_token_id: ct
                .metadata
                .get("tokenizer.ggml.eos_token_id")
                .and_then(|v| v.to_u32().ok())
                .map(|x| serde_json::json!(x)),
        };
        let (cos, sin) = rope_tables(&cfg, ctx.max(1), device)?;
        Ok((
            Self {
                embed,
                layers,
                norm: final_norm,
                lm_head,
                cos,
                sin,
                interleaved_rope: true,
                dtype: DType::F32,
                hidden,
                pos: 0,
                rms_eps: eps as f32,
                fused_decode: true,
            },
            cfg,
        ))
    }

    /// Embeds token ids: `[n]` -> `[n, hidden]`.
    ///
    /// # Errors
    /// [`ModelError::Input`] for an id outside the vocabulary.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        let vocab = self.embed.dim(0)?;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let t = Tensor::new(ids, self.embed.device())?;
        Ok(self.embed.index_select(&t, 0)?)
    }

    /// The model width.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The dtype activations run in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Tokens already in the KV cache.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Longest sequence the rotary tables cover.
    pub fn max_positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// Bytes of weights one single-token decode step reads: every projection, norm and the LM
    /// head (the embedding lookup reads one row, left out). Divided by the memory bandwidth this
    /// is the step's lower bound on a machine where the weights do not fit in cache.
    pub fn decode_weight_bytes(&self) -> usize {
        let norm = |n: &candle_nn::RmsNorm| {
            let w = n.clone().into_inner();
            w.weight().elem_count() * w.weight().dtype().size_in_bytes()
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.attn;
                let m = &l.mlp;
                [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
                    .iter()
                    .map(|x| x.weight_bytes())
                    .sum::<usize>()
                    + norm(&l.input_norm)
                    + norm(&l.post_norm)
            })
            .sum();
        layers + norm(&self.norm) + self.lm_head.weight_bytes()
    }

    /// Runs every quantized projection on candle's `QMatMul` (for any number of rows) instead of
    /// [`crate::qgemv`] and the per-call dequantization: the path before them, for benchmarks.
    pub fn use_candle_qmatmul(&mut self) {
        let swap = |l: &mut Lin| {
            if let Lin::Quant(q) = l {
                *l = Lin::CandleQuant(q.clone());
            }
        };
        for l in &mut self.layers {
            let (a, m) = (&mut l.attn, &mut l.mlp);
            for x in [
                &mut a.q,
                &mut a.k,
                &mut a.v,
                &mut a.o,
                &mut m.gate,
                &mut m.up,
                &mut m.down,
            ] {
                swap(x);
            }
        }
        swap(&mut self.lm_head);
    }

    /// Runs single-token steps through candle's ops like longer inputs, instead of the fused
    /// CPU step ([`TextModel::decode_step_cpu`]): the path before it, for tests and benchmarks.
    pub fn use_unfused_decode(&mut self) {
        self.fused_decode = false;
    }

    /// Empties the KV cache.
    pub fn clear_cache(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            l.attn.cache.clear();
        }
    }

    /// Runs `[1, seq, hidden]` input embeddings after what the cache holds; returns logits `[seq,
    /// vocab]` for every position when `all_logits`, else `[1, vocab]` for the last one (f32).
    ///
    /// # Errors
    /// [`ModelError::Input`] past the rotary tables' length; [`ModelError::Candle`] on failed ops.
    pub fn forward_embeds(
        &mut self,
        embeds: &Tensor,
        all_logits: bool,
    ) -> Result<Tensor, ModelError> {
        let (_, s, _) = embeds.dims3()?;
        let offset = self.pos;
        if offset + s > self.max_positions() {
            return Err(ModelError::Input(format!(
                "{} tokens exceed the model's context of {}",
                offset + s,
                self.max_positions()
            )));
        }
        if s == 1
            && self.fused_decode
            && self.dtype == DType::F32
            && embeds.device().is_cpu()
            && embeds.dtype() == DType::F32
        {
            let x: Vec<f32> = embeds.flatten_all()?.to_vec1()?;
            return Ok(self.decode_step_cpu(x)?);
        }
        let cos = self.cos.narrow(0, offset, s)?;
        let sin = self.sin.narrow(0, offset, s)?;
        let mut x = embeds.to_dtype(self.dtype)?;
        // Each residual add is fused with the norm that follows it (the next layer's input norm,
        // or the layer's own post-attention norm).
        let weight = |n: &candle_nn::RmsNorm| n.clone().into_inner().weight().clone();
        let eps = self.rms_eps;
        let mut h = match self.layers.first() {
            Some(l) => l.input_norm.forward(&x)?,
            None => x.clone(),
        };
        for i in 0..self.layers.len() {
            let next = self.layers.get(i + 1).map(|n| weight(&n.input_norm));
            let l = &mut self.layers[i];
            let a = l.attn.forward(&h, &cos, &sin, self.interleaved_rope)?;
            let (x2, h2) = crate::cpu_ops::add_rms_norm(&x, &a, &weight(&l.post_norm), eps)?;
            let m = l.mlp.forward(&h2)?;
            match next {
                Some(w) => (x, h) = crate::cpu_ops::add_rms_norm(&x2, &m, &w, eps)?,
                None => x = (x2 + m)?,
            }
        }
        self.pos += s;
        let x = if all_logits {
            x.squeeze(0)?
        } else {
            x.narrow(1, s - 1, 1)?.squeeze(0)?
        };
        let x = self.norm.forward(&x)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    /// Runs token ids (a text-only step) after the cache: see [`TextModel::forward_embeds`].
    ///
    /// # Errors
    /// As [`TextModel::forward_embeds`] and [`TextModel::embed_ids`].
    pub fn forward_ids(&mut self, ids: &[u32], all_logits: bool) -> Result<Tensor, ModelError> {
        let e = self.embed_ids(ids)?.unsqueeze(0)?;
        self.forward_embeds(&e, all_logits)
    }
}

/// A GGUF weight kept as stored: F16 on the CPU as [`Lin::F16`] (candle's `QMatMul` would expand
/// it to f32), block formats as [`Lin::Quant`].
fn stored_lin(t: QTensor) -> Result<Lin, ModelError> {
    if t.dtype() == GgmlDType::F16 && matches!(t.device(), Device::Cpu) {
        let (n, k) = t.shape().dims2()?;
        let w = Tensor::from_raw_buffer(&t.data()?, DType::F16, &[n, k], &Device::Cpu)?;
        return Ok(Lin::F16(w));
    }
    Ok(Lin::Quant(QMatMul::from_qtensor(t)?))
}

/// `x * w / rms(x)` as candle's `rms_norm` computes it (sum of squares in f32).
fn rms_norm_row(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    crate::cpu_ops::rms_norm_into(x, w, eps, &mut out);
    out
}

/// A contiguous CPU tensor's storage, read-locked for a decode step.
struct Held<'a> {
    guard: candle_core::StorageRef<'a>,
    range: Option<(usize, usize)>,
}

impl<'a> Held<'a> {
    fn new(t: &'a Tensor) -> Self {
        let (guard, l) = t.storage_and_layout();
        Held {
            guard,
            range: l.contiguous_offsets(),
        }
    }

    fn f32(&self) -> Option<&[f32]> {
        match (&*self.guard, self.range) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
                Some(&v[a..b])
            }
            _ => None,
        }
    }

    fn f16(&self) -> Option<&[half::f16]> {
        match (&*self.guard, self.range) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F16(v)), Some((a, b))) => {
                Some(&v[a..b])
            }
            _ => None,
        }
    }
}

/// A projection's weight held for a decode step ([`HeldLin::proj`] gives its rows).
enum HeldLin<'a> {
    /// f32 (dense) or f16 elements `[out, cols]`.
    Elements(Held<'a>, usize, &'a Lin),
    /// Blocks [`crate::qgemv`] reads.
    Blocks(&'a QTensor, &'a Lin),
    /// Anything else: run whole.
    Whole(&'a Lin),
}

impl<'a> HeldLin<'a> {
    fn new(l: &'a Lin) -> Self {
        let elements = |w: &'a Tensor, dtype| {
            if w.dtype() == dtype && w.device().is_cpu() && w.rank() == 2 {
                HeldLin::Elements(Held::new(w), w.dims()[1], l)
            } else {
                HeldLin::Whole(l)
            }
        };
        match l {
            Lin::Dense(d) if d.bias().is_none() => elements(d.weight(), DType::F32),
            Lin::Quant(QMatMul::Tensor(w)) => elements(w, DType::F32),
            Lin::F16(w) => elements(w, DType::F16),
            Lin::Quant(QMatMul::QTensor(q))
                if crate::qgemv::supports(q.dtype()) && matches!(q.device(), Device::Cpu) =>
            {
                HeldLin::Blocks(q, l)
            }
            _ => HeldLin::Whole(l),
        }
    }

    fn proj(&self) -> Proj<'_> {
        use crate::qgemv::Rows;
        match self {
            HeldLin::Elements(h, k, l) => h
                .f32()
                .map(|w| Rows::F32(w, *k))
                .or_else(|| h.f16().map(|w| Rows::F16(w, *k)))
                .map_or(Proj::Whole(l), Proj::Rows),
            HeldLin::Blocks(q, l) => Rows::quantized(q).map_or(Proj::Whole(l), Proj::Rows),
            HeldLin::Whole(l) => Proj::Whole(l),
        }
    }
}

/// A projection as the decode step's team computes it.
enum Proj<'a> {
    /// Plain rows: any member computes any range of output rows.
    Rows(crate::qgemv::Rows<'a>),
    /// A bias or candle's `QMatMul`: [`Lin::forward_row`] whole, in a team of one.
    Whole(&'a Lin),
}

/// Weight bytes per task of a projection: a few microseconds of work, small next to a stage, so a
/// member the machine slows takes fewer tasks.
const TASK_BYTES: usize = 16 << 10;

impl Proj<'_> {
    fn rows(&self) -> candle_core::Result<usize> {
        match self {
            Proj::Rows(r) => Ok(r.rows()),
            Proj::Whole(l) => l.out_features(),
        }
    }

    fn chunk(&self) -> usize {
        match self {
            Proj::Rows(r) => (TASK_BYTES / r.row_bytes().max(1)).max(4),
            Proj::Whole(_) => usize::MAX,
        }
    }

    fn tasks(&self) -> usize {
        match self {
            Proj::Rows(r) => r.rows().div_ceil(self.chunk()),
            Proj::Whole(_) => 1,
        }
    }
}

/// The first error a member of the team met (the others go on to the end of the step).
type FirstError = std::sync::Mutex<Option<candle_core::Error>>;

fn keep_first(err: &FirstError, e: candle_core::Error) {
    err.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(e);
}

/// `ps` (outputs one after another in `out`) on input `x`, their rows split into tasks over the
/// team.
fn project(
    m: &crate::team::Member,
    ps: &[&Proj],
    x: &[f32],
    out: &crate::team::SharedBuf,
    err: &FirstError,
) {
    let quantized = ps
        .iter()
        .any(|p| matches!(p, Proj::Rows(r) if r.quantized_input()));
    // Every member quantizes the input itself: ~1 us, less than a barrier to share it.
    let xq = quantized.then(|| crate::qgemv::QuantizedRow::new(x));
    let total = ps.iter().map(|p| p.tasks()).sum();
    m.tasks(total, |mut t| {
        let mut off = 0;
        for p in ps {
            let n = p.tasks();
            if t >= n {
                t -= n;
                off += p.rows().unwrap_or(0);
                continue;
            }
            match p {
                Proj::Rows(r) => {
                    let first = t * p.chunk();
                    let len = p.chunk().min(r.rows() - first);
                    // SAFETY: task t alone writes these rows in this stage.
                    let o = unsafe { out.part(off + first..off + first + len) };
                    r.product(x, xq.as_ref(), first, o);
                }
                Proj::Whole(l) => match l.forward_row(x) {
                    Ok(v) => {
                        // SAFETY: this projection's single task alone writes its rows.
                        let o = unsafe { out.part(off..off + v.len()) };
                        o.copy_from_slice(&v);
                    }
                    Err(e) => keep_first(err, e),
                },
            }
            return;
        }
    });
}

impl Lin {
    /// `self(x)` for one input row through [`Module::forward`]: the decode step's path for the
    /// weights its team does not split into rows (see [`Proj::Whole`]).
    fn forward_row(&self, x: &[f32]) -> candle_core::Result<Vec<f32>> {
        let t = Tensor::from_slice(x, (1, 1, x.len()), &Device::Cpu)?;
        self.forward(&t)?.flatten_all()?.to_vec1()
    }
}

/// Rotates every `d`-wide head of `x` by the angles whose cosines and sines are `cos`, `sin`
/// (`d / 2` each): pairs `(2i, 2i + 1)` when `interleaved` (llama.cpp's layout), else
/// `(i, i + d / 2)` (transformers'), as candle's `rope_i` / `rope`.
fn rope_row(x: &mut [f32], d: usize, cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = d / 2;
    for head in x.chunks_exact_mut(d) {
        for i in 0..half {
            let (c, s) = (cos[i], sin[i]);
            let (ia, ib) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
    }
}

/// One query head `qh` against `len` cached positions of its kv head (`kb`, `vb` from `base`, `d`
/// apart) and the new position (`k_new`, `v_new`), into `out`.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    qh: &[f32],
    (kb, vb, base, len): (&[f32], &[f32], usize, usize),
    k_new: &[f32],
    v_new: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let d = qh.len();
    let key = |t: usize| &kb[base + t * d..base + (t + 1) * d];
    let mut p: Vec<f32> = (0..len)
        .map(|t| crate::cpu_ops::dot(qh, key(t)) * scale)
        .chain(std::iter::once(crate::cpu_ops::dot(qh, k_new) * scale))
        .collect();
    crate::cpu_ops::softmax_row(&mut p, 1.0);
    out.fill(0.0);
    for (t, &w) in p.iter().enumerate() {
        let v = if t < len {
            &vb[base + t * d..base + (t + 1) * d]
        } else {
            v_new
        };
        for (o, &v) in out.iter_mut().zip(v) {
            *o += w * v;
        }
    }
}

impl TextModel {
    /// One token through the decoder on the CPU in f32 (`x`: its embedding), on plain slices:
    /// the same maths as [`TextModel::forward_embeds`] without the ~30 candle ops a layer (each
    /// allocating its output). The step runs as one [`crate::team`] of rayon's thread count
    /// (the CLI's `--threads`): five stages a layer (q/k/v, attention heads, o, gate/up, down),
    /// each split into tasks of output rows or heads, with a barrier between stages instead of a
    /// parallel region for every projection. Small per-token work (norms, rotary, activation,
    /// quantizing a projection's input) is repeated by every member rather than shared through a
    /// barrier. A projection the team cannot split (a bias, candle's `QMatMul`) makes it a team
    /// of one that runs such projections whole. Returns the logits `[1, vocab]`.
    fn decode_step_cpu(&mut self, x0: Vec<f32>) -> candle_core::Result<Tensor> {
        let pos = self.pos;
        let norm_weight = |n: &candle_nn::RmsNorm| n.clone().into_inner().weight().clone();
        let norms: Vec<(Tensor, Tensor)> = self
            .layers
            .iter()
            .map(|l| (norm_weight(&l.input_norm), norm_weight(&l.post_norm)))
            .collect();
        let final_norm = norm_weight(&self.norm);
        let TextModel {
            layers,
            lm_head,
            cos,
            sin,
            interleaved_rope,
            rms_eps,
            hidden,
            ..
        } = self;
        let (interleaved, eps, hidden) = (*interleaved_rope, *rms_eps, *hidden);
        let d0 = layers.first().map_or(hidden, |l| l.attn.head_dim);
        let row = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
            crate::qgemv::with_f32(t, |v| v[pos * (d0 / 2)..(pos + 1) * (d0 / 2)].to_vec())
        };
        let (cos, sin) = (row(cos)?, row(sin)?);

        // Every weight read-locked once for the step, then viewed as plain rows.
        let mut held = Vec::with_capacity(layers.len());
        let mut caches = Vec::with_capacity(layers.len());
        for l in layers.iter_mut() {
            let Attention {
                q,
                k,
                v,
                o,
                heads,
                kv_heads,
                head_dim,
                cache,
            } = &mut l.attn;
            let m = &l.mlp;
            let lins = [q, k, v, o, &m.gate, &m.up, &m.down].map(HeldLin::new);
            held.push((lins, *heads, *kv_heads, *head_dim));
            caches.push(std::sync::Mutex::new(cache));
        }
        let held_norms: Vec<(Held, Held)> = norms
            .iter()
            .map(|(a, b)| (Held::new(a), Held::new(b)))
            .collect();
        let held_final = Held::new(&final_norm);
        let held_head = HeldLin::new(lm_head);
        fn f32_of<'b>(h: &'b Held) -> candle_core::Result<&'b [f32]> {
            h.f32()
                .ok_or_else(|| candle_core::Error::Msg("decode step: norm weight not f32".into()))
        }
        struct View<'a> {
            p: [Proj<'a>; 7],
            norms: (&'a [f32], &'a [f32]),
            heads: usize,
            kv_heads: usize,
            d: usize,
        }
        let mut views = Vec::with_capacity(held.len());
        for ((lins, heads, kv_heads, d), (a, b)) in held.iter().zip(&held_norms) {
            views.push(View {
                p: [0, 1, 2, 3, 4, 5, 6].map(|i| lins[i].proj()),
                norms: (f32_of(a)?, f32_of(b)?),
                heads: *heads,
                kv_heads: *kv_heads,
                d: *d,
            });
        }
        let head = held_head.proj();
        let final_w = f32_of(&held_final)?;

        let whole = matches!(head, Proj::Whole(_))
            || views
                .iter()
                .any(|v| v.p.iter().any(|p| matches!(p, Proj::Whole(_))));
        let size = if whole {
            1
        } else {
            rayon::current_num_threads()
        };
        let mut widths = [0usize; 4];
        for v in &views {
            let r = |i: usize| v.p[i].rows();
            widths[0] = widths[0].max(r(0)? + r(1)? + r(2)?);
            widths[1] = widths[1].max(v.heads * v.d);
            widths[2] = widths[2].max(r(4)? + r(5)?);
        }
        widths[3] = head.rows()?;
        let mut bufs = widths.map(|n| vec![0f32; n]);
        let mut o_buf = vec![0f32; hidden];
        let mut dn_buf = vec![0f32; hidden];
        let err = FirstError::default();
        {
            let [qkv, y, gu, logits] = &mut bufs;
            let (qkv, y, gu, logits) = (
                crate::team::SharedBuf::new(qkv),
                crate::team::SharedBuf::new(y),
                crate::team::SharedBuf::new(gu),
                crate::team::SharedBuf::new(logits),
            );
            let (o_sh, dn_sh) = (
                crate::team::SharedBuf::new(&mut o_buf),
                crate::team::SharedBuf::new(&mut dn_buf),
            );
            let stages = 5 * views.len() + 1;
            crate::team::run(size, stages, |m| {
                let mut x = x0.clone();
                for (v, cache) in views.iter().zip(&caches) {
                    let (d, heads, kvh) = (v.d, v.heads, v.kv_heads);
                    let h = rms_norm_row(&x, v.norms.0, eps);
                    project(m, &[&v.p[0], &v.p[1], &v.p[2]], &h, &qkv, &err);
                    m.sync();
                    // SAFETY: the q/k/v stage ended at the barrier above; nobody writes `qkv`
                    // again before the next layer's (after three more barriers).
                    let all = unsafe { qkv.all() };
                    let (qs, rest) = all.split_at(heads * d);
                    let (ks, vs) = rest.split_at(kvh * d);
                    let vs = &vs[..kvh * d];
                    let mut k_new = ks.to_vec();
                    rope_row(&mut k_new, d, &cos, &sin, interleaved);
                    let scale = (1.0 / (d as f64).sqrt()) as f32;
                    {
                        let (kv, len) = {
                            let c = cache.lock().unwrap_or_else(|p| p.into_inner());
                            (c.kv.clone(), c.len)
                        };
                        // Dropped before the barrier: member 0 appends to the cache after it.
                        let held_kv = kv.as_ref().map(|(k, v)| (Held::new(k), Held::new(v)));
                        let (kb, vb, cap) = match (&held_kv, &kv) {
                            (Some((hk, hv)), Some((k, _))) => (
                                hk.f32().unwrap_or(&[]),
                                hv.f32().unwrap_or(&[]),
                                k.dim(2).unwrap_or(0),
                            ),
                            _ => (&[][..], &[][..], 0),
                        };
                        let rep = heads / kvh.max(1);
                        m.tasks(heads, |hd| {
                            let g = hd / rep;
                            let mut qh = qs[hd * d..(hd + 1) * d].to_vec();
                            rope_row(&mut qh, d, &cos, &sin, interleaved);
                            // SAFETY: head hd's task alone writes its slice of `y` here.
                            let out = unsafe { y.part(hd * d..(hd + 1) * d) };
                            if len > 0 && (kb.len() < (g * cap + len) * d || vb.len() < kb.len()) {
                                keep_first(
                                    &err,
                                    candle_core::Error::Msg(
                                        "decode step: KV cache shorter than its length".into(),
                                    ),
                                );
                                return;
                            }
                            attend_head(
                                &qh,
                                (kb, vb, g * cap * d, len),
                                &k_new[g * d..(g + 1) * d],
                                &vs[g * d..(g + 1) * d],
                                scale,
                                out,
                            );
                        });
                    }
                    m.sync();
                    if m.index() == 0 {
                        // The attention stage is over: nobody reads the cache until the next
                        // step.
                        let shape = (1, kvh, 1, d);
                        let appended = Tensor::from_vec(k_new, shape, &Device::Cpu).and_then(|k| {
                            let v = Tensor::from_vec(vs.to_vec(), shape, &Device::Cpu)?;
                            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
                            c.append(&k, &v).map(|_| ())
                        });
                        if let Err(e) = appended {
                            keep_first(&err, e);
                        }
                    }
                    // SAFETY: the attention stage ended at the barrier above.
                    let ya = unsafe { &y.all()[..heads * d] };
                    project(m, &[&v.p[3]], ya, &o_sh, &err);
                    m.sync();
                    // SAFETY: the o stage ended at the barrier above.
                    x.iter_mut()
                        .zip(unsafe { o_sh.all() })
                        .for_each(|(x, o)| *x += o);
                    let h = rms_norm_row(&x, v.norms.1, eps);
                    project(m, &[&v.p[4], &v.p[5]], &h, &gu, &err);
                    m.sync();
                    // SAFETY: the gate/up stage ended at the barrier above.
                    let g_u = unsafe { gu.all() };
                    let inter = v.p[4].rows().unwrap_or(0);
                    let mut act = g_u[..inter].to_vec();
                    crate::cpu_ops::silu_mul_slice(&mut act, &g_u[inter..2 * inter]);
                    project(m, &[&v.p[6]], &act, &dn_sh, &err);
                    m.sync();
                    // SAFETY: the down stage ended at the barrier above.
                    x.iter_mut()
                        .zip(unsafe { dn_sh.all() })
                        .for_each(|(x, o)| *x += o);
                }
                let h = rms_norm_row(&x, final_w, eps);
                project(m, &[&head], &h, &logits, &err);
            });
        }
        if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        self.pos += 1;
        let [_, _, _, logits] = bufs;
        let n = logits.len();
        Tensor::from_vec(logits, (1, n), &Device::Cpu)
    }
}
