//! Pieces the pipeline subcommands (`summarize`, `ask`, `batch`) share: [`PipelineArgs`], the
//! pipeline flags (a preset, `--pipeline FILE`, is loaded first and every flag given overrides
//! it), time and duration parsing, model loading and the progress spinner.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use vidlm_pipeline::{install_ctrlc, CancelToken, Pipeline, PipelineConfig, VisualCache};

/// Pipeline flags shared by `summarize`, `ask` and `batch`; each overrides the preset's value.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// A preset (pipelines/*.toml): sampling, chunking, pooling, model, prompts, output.
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// Model directory or hub id; or a llama.cpp GGUF text model (with --mmproj, or the one
    /// mmproj*.gguf next to it), or a directory holding both GGUF files.
    #[arg(long, short = 'm', value_name = "M")]
    pub model: Option<String>,
    /// The vision projector GGUF of a GGUF --model (llama.cpp's mmproj file).
    #[arg(long, value_name = "FILE")]
    pub mmproj: Option<PathBuf>,
    /// Frame sampling: fps:N, frames:N, keyframes, scene:T or all.
    #[arg(long, value_name = "S")]
    pub sample: Option<String>,
    /// Most frames sampled per video.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<usize>,
    /// Most frames per prompt (default: the model's own limit; Qwen3-VL's frame pairs count as
    /// two).
    #[arg(long, value_name = "N")]
    pub prompt_frames: Option<usize>,
    /// Token pooling: none, mean:K, spatial:KxK, adaptive:TAU, or a `+`-joined chain.
    #[arg(long, value_name = "P")]
    pub pool: Option<String>,
    /// Chunking of long videos: auto, whole, fixed:SECONDS or scene:T[:MIN[:MAX]].
    #[arg(long, value_name = "C")]
    pub chunk: Option<String>,
    /// Rolling window for live inputs (rtsp, hls, http streams, `-`), e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Merge adjacent chunks whose descriptions are at least this similar (0-1; above 1: never).
    #[arg(long, value_name = "X")]
    pub merge_threshold: Option<f64>,
    /// Most new tokens per model call.
    #[arg(long, value_name = "N")]
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature (0: greedy).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Sampler seed.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// CPU threads for the model.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Where the model runs: auto, cpu, cuda or cuda:N. CUDA needs a CUDA build
    /// (scripts/build-cuda.sh); without a usable GPU the model runs on the CPU, with one warning.
    #[arg(long, value_name = "D")]
    pub device: Option<String>,
    /// Weight and activation dtype: f32 (CPU default), bf16 or f16 (for accelerators).
    #[arg(long, value_parser = ["f32", "bf16", "f16"])]
    pub dtype: Option<String>,
    /// Expand a GGUF model's quantized text weights to f32 at load, as transformers does (exact
    /// dequantized logits, more memory, slower decoding). By default they stay quantized, as in
    /// llama.cpp.
    #[arg(long)]
    pub dequantize: bool,
    /// Videos decoded at once.
    #[arg(long, value_name = "N")]
    pub decode_workers: Option<usize>,
    /// Frames per vision encoder call (across videos).
    #[arg(long, value_name = "N")]
    pub encode_batch: Option<usize>,
    /// Load a second model instance so vision encoding overlaps generation.
    #[arg(long)]
    pub separate_encoder: bool,
    /// Print the run's metrics (frames decoded and sampled, tokens in and out, busy seconds per
    /// stage, peak memory) as one JSON line on stderr.
    #[arg(long)]
    pub metrics: bool,
    /// `ask`/`summarize`: neither read nor write the visual-token cache (also VIDLM_NO_CACHE=1).
    #[arg(long)]
    pub no_cache: bool,
    /// `ask`/`summarize`: the visual-token cache's directory (default: $VIDLM_CACHE_DIR, else
    /// $XDG_CACHE_HOME/vidlm, else ~/.cache/vidlm).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// `ask`/`summarize`: the visual-token cache's size bound, e.g. 500M or 2G (default 2G); the
    /// least recently used entries go first.
    #[arg(long, value_name = "BYTES", value_parser = crate::serve::parse_bytes)]
    pub cache_size: Option<u64>,
}

impl PipelineArgs {
    /// The preset (or the defaults) with the flags applied.
    pub fn config(&self) -> anyhow::Result<PipelineConfig> {
        let mut cfg = match &self.pipeline {
            Some(p) => PipelineConfig::load(p)?,
            None => PipelineConfig::default(),
        };
        if let Some(m) = &self.model {
            cfg.model.id = m.clone();
        }
        if self.mmproj.is_some() {
            cfg.model.mmproj = self.mmproj.clone();
        }
        if let Some(s) = &self.sample {
            cfg.sampling.strategy = s.clone();
        }
        if self.max_frames.is_some() {
            cfg.sampling.max_frames = self.max_frames;
        }
        if self.prompt_frames.is_some() {
            cfg.model.max_frames = self.prompt_frames;
        }
        if self.threads.is_some() {
            cfg.model.threads = self.threads;
        }
        if let Some(d) = &self.device {
            cfg.model.device = d.parse().context("--device")?;
        }
        if let Some(d) = &self.dtype {
            cfg.model.dtype = d.parse().context("--dtype")?;
        }
        if self.dequantize {
            cfg.model.dequantize = true;
        }
        if let Some(p) = &self.pool {
            cfg.pooling.method = p.parse().context("--pool")?;
        }
        if let Some(c) = &self.chunk {
            cfg.chunking.policy = c.parse().context("--chunk")?;
        }
        if let Some(w) = &self.window {
            cfg.chunking.window = parse_duration(w).context("--window")?;
        }
        if let Some(x) = self.merge_threshold {
            cfg.chunking.merge_threshold = x;
        }
        if let Some(n) = self.max_new_tokens {
            cfg.generation.max_new_tokens = n;
        }
        if let Some(t) = self.temperature {
            cfg.generation.temperature = t;
        }
        if let Some(s) = self.seed {
            cfg.generation.seed = s;
        }
        if let Some(n) = self.decode_workers {
            cfg.workers.decode = n;
        }
        if let Some(n) = self.encode_batch {
            cfg.workers.encode_batch = n;
        }
        if self.separate_encoder {
            cfg.workers.separate_encoder = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads the model and builds the pipeline, with Ctrl-C wired to its cancel token.
    pub fn build(&self) -> anyhow::Result<Pipeline> {
        let cancel = CancelToken::new();
        install_ctrlc(&cancel)?;
        self.build_with_token(self.config()?, cancel)
    }

    /// The visual-token cache these flags ask for: `None` with `--no-cache` or VIDLM_NO_CACHE
    /// set, or where no cache directory can be found.
    pub fn visual_cache(&self) -> anyhow::Result<Option<VisualCache>> {
        let off = std::env::var_os("VIDLM_NO_CACHE").is_some_and(|v| !v.is_empty() && v != "0");
        if self.no_cache || off {
            tracing::debug!("visual-token cache off");
            return Ok(None);
        }
        let Some(dir) = self.cache_dir.clone().or_else(VisualCache::default_dir) else {
            tracing::debug!("no cache directory (HOME unset): visual-token cache off");
            return Ok(None);
        };
        let max = self.cache_size.unwrap_or(vidlm_pipeline::DEFAULT_MAX_BYTES);
        let cache = VisualCache::disk(&dir, max)
            .with_context(|| format!("visual-token cache {}", dir.display()))?;
        tracing::debug!(?cache, "visual-token cache");
        Ok(Some(cache))
    }

    /// Like [`Self::build`] with `cfg` (from [`Self::config`], possibly adjusted), plus the
    /// visual-token cache of [`Self::visual_cache`] (`ask` and `summarize`).
    pub fn build_cached(&self, cfg: PipelineConfig) -> anyhow::Result<Pipeline> {
        let cancel = CancelToken::new();
        install_ctrlc(&cancel)?;
        let mut builder = Pipeline::builder().config(cfg).cancel_token(cancel);
        if let Some(cache) = self.visual_cache()? {
            builder = builder.cache(cache);
        }
        Ok(builder.build()?)
    }

    /// Builds the pipeline for `cfg` with `cancel` as its token, for callers that handle signals
    /// themselves (`vidlm worker`). The one place the CLI loads models (through the pipeline's
    /// loader and the model registry).
    pub fn build_with_token(
        &self,
        cfg: PipelineConfig,
        cancel: CancelToken,
    ) -> anyhow::Result<Pipeline> {
        // The load error names the model; nothing to add.
        Ok(Pipeline::builder()
            .config(cfg)
            .cancel_token(cancel)
            .build()?)
    }
}

/// Parses a duration: `30s`, `30`, `1.5m`, `1:30`.
pub fn parse_duration(s: &str) -> anyhow::Result<f64> {
    let t = s.trim();
    let secs = if let Some(m) = t.strip_suffix('m') {
        m.trim().parse::<f64>().map(|m| m * 60.0).ok()
    } else {
        vidlm_media::parse_time(t.strip_suffix('s').unwrap_or(t)).ok()
    };
    match secs {
        Some(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => bail!("`{s}` is not a duration (e.g. 30s, 2m, 1:30)"),
    }
}

/// Parses `--from/--to`: seconds or `[HH:]MM:SS`.
pub fn parse_time_arg(s: &str) -> Result<f64, String> {
    vidlm_media::parse_time(s).map_err(|e| e.to_string())
}

/// A spinner on stderr when it is a terminal.
pub fn progress_spinner() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb.set_message("decoding");
    Some(pb)
}
