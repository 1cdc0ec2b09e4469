//! Pipeline configuration: every knob of a run, loadable from a TOML preset (`pipelines/*.toml`).
//!
//! Every field has a default, so a preset names only what it changes; unknown keys are errors so
//! a typo never passes silently. The command line loads a preset with `--pipeline FILE` and then
//! overrides fields with its flags.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Chunking, DeviceChoice, PipelineError, Pooling, Result};

/// The whole configuration of a run.
///
/// ```
/// let cfg = vidlm_pipeline::PipelineConfig::from_toml_str(
///     "[sampling]\nstrategy = \"fps:2\"\n[pooling]\nmethod = \"mean:2\"\n",
/// ).unwrap();
/// assert_eq!(cfg.sampling.strategy, "fps:2");
/// assert_eq!(cfg.pooling.method.to_string(), "mean:2");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Which model.
    pub model: ModelConfig,
    /// Which frames.
    pub sampling: SamplingConfig,
    /// How videos are cut for the language model.
    pub chunking: ChunkingConfig,
    /// Token pooling between encoder and language model.
    pub pooling: PoolingConfig,
    /// Prompt templates.
    pub prompts: PromptConfig,
    /// Text generation.
    pub generation: GenerationConfig,
    /// Stage widths and queues.
    pub workers: WorkerConfig,
    /// Output defaults.
    pub output: OutputConfig,
}

impl PipelineConfig {
    /// Parses a TOML preset.
    ///
    /// # Errors
    /// [`PipelineError::Config`] for malformed TOML, unknown keys or invalid values.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            PipelineError::Config(e.to_string().lines().collect::<Vec<_>>().join(" "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads a TOML preset file.
    ///
    /// # Errors
    /// [`PipelineError::Io`] when unreadable, [`PipelineError::File`] when invalid.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
        Self::from_toml_str(&text).map_err(|e| PipelineError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Checks values that parse but make no sense together.
    ///
    /// # Errors
    /// [`PipelineError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, why: &str| Err(PipelineError::Config(format!("{f}: {why}")));
        crate::source::check_strategy(&self.sampling.strategy)?;
        if let Some(size) = &self.sampling.size {
            vidlm_media::parse_size(size)?;
        }
        if self.sampling.max_frames == Some(0) {
            return bad("sampling.max_frames", "must be at least 1");
        }
        if !(self.chunking.window.is_finite() && self.chunking.window > 0.0) {
            return bad("chunking.window", "must be a positive number of seconds");
        }
        let w = &self.workers;
        if w.decode == 0 || w.preprocess == 0 || w.queue == 0 || w.encode_batch == 0 {
            return bad(
                "workers",
                "decode, preprocess, queue and encode_batch must be >= 1",
            );
        }
        if self.generation.max_new_tokens == 0 {
            return bad("generation.max_new_tokens", "must be at least 1");
        }
        if !self.prompts.ask.contains("{question}") {
            return bad("prompts.ask", "must contain {question}");
        }
        Ok(())
    }
}

/// Which model to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A local model directory or a hub id; or a llama.cpp GGUF text model or a directory
    /// holding one with its mmproj.
    pub id: String,
    /// The vision projector GGUF (llama.cpp's mmproj) of a GGUF `id`; found next to it when unset.
    pub mmproj: Option<std::path::PathBuf>,
    /// Most frames per prompt (None: the checkpoint's own limit). Longer videos are chunked so
    /// each chunk fits. A model that encodes frames in groups (Qwen3-VL: pairs) gets
    /// `max_frames / frames per group` groups.
    pub max_frames: Option<usize>,
    /// CPU threads for the model's matmuls (None: all cores).
    pub threads: Option<usize>,
    /// Where the model runs: `auto` (CUDA in a CUDA build when a device answers, else the CPU),
    /// `cpu`, `cuda` or `cuda:N`; see [`DeviceChoice`].
    pub device: DeviceChoice,
    /// Weight and activation dtype: `f32` (the CPU default), `bf16` or `f16` (for accelerators).
    pub dtype: DtypeChoice,
    /// GGUF text weights expanded to f32 at load, as transformers loads a GGUF (exact dequantized
    /// logits; 4-8x the memory of a 4-bit file and about half the decode speed). By default they
    /// stay quantized and run on quantized kernels with 8-bit activations, as llama.cpp does.
    /// No effect on safetensors checkpoints.
    pub dequantize: bool,
}

impl ModelConfig {
    /// The model crate's load options for this configuration (the device resolved now: a CUDA
    /// device that does not answer falls back to the CPU with one warning).
    pub fn load_options(&self) -> vidlm_models::LoadOptions {
        vidlm_models::LoadOptions {
            threads: self.threads,
            max_frames: self.max_frames,
            dtype: self.dtype.dtype(),
            device: self.device.device(),
            mmproj: self.mmproj.clone(),
            gguf_dequantize: self.dequantize,
            ..Default::default()
        }
    }
}

/// The dtype a model is loaded in.
///
/// ```
/// use vidlm_pipeline::DtypeChoice;
/// assert_eq!("bf16".parse::<DtypeChoice>().unwrap(), DtypeChoice::Bf16);
/// assert_eq!(DtypeChoice::default().to_string(), "f32");
/// assert!("f8".parse::<DtypeChoice>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtypeChoice {
    /// 32-bit floats (CPU).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl DtypeChoice {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

impl std::str::FromStr for DtypeChoice {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(PipelineError::Config(format!(
                "dtype {s}: expected f32, bf16 or f16"
            ))),
        }
    }
}

impl std::fmt::Display for DtypeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            id: "HuggingFaceTB/SmolVLM2-256M-Video-Instruct".into(),
            mmproj: None,
            max_frames: None,
            threads: None,
            device: DeviceChoice::Auto,
            dtype: DtypeChoice::F32,
            dequantize: false,
        }
    }
}

/// Which frames reach the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// `fps:N`, `frames:N`, `keyframes`, `scene:T` or `all` (vidlm-media's syntax).
    pub strategy: String,
    /// At most this many frames per job (the sampler thins its rate to fit).
    pub max_frames: Option<usize>,
    /// Resize frames to `WxH` while decoding (None: the model's processor resizes).
    pub size: Option<String>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            strategy: "fps:1".into(),
            max_frames: None,
            size: None,
        }
    }
}

/// How a job's frames are grouped into chunks for the language model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingConfig {
    /// `auto`, `whole`, `fixed:SECONDS` or `scene:T[:MIN[:MAX]]`.
    pub policy: Chunking,
    /// Rolling window length in seconds for live inputs (rtsp, hls, http, `-`).
    pub window: f64,
    /// Adjacent chunk descriptions with word-set similarity at or above this merge into one
    /// segment (above 1.0: never merge).
    pub merge_threshold: f64,
    /// Most characters of chunk descriptions one summary prompt carries; more are summarized in
    /// rounds (map-reduce).
    pub reduce_max_chars: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            policy: Chunking::Auto,
            window: 30.0,
            merge_threshold: 0.8,
            reduce_max_chars: 4000,
        }
    }
}

/// Token pooling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolingConfig {
    /// `none`, `mean:K`, `spatial:KxK`, `adaptive:TAU`, or a `+`-joined chain.
    pub method: Pooling,
}

/// Prompt templates. Placeholders: `{start}`, `{end}` (M:SS), `{duration}`, `{question}`,
/// `{segments}` (timestamped chunk descriptions, one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptConfig {
    /// A clip that fits one prompt.
    pub describe_clip: String,
    /// One chunk of a longer video.
    pub describe_chunk: String,
    /// The overall summary from the chunk descriptions.
    pub summarize: String,
    /// A question.
    pub ask: String,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            describe_clip: "Describe what happens in this video.".into(),
            describe_chunk: "This is the part of a longer video from {start} to {end}. \
                             Describe what happens in it."
                .into(),
            summarize:
                "Here are descriptions of consecutive parts of a {duration} video, each \
                        with its time range:\n{segments}\nWrite a short summary of the whole video."
                    .into(),
            ask: "{question}".into(),
        }
    }
}

/// Text generation settings (see `vidlm_models::GenerationParams`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Most new tokens per model call.
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus threshold (1.0 disables).
    pub top_p: f64,
    /// Top-k (0 disables).
    pub top_k: usize,
    /// Repetition penalty (1.0 disables).
    pub repetition_penalty: f32,
    /// Sampler seed.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        let d = vidlm_models::GenerationParams::default();
        Self {
            max_new_tokens: 128,
            temperature: d.temperature,
            top_p: d.top_p,
            top_k: d.top_k,
            repetition_penalty: d.repetition_penalty,
            seed: d.seed,
        }
    }
}

impl GenerationConfig {
    /// The model crate's parameters.
    pub fn params(&self) -> vidlm_models::GenerationParams {
        vidlm_models::GenerationParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: None,
        }
    }
}

/// Stage widths and queue sizes of the worker graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Decode threads = videos decoded at once.
    pub decode: usize,
    /// Preprocess threads (a video always goes through the same one, keeping its frame order).
    pub preprocess: usize,
    /// Capacity of each queue between stages, in messages (frames or chunks): the backpressure.
    pub queue: usize,
    /// Most frames (from any videos) per vision encoder call.
    pub encode_batch: usize,
    /// Load a second model instance for the vision encoder so encoding overlaps generation
    /// (twice the weights in memory).
    pub separate_encoder: bool,
    /// Run the stages concurrently (the default). `false` runs each stage to completion before
    /// the next starts, the same work without overlap: the baseline of the pipeline benchmark.
    pub overlap: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            decode: 2,
            preprocess: 1,
            queue: 16,
            encode_batch: 8,
            separate_encoder: false,
            overlap: true,
        }
    }
}

/// Output defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// `json`, `md`, `srt` or `vtt`.
    pub format: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            format: "json".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_roundtrip() {
        let cfg = PipelineConfig::default();
        cfg.validate().unwrap();
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(PipelineConfig::from_toml_str(&text).unwrap(), cfg);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = PipelineConfig::from_toml_str("[sampling]\nstrategi = \"fps:1\"\n").unwrap_err();
        assert!(e.to_string().contains("strategi"), "{e}");
        assert!(PipelineConfig::from_toml_str("[sampling]\nstrategy = \"fps:0\"\n").is_err());
        assert!(PipelineConfig::from_toml_str("[pooling]\nmethod = \"mean:0\"\n").is_err());
        assert!(PipelineConfig::from_toml_str("[workers]\nqueue = 0\n").is_err());
        assert!(PipelineConfig::from_toml_str("[sampling]\nsize = \"384\"\n").is_err());
        assert!(PipelineConfig::from_toml_str("[prompts]\nask = \"what?\"\n").is_err());
        let e = PipelineConfig::from_toml_str("[model]\ndevice = \"gpu\"\n").unwrap_err();
        assert!(e.to_string().contains("cuda:N"), "{e}");
        let cfg = PipelineConfig::from_toml_str("[model]\ndevice = \"cuda:1\"\n").unwrap();
        assert_eq!(cfg.model.device, DeviceChoice::Cuda(1));
    }
}
