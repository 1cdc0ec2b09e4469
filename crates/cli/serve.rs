//! `vidlm serve`: the OpenAI-compatible server (vidlm-server) on a tokio runtime, stopped by
//! SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use vidlm_pipeline::PipelineConfig;
use vidlm_server::{ServedModelSpec, Server, ServerConfig};

use crate::common::parse_duration;

/// Arguments of `vidlm serve`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  vidlm serve --model HuggingFaceTB/SmolVLM2-256M-Video-Instruct\n  \
                        vidlm serve --model smol=models/smolvlm2 --port 9000 --api-key secret\n\n\
                        Requests start from `vidlm ask`'s defaults (frames:8, 256 new tokens, \
                        greedy) or the --pipeline preset."
)]
pub struct Args {
    /// A model directory or hub id, served under that name, or ID=MODEL (repeatable).
    #[arg(long, short = 'm', value_name = "M", required = true)]
    model: Vec<String>,
    /// Listening address; anything but loopback exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Listening port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// A preset (pipelines/*.toml) requests start from.
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Frame sampling when a request does not say (fps:N, frames:N, keyframes, scene:T, all).
    #[arg(long, value_name = "S")]
    sample: Option<String>,
    /// New tokens when a request does not say.
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// CPU threads for the model.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Where the model runs: auto, cpu, cuda or cuda:N.
    #[arg(long, value_name = "D")]
    device: Option<String>,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    dtype: String,
    /// Expand GGUF models' quantized text weights to f32 at load (as transformers does); by
    /// default they stay quantized, as in llama.cpp.
    #[arg(long)]
    dequantize: bool,
    /// Require `Authorization: Bearer KEY` (default: the VIDLM_API_KEY environment variable).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// `file://` media must be inside this directory.
    #[arg(long, default_value = ".", value_name = "DIR")]
    media_root: PathBuf,
    /// Most bytes of a request body (413 above), e.g. 256M.
    #[arg(long, default_value = "256M", value_parser = parse_bytes)]
    max_body: u64,
    /// Most requests waiting per model (429 above).
    #[arg(long, default_value_t = 16)]
    max_queue: usize,
    /// Most video requests with the same settings run together (their frames share encoder
    /// batches).
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Most frames one request may sample.
    #[arg(long, default_value_t = 256)]
    max_frames: usize,
    /// Most video one request may ask about (its from..to of the duration), e.g. 60m or 600s.
    #[arg(long, default_value = "60m")]
    max_duration: String,
    /// Fetch http(s):// media named in requests.
    #[arg(long)]
    allow_remote_media: bool,
    /// Most bytes of one fetched media item, e.g. 100M.
    #[arg(long, default_value = "256M", value_parser = parse_bytes)]
    remote_max_bytes: u64,
    /// Most time one fetch may take, e.g. 30s.
    #[arg(long, default_value = "30s")]
    remote_timeout: String,
    /// After SIGTERM, how long requests in flight may run before they are cancelled, e.g. 10s.
    #[arg(long, default_value = "10s")]
    shutdown_timeout: String,
    /// Keep no visual tokens between requests (each request on a clip decodes and encodes it).
    #[arg(long)]
    no_cache: bool,
    /// Bytes of visual tokens each model keeps in memory for clips asked about again, e.g. 1G.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    cache_size: u64,
}

/// `256M`, `1G`, `4096`, `64K` (powers of 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mul: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("`{s}`: expected a size like 4096, 64K, 256M or 1G")),
            };
            (&t[..i], mul)
        }
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{s}`: expected a size like 4096, 64K, 256M or 1G"))
}

impl Args {
    fn pipeline_config(&self) -> anyhow::Result<PipelineConfig> {
        let mut cfg = match &self.pipeline {
            Some(p) => PipelineConfig::load(p)?,
            None => {
                // `vidlm ask`'s defaults, so a request answers as `vidlm ask` does.
                let mut c = PipelineConfig::default();
                c.sampling.strategy = crate::ask::DEFAULT_SAMPLE.to_string();
                c.generation.max_new_tokens = crate::ask::DEFAULT_MAX_NEW_TOKENS;
                c
            }
        };
        if let Some(s) = &self.sample {
            s.parse::<vidlm_media::SamplingStrategy>()
                .with_context(|| format!("--sample {s}"))?;
            cfg.sampling.strategy = s.clone();
        }
        if let Some(n) = self.max_new_tokens {
            cfg.generation.max_new_tokens = n;
        }
        if self.threads.is_some() {
            cfg.model.threads = self.threads;
        }
        if let Some(d) = &self.device {
            cfg.model.device = d.parse().context("--device")?;
        }
        if self.dequantize {
            cfg.model.dequantize = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `vidlm serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = ServerConfig::new(
        args.model
            .iter()
            .map(|m| ServedModelSpec::parse(m))
            .collect(),
    );
    config.pipeline = args.pipeline_config()?;
    config.dtype = args
        .dtype
        .parse::<vidlm_pipeline::DtypeChoice>()
        .context("--dtype")?
        .dtype();
    config.addr = SocketAddr::new(args.host, args.port);
    config.api_key = args
        .api_key
        .clone()
        .or_else(|| std::env::var("VIDLM_API_KEY").ok())
        .filter(|k| !k.is_empty());
    config.media_root = args.media_root.clone();
    config.max_body = usize::try_from(args.max_body).context("--max-body")?;
    config.max_queue = args.max_queue;
    config.max_batch = args.max_batch;
    config.max_frames = args.max_frames;
    config.max_duration =
        Duration::from_secs_f64(parse_duration(&args.max_duration).context("--max-duration")?);
    config.allow_remote_media = args.allow_remote_media;
    config.remote_max_bytes = args.remote_max_bytes;
    config.remote_timeout =
        Duration::from_secs_f64(parse_duration(&args.remote_timeout).context("--remote-timeout")?);
    config.visual_cache_bytes = if args.no_cache { 0 } else { args.cache_size };
    config.shutdown_timeout = Duration::from_secs_f64(
        parse_duration(&args.shutdown_timeout).context("--shutdown-timeout")?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vidlm-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let server = Server::bind(config).await?;
        // Tests and scripts read the address from this line.
        eprintln!("vidlm serve: listening on http://{}", server.local_addr());
        server.run(shutdown_signal()).await?;
        eprintln!("vidlm serve: stopped");
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
