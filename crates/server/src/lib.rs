//! vidlm-server: an OpenAI-compatible HTTP server over the vidlm pipeline (axum on tokio).
//!
//! `POST /v1/chat/completions` takes OpenAI chat requests whose user message holds `text`,
//! `image_url` and `video_url` parts; `GET /v1/models`, `GET /health` and `GET /metrics` report on
//! the server; `POST /v1/video/summarize` is vidlm's own. Every model runs on its own worker
//! thread, never on the async runtime; requests wait in a bounded queue (429 when it is full).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vidlm_server::ServerError> {
//! use vidlm_server::{ServedModelSpec, Server, ServerConfig};
//! let config = ServerConfig::new(vec![ServedModelSpec::parse("HuggingFaceTB/SmolVLM2-256M-Video-Instruct")]);
//! let server = Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod api;
mod error;
pub mod media;
mod metrics;
pub mod model;
mod routes;
mod summarize;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use error::{ApiError, ServerError};
pub use metrics::Metrics;
use vidlm_pipeline::PipelineConfig;

/// One model to serve: the id clients name it by and what to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedModelSpec {
    /// The id in `GET /v1/models` and requests' `model`.
    pub id: String,
    /// A model directory or hub id.
    pub spec: String,
}

impl ServedModelSpec {
    /// `ID=SPEC`, or `SPEC` served under its own name.
    ///
    /// ```
    /// let m = vidlm_server::ServedModelSpec::parse("tiny=/models/smol");
    /// assert_eq!((m.id.as_str(), m.spec.as_str()), ("tiny", "/models/smol"));
    /// assert_eq!(vidlm_server::ServedModelSpec::parse("org/name").id, "org/name");
    /// ```
    pub fn parse(s: &str) -> Self {
        match s.split_once('=') {
            Some((id, spec)) if !id.is_empty() && !spec.is_empty() => Self {
                id: id.to_string(),
                spec: spec.to_string(),
            },
            _ => Self {
                id: s.to_string(),
                spec: s.to_string(),
            },
        }
    }
}

/// Everything `vidlm serve` takes.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The models, each on its own worker.
    pub models: Vec<ServedModelSpec>,
    /// The pipeline settings requests start from (sampling, pooling, prompts, generation).
    pub pipeline: PipelineConfig,
    /// Weight dtype.
    pub dtype: candle_core::DType,
    /// Listening address.
    pub addr: SocketAddr,
    /// When set, requests need `Authorization: Bearer KEY` (all but `/health`).
    pub api_key: Option<String>,
    /// `file://` media must be inside this directory.
    pub media_root: PathBuf,
    /// Most bytes of a request body (413 above).
    pub max_body: usize,
    /// Most requests waiting per model (429 above).
    pub max_queue: usize,
    /// Most video requests with the same settings in one pipeline run.
    pub max_batch: usize,
    /// Most tokens a request may ask for.
    pub max_tokens: usize,
    /// Most frames a request may sample.
    pub max_frames: usize,
    /// Most seconds of video a request may ask about (its `from`..`to` of the duration).
    pub max_duration: Duration,
    /// Fetch `http(s)://` media.
    pub allow_remote_media: bool,
    /// Most bytes of one fetched media item.
    pub remote_max_bytes: u64,
    /// Most seconds of one fetch.
    pub remote_timeout: Duration,
    /// After SIGTERM: how long requests in flight may run before they are cancelled.
    pub shutdown_timeout: Duration,
    /// Bytes of visual tokens each model keeps in memory for clips asked about again (least
    /// recently used dropped first); 0 turns the cache off.
    pub visual_cache_bytes: u64,
}

impl ServerConfig {
    /// The defaults: 127.0.0.1:8080, the current directory as media root, 256 MiB bodies, 16
    /// queued requests, an hour of video a request, no API key, no remote media.
    pub fn new(models: Vec<ServedModelSpec>) -> Self {
        Self {
            visual_cache_bytes: 1 << 30,
            models,
            pipeline: PipelineConfig::default(),
            dtype: candle_core::DType::F32,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            media_root: PathBuf::from("."),
            max_body: 256 << 20,
            max_queue: 16,
            max_batch: 8,
            max_tokens: 4096,
            max_frames: 256,
            max_duration: Duration::from_secs(3600),
            allow_remote_media: false,
            remote_max_bytes: 256 << 20,
            remote_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A bound server whose models are loading (see [`Server::run`]).
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Arc<routes::AppState>,
    shutdown_timeout: Duration,
}

impl Server {
    /// Binds the address and starts every model's worker (which loads the model; `/health` says
    /// 503 until all are loaded).
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address is taken or not allowed, [`ServerError::Config`] for
    /// no models, a duplicate id or a media root that does not exist.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        if config.models.is_empty() {
            return Err(ServerError::Config(
                "serve: give at least one --model".into(),
            ));
        }
        for (i, m) in config.models.iter().enumerate() {
            if config.models[..i].iter().any(|o| o.id == m.id) {
                return Err(ServerError::Config(format!(
                    "--model: the id {} is given twice",
                    m.id
                )));
            }
        }
        let root = config.media_root.canonicalize().map_err(|e| {
            ServerError::Config(format!("--media-root {}: {e}", config.media_root.display()))
        })?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| ServerError::Bind {
                addr: config.addr.to_string(),
                reason: e.to_string(),
            })?;
        let metrics = Arc::new(Metrics::default());
        let stop_all = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for m in &config.models {
            let opts = vidlm_models::LoadOptions {
                threads: config.pipeline.model.threads,
                max_frames: config.pipeline.model.max_frames,
                dtype: config.dtype,
                device: config.pipeline.model.device.device(),
                gguf_dequantize: config.pipeline.model.dequantize,
                ..Default::default()
            };
            let setup = worker::WorkerSetup {
                spec: m.spec.clone(),
                options: opts,
                max_batch: config.max_batch.max(1),
                metrics: metrics.clone(),
                // One cache per model: entries of two models never meet.
                cache: (config.visual_cache_bytes > 0)
                    .then(|| vidlm_pipeline::VisualCache::memory(config.visual_cache_bytes)),
            };
            workers.push(worker::ModelWorker::start(
                m.id.clone(),
                setup,
                config.max_queue,
                stop_all.clone(),
            )?);
        }
        let state = Arc::new(routes::AppState {
            workers,
            media: media::MediaPolicy {
                root,
                allow_remote: config.allow_remote_media,
                max_bytes: config.remote_max_bytes,
                remote_timeout: config.remote_timeout,
            },
            limits: api::RequestLimits {
                max_tokens: config.max_tokens,
                max_frames: config.max_frames,
                max_seconds: config.max_duration.as_secs_f64(),
            },
            base: config.pipeline.clone(),
            api_key: config.api_key.clone(),
            max_body: config.max_body,
            metrics,
            stop_all,
            shutting_down: AtomicBool::new(false),
            ids: Default::default(),
        });
        Ok(Self {
            listener,
            state,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; then stops accepting, lets requests in flight finish
    /// for the shutdown timeout, cancels what is left, and returns.
    ///
    /// # Errors
    /// [`ServerError::Io`] when the listener fails.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        routes::serve(self.listener, self.state, shutdown, self.shutdown_timeout).await
    }
}
