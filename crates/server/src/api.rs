//! The request bodies the server reads (OpenAI's chat completion request, with the de-facto
//! `media_io_kwargs` extension and vidlm's own `vidlm` object) and how they become a job.

use serde::Deserialize;
use vidlm_pipeline::PipelineConfig;

use crate::ApiError;

/// `POST /v1/chat/completions`'s body. Fields the server does not use are ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The model id (`GET /v1/models`); the first served model when absent.
    pub model: Option<String>,
    /// The conversation; the last user message is the question.
    pub messages: Vec<Message>,
    /// Text that ends the answer (not included): one string or up to four.
    pub stop: Option<Stop>,
    /// Answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// `include_usage`: a last chunk with the usage.
    pub stream_options: Option<StreamOptions>,
    /// Choices per request; only 1 is supported.
    pub n: Option<usize>,
    /// Sampling and generation settings.
    #[serde(flatten)]
    pub settings: Settings,
}

/// `POST /v1/video/summarize`'s body: one video, the output format, and the same settings as a
/// chat request.
#[derive(Debug, Deserialize)]
pub struct SummarizeRequest {
    /// The model id; the first served model when absent.
    pub model: Option<String>,
    /// The video's URL (`file://`, `data:` or `http(s)://`).
    pub video: String,
    /// `json` (default), `md`, `srt` or `vtt`.
    pub format: Option<String>,
    /// Progress (each described segment) and the result as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Sampling and generation settings.
    #[serde(flatten)]
    pub settings: Settings,
}

/// The settings both requests take: generation (OpenAI's names) and sampling (the
/// `media_io_kwargs` extension and vidlm's own object).
#[derive(Debug, Default, Deserialize)]
pub struct Settings {
    /// Most tokens to generate (deprecated name).
    pub max_tokens: Option<usize>,
    /// Most tokens to generate.
    pub max_completion_tokens: Option<usize>,
    /// 0: greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold.
    pub top_p: Option<f64>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// `{"video": {"fps": .., "num_frames": ..}}`, as vLLM and lmms-eval send it.
    pub media_io_kwargs: Option<MediaIoKwargs>,
    /// vidlm's own settings.
    pub vidlm: Option<VidlmOptions>,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// `media_io_kwargs`.
#[derive(Debug, Deserialize)]
pub struct MediaIoKwargs {
    /// Video sampling.
    pub video: Option<VideoKwargs>,
}

/// `media_io_kwargs.video`.
#[derive(Debug, Deserialize)]
pub struct VideoKwargs {
    /// Frames per second to sample.
    pub fps: Option<f64>,
    /// Frames to sample, evenly spread.
    pub num_frames: Option<usize>,
}

/// The `vidlm` object: sampling, a time range and pooling, as the CLI's flags take them.
#[derive(Debug, Deserialize)]
pub struct VidlmOptions {
    /// `fps:N`, `frames:N`, `keyframes`, `scene:T` or `all`.
    pub sample: Option<String>,
    /// Start of the time range: seconds or `[HH:]MM:SS`.
    pub from: Option<TimeValue>,
    /// End of the time range (exclusive).
    pub to: Option<TimeValue>,
    /// Token pooling: `none`, `mean:K`, `spatial:KxK`, `adaptive:TAU`, or a `+`-joined chain.
    pub pool: Option<String>,
}

/// A time as a number of seconds or a `[HH:]MM:SS` string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeValue {
    /// Seconds.
    Seconds(f64),
    /// `[HH:]MM:SS` or seconds as text.
    Text(String),
}

impl TimeValue {
    fn seconds(&self, param: &str) -> Result<f64, ApiError> {
        let s = match self {
            TimeValue::Seconds(s) => *s,
            TimeValue::Text(t) => {
                vidlm_media::parse_time(t).map_err(|e| ApiError::bad_param(param, e.to_string()))?
            }
        };
        if s.is_finite() && s >= 0.0 {
            Ok(s)
        } else {
            Err(ApiError::bad_param(
                param,
                format!("{param}: {s} is not a time"),
            ))
        }
    }
}

/// One message. `content` is read as it comes (text or a list of parts) so an unknown part type
/// is reported by name.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`...
    pub role: String,
    /// Text, or a list of parts (see [`Part`]).
    #[serde(default)]
    pub content: serde_json::Value,
}

/// A content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL.
    ImageUrl {
        /// `{"url": ..}`.
        image_url: UrlRef,
    },
    /// A video by URL.
    VideoUrl {
        /// `{"url": ..}`.
        video_url: UrlRef,
    },
}

impl Message {
    /// The message's parts (plain text is one text part).
    ///
    /// # Errors
    /// 400 naming the part: an unknown `type`, a missing field, content that is neither text nor
    /// a list.
    pub fn parts(&self, index: usize) -> Result<Vec<Part>, ApiError> {
        let param = format!("messages[{index}].content");
        match &self.content {
            serde_json::Value::Null => Ok(Vec::new()),
            serde_json::Value::String(t) => Ok(vec![Part::Text { text: t.clone() }]),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("");
                    if !matches!(kind, "text" | "image_url" | "video_url") {
                        return Err(ApiError::bad_param(
                            &param,
                            format!(
                                "{param}[{j}]: unknown content type `{kind}` (expected text, image_url or video_url)"
                            ),
                        ));
                    }
                    Part::deserialize(v)
                        .map_err(|e| ApiError::bad_param(&param, format!("{param}[{j}]: {e}")))
                })
                .collect(),
            _ => Err(ApiError::bad_param(
                &param,
                format!("{param}: expected a string or a list of parts"),
            )),
        }
    }
}

/// `{"url": ".."}`.
#[derive(Debug, Deserialize)]
pub struct UrlRef {
    /// `file://`, `data:` or `http(s)://`.
    pub url: String,
}

/// What a request asks about.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaRef {
    /// One video URL.
    Video(String),
    /// Image URLs, in order.
    Images(Vec<String>),
}

/// A request after checking: the question, its media, the pipeline configuration it runs with,
/// and how to answer.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The served model's id.
    pub model: String,
    /// The text of the last user message.
    pub question: String,
    /// The media it refers to.
    pub media: MediaRef,
    /// The server's configuration with the request's settings applied.
    pub config: PipelineConfig,
    /// Time range of a video, seconds.
    pub from: Option<f64>,
    /// End of the range.
    pub to: Option<f64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Answer as server-sent events.
    pub stream: bool,
    /// Send a last usage chunk when streaming.
    pub include_usage: bool,
}

/// Limits a request's settings must stay within.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most tokens a request may ask for.
    pub max_tokens: usize,
    /// Most frames a request may sample.
    pub max_frames: usize,
    /// Most seconds of video a request may ask about.
    pub max_seconds: f64,
}

impl ChatRequest {
    /// Parses a body.
    ///
    /// # Errors
    /// 400 with serde's message (which names the field, or the unknown content type).
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }

    /// Checks the request and applies its settings to `base` (the server's configuration).
    ///
    /// # Errors
    /// 400 naming the field: no user message or question, two videos, video and images mixed,
    /// an unknown sampling or pooling spec, out-of-range sampling parameters, `n` > 1.
    pub fn prepare(
        self,
        model: String,
        base: &PipelineConfig,
        limits: RequestLimits,
    ) -> Result<Prepared, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_param(
                "n",
                "n: only 1 choice per request is supported",
            ));
        }
        let (index, user) = self
            .messages
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| m.role == "user")
            .ok_or_else(|| ApiError::bad_param("messages", "messages: no user message"))?;
        let mut texts = Vec::new();
        let mut videos = Vec::new();
        let mut images = Vec::new();
        for p in user.parts(index)? {
            match p {
                Part::Text { text } => texts.push(text),
                Part::ImageUrl { image_url } => images.push(image_url.url),
                Part::VideoUrl { video_url } => videos.push(video_url.url),
            }
        }
        let question = texts.join("\n");
        if question.trim().is_empty() {
            return Err(ApiError::bad_param(
                "messages",
                "messages: the last user message has no text (the question)",
            ));
        }
        let media = match (videos.len(), images.len()) {
            (0, 0) => {
                return Err(ApiError::bad_param(
                    "messages",
                    "messages: the last user message has no video_url or image_url part (text-only prompts are not supported)",
                ))
            }
            (1, 0) => MediaRef::Video(videos.remove(0)),
            (0, _) => MediaRef::Images(images),
            (v, 0) => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("messages: one video per request (got {v})"),
                ))
            }
            _ => {
                return Err(ApiError::bad_param(
                    "messages",
                    "messages: a request asks about one video or about images, not both",
                ))
            }
        };

        let (config, from, to) = self.settings.apply(base, limits)?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::bad_param(
                "stop",
                "stop: up to 4 non-empty strings",
            ));
        }
        Ok(Prepared {
            model,
            question,
            media,
            config,
            from,
            to,
            stop,
            stream: self.stream,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        })
    }
}

impl Settings {
    /// `base` (the server's configuration) with these settings applied, and the time range.
    ///
    /// # Errors
    /// 400 naming the field: an unknown sampling or pooling spec, out-of-range values, a range
    /// that ends before it starts.
    pub fn apply(
        &self,
        base: &PipelineConfig,
        limits: RequestLimits,
    ) -> Result<(PipelineConfig, Option<f64>, Option<f64>), ApiError> {
        let mut cfg = base.clone();
        let ext = self.vidlm.as_ref();
        let video_kw = self.media_io_kwargs.as_ref().and_then(|m| m.video.as_ref());
        if let Some(s) = ext.and_then(|e| e.sample.clone()) {
            cfg.sampling.strategy = s;
        } else if let Some(n) = video_kw.and_then(|v| v.num_frames) {
            cfg.sampling.strategy = format!("frames:{n}");
        } else if let Some(fps) = video_kw.and_then(|v| v.fps) {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(ApiError::bad_param(
                    "media_io_kwargs.video.fps",
                    format!("media_io_kwargs.video.fps: {fps} must be a number > 0"),
                ));
            }
            cfg.sampling.strategy = format!("fps:{fps}");
        }
        let strategy: vidlm_media::SamplingStrategy =
            cfg.sampling.strategy.parse().map_err(|e| {
                ApiError::bad_param(
                    "vidlm.sample",
                    format!("sample {}: {e}", cfg.sampling.strategy),
                )
            })?;
        if let vidlm_media::SamplingStrategy::Frames(n) = strategy {
            if n as usize > limits.max_frames {
                return Err(ApiError::bad_param(
                    "media_io_kwargs.video.num_frames",
                    format!(
                        "{n} frames: over the server's limit of {}",
                        limits.max_frames
                    ),
                ));
            }
        }
        let cap = cfg
            .sampling
            .max_frames
            .unwrap_or(limits.max_frames)
            .min(limits.max_frames);
        cfg.sampling.max_frames = Some(cap);
        if let Some(p) = ext.and_then(|e| e.pool.as_deref()) {
            cfg.pooling.method = p
                .parse()
                .map_err(|e| ApiError::bad_param("vidlm.pool", format!("pool {p}: {e}")))?;
        }
        let from = ext
            .and_then(|e| e.from.as_ref())
            .map(|t| t.seconds("vidlm.from"))
            .transpose()?;
        let to = ext
            .and_then(|e| e.to.as_ref())
            .map(|t| t.seconds("vidlm.to"))
            .transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if t <= f {
                return Err(ApiError::bad_param(
                    "vidlm.to",
                    format!("vidlm.to ({t} s) must be after vidlm.from ({f} s)"),
                ));
            }
        }
        if let Some(n) = self.max_completion_tokens.or(self.max_tokens) {
            if n == 0 || n > limits.max_tokens {
                return Err(ApiError::bad_param(
                    "max_tokens",
                    format!(
                        "max_tokens {n}: must be between 1 and {}",
                        limits.max_tokens
                    ),
                ));
            }
            cfg.generation.max_new_tokens = n;
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
                return Err(ApiError::bad_param(
                    "temperature",
                    format!("temperature {t}: must be between 0 and 2"),
                ));
            }
            cfg.generation.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_param(
                    "top_p",
                    format!("top_p {p}: must be in (0, 1]"),
                ));
            }
            cfg.generation.top_p = p;
        }
        if let Some(s) = self.seed {
            cfg.generation.seed = s;
        }
        cfg.validate()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok((cfg, from, to))
    }
}

impl SummarizeRequest {
    /// Parses a body.
    ///
    /// # Errors
    /// 400 with serde's message.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}
