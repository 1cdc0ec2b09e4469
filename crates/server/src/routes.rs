//! The HTTP routes and the serving loop.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use vidlm_models::VideoFrame;
use vidlm_pipeline::PipelineConfig;

use crate::api::{ChatRequest, MediaRef, RequestLimits};
use crate::media::MediaPolicy;
use crate::worker::{Completion, Job, JobEvent, JobInput, JobTask, LoadState, ModelWorker};
use crate::{ApiError, Metrics, ServerError};

/// What every handler shares.
pub(crate) struct AppState {
    pub workers: Vec<Arc<ModelWorker>>,
    pub media: MediaPolicy,
    pub limits: RequestLimits,
    pub base: PipelineConfig,
    pub api_key: Option<String>,
    pub max_body: usize,
    pub metrics: Arc<Metrics>,
    /// Set at the shutdown deadline: workers cancel what runs.
    pub stop_all: Arc<AtomicBool>,
    /// Set when shutdown starts: new requests get 503.
    pub shutting_down: AtomicBool,
    /// Completion ids.
    pub ids: AtomicU64,
}

pub(crate) type App = State<Arc<AppState>>;

impl AppState {
    fn check_key(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant-time compare: the key must not leak through timing.
        match given {
            Some(g) if g.len() == key.len() => {
                let diff = g
                    .bytes()
                    .zip(key.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b));
                if diff == 0 {
                    Ok(())
                } else {
                    Err(ApiError::unauthorized())
                }
            }
            _ => Err(ApiError::unauthorized()),
        }
    }

    pub(crate) fn worker(&self, id: Option<&str>) -> Result<&Arc<ModelWorker>, ApiError> {
        match id {
            None => Ok(&self.workers[0]),
            Some(id) => self.workers.iter().find(|w| w.id == id).ok_or_else(|| {
                let known: Vec<&str> = self.workers.iter().map(|w| w.id.as_str()).collect();
                ApiError {
                    param: Some("model".into()),
                    ..ApiError::not_found(
                        "model_not_found",
                        format!(
                            "model {id} is not served here (serving: {})",
                            known.join(", ")
                        ),
                    )
                }
            }),
        }
    }

    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::SeqCst);
        format!("chatcmpl-{:x}{n:06}", unix_now())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The router with every route.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/video/summarize", post(crate::summarize::summarize))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves until `shutdown`, then drains for `timeout` and cancels the rest.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    timeout: Duration,
) -> Result<(), ServerError> {
    let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let graceful = async move {
        shutdown.await;
        st.shutting_down.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: no new requests; waiting for those in flight");
        let _ = began_tx.send(());
    };
    let app = router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let stop_all = state.stop_all.clone();
    let deadline = async move {
        if began_rx.await.is_err() {
            // The server ended on its own.
            return std::future::pending::<()>().await;
        }
        tokio::time::sleep(timeout).await;
        tracing::warn!("shutdown timeout: cancelling the requests still running");
        stop_all.store(true, Ordering::SeqCst);
        // Cancelled jobs end at their next frame or token; give their answers a moment to go out.
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        r = server => r.map_err(ServerError::Io),
        _ = deadline => Ok(()),
    }
}

/// Runs `f`'s result through the request counter and OpenAI's error body.
pub(crate) fn respond(state: &AppState, path: &str, r: Result<Response, ApiError>) -> Response {
    let resp = r.unwrap_or_else(|e| {
        tracing::debug!(path, error = %e, "request failed");
        e.into_response()
    });
    state.metrics.count(path, resp.status().as_u16());
    resp
}

async fn not_found(State(state): App, uri: Uri) -> Response {
    respond(
        &state,
        "other",
        Err(ApiError::not_found(
            "not_found",
            format!("no route {}", uri.path()),
        )),
    )
}

async fn health(State(state): App) -> Response {
    let states: Vec<(String, LoadState)> = state
        .workers
        .iter()
        .map(|w| (w.id.clone(), w.state()))
        .collect();
    let ready = states.iter().all(|(_, s)| *s == LoadState::Ready)
        && !state.shutting_down.load(Ordering::SeqCst);
    let models: serde_json::Map<String, serde_json::Value> = states
        .into_iter()
        .map(|(id, s)| {
            let v = match s {
                LoadState::Ready => "ready".to_string(),
                LoadState::Loading => "loading".to_string(),
                LoadState::Failed(why) => format!("failed: {why}"),
            };
            (id, serde_json::Value::String(v))
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "models": models,
    });
    respond(&state, "/health", Ok((status, Json(body)).into_response()))
}

async fn models(State(state): App, headers: HeaderMap) -> Response {
    let r = state.check_key(&headers).map(|_| {
        let data: Vec<serde_json::Value> = state
            .workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id, "object": "model", "created": 0, "owned_by": "vidlm",
                })
            })
            .collect();
        Json(serde_json::json!({ "object": "list", "data": data })).into_response()
    });
    respond(&state, "/v1/models", r)
}

async fn metrics(State(state): App, headers: HeaderMap) -> Response {
    let r = state.check_key(&headers).map(|_| {
        let queued: Vec<(String, usize)> = state
            .workers
            .iter()
            .map(|w| (w.id.clone(), w.queued()))
            .collect();
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render(&queued),
        )
            .into_response()
    });
    respond(&state, "/metrics", r)
}

/// The checks every model request starts with: key, shutdown, body size.
pub(crate) fn admit(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    state.check_key(headers)?;
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.max_body)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", r.body_text()))
        }
    })
}

/// Resolves a request's media off the async runtime: files checked against the media root,
/// `data:` payloads decoded, remote media fetched, images decoded, and a video's span
/// (`from`..`to` of its duration) checked against the server's limit.
pub(crate) async fn resolve_input(
    state: &AppState,
    media: &MediaRef,
    from: Option<f64>,
    to: Option<f64>,
) -> Result<JobInput, ApiError> {
    let policy = state.media.clone();
    let media = media.clone();
    let max_seconds = state.limits.max_seconds;
    tokio::task::spawn_blocking(move || match media {
        MediaRef::Video(url) => {
            let local = policy.video(&url)?;
            check_span(&url, &local, from, to, max_seconds)?;
            Ok(JobInput::Video(local))
        }
        MediaRef::Images(urls) => urls
            .iter()
            .map(|u| policy.bytes(u).and_then(|b| decode_image(u, &b)))
            .collect::<Result<Vec<_>, _>>()
            .map(JobInput::Images),
    })
    .await
    .map_err(|e| ApiError::internal(format!("media task failed: {e}")))?
}

/// 400 when the part of the video asked about is longer than `max_seconds`. A file that does not
/// probe is left to the decoder, whose error the job reports.
fn check_span(
    url: &str,
    local: &crate::media::LocalMedia,
    from: Option<f64>,
    to: Option<f64>,
    max_seconds: f64,
) -> Result<(), ApiError> {
    vidlm_media::init();
    let input = vidlm_media::Input::parse(&local.path().to_string_lossy());
    let Some(duration) = vidlm_media::probe(&input).ok().and_then(|i| i.duration) else {
        return Ok(());
    };
    let span = to.unwrap_or(duration).min(duration) - from.unwrap_or(0.0);
    if span > max_seconds {
        let shown: String = url.chars().take(60).collect();
        return Err(ApiError::bad_param(
            "vidlm.to",
            format!(
                "{shown}: {span:.1} s of video asked about, over the server's limit of {max_seconds} s \
                 (--max-duration); ask about a part with vidlm.from/vidlm.to"
            ),
        ));
    }
    Ok(())
}

fn decode_image(url: &str, bytes: &[u8]) -> Result<VideoFrame, ApiError> {
    let shown: String = url.chars().take(60).collect();
    let img = image::load_from_memory(bytes)
        .map_err(|e| {
            ApiError::bad_request(format!("{shown}: not a decodable image (PNG or JPEG): {e}"))
        })?
        .to_rgb8();
    let (width, height) = img.dimensions();
    Ok(VideoFrame {
        rgb: img.into_raw(),
        width,
        height,
        pts: 0.0,
    })
}

async fn chat(
    State(state): App,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = chat_inner(&state, &headers, body).await;
    respond(&state, "/v1/chat/completions", r)
}

async fn chat_inner(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = admit(state, headers, body)?;
    let req = ChatRequest::parse(&body)?;
    drop(body);
    let worker = state.worker(req.model.as_deref())?.clone();
    if let LoadState::Loading = worker.state() {
        return Err(ApiError::unavailable(format!(
            "model {} is loading",
            worker.id
        )));
    }
    let prepared = req.prepare(worker.id.clone(), &state.base, state.limits)?;
    let input = resolve_input(state, &prepared.media, prepared.from, prepared.to).await?;
    let (tx, mut rx) = unbounded_channel();
    let (stream, include_usage) = (prepared.stream, prepared.include_usage);
    let model = prepared.model.clone();
    worker.submit(Job {
        prepared,
        task: JobTask::Ask,
        input,
        events: tx,
    })?;
    let meta = ChunkMeta {
        id: state.next_id(),
        created: unix_now(),
        model,
    };
    if !stream {
        loop {
            match rx.recv().await {
                Some(JobEvent::Done(c)) => return Ok(Json(meta.completion(&c)).into_response()),
                Some(JobEvent::Error(e)) => return Err(e),
                Some(_) => {}
                None => return Err(ApiError::internal("the model's worker dropped the request")),
            }
        }
    }
    // Wait until the input opened: an unreadable file is still a plain HTTP error.
    let first = match rx.recv().await {
        Some(JobEvent::Error(e)) => return Err(e),
        None => return Err(ApiError::internal("the model's worker dropped the request")),
        Some(ev) => ev,
    };
    let mut queue = VecDeque::new();
    queue.push_back(meta.chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    ));
    let mut st = SseState {
        rx,
        queue,
        finished: false,
        meta,
        include_usage,
    };
    st.on_event(first);
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(ev) => st.on_event(ev),
                None => st.finished = true,
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// What every chunk of one completion repeats.
pub(crate) struct ChunkMeta {
    /// The completion's id.
    id: String,
    created: u64,
    model: String,
}

impl ChunkMeta {
    fn usage(c: &Completion) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        })
    }

    fn completion(&self, c: &Completion) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish,
                "logprobs": null,
            }],
            "usage": Self::usage(c),
        })
    }

    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> SseEvent {
        self.event(serde_json::json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        }))
    }

    fn event(&self, v: serde_json::Value) -> SseEvent {
        SseEvent::default().data(v.to_string())
    }
}

struct SseState {
    rx: UnboundedReceiver<JobEvent>,
    queue: VecDeque<SseEvent>,
    finished: bool,
    meta: ChunkMeta,
    include_usage: bool,
}

impl SseState {
    fn on_event(&mut self, ev: JobEvent) {
        match ev {
            JobEvent::Started | JobEvent::Segment(_) | JobEvent::Summary(_) => {}
            JobEvent::Text(t) => self
                .queue
                .push_back(self.meta.chunk(serde_json::json!({"content": t}), None)),
            JobEvent::Done(c) => {
                self.queue
                    .push_back(self.meta.chunk(serde_json::json!({}), Some(c.finish)));
                if self.include_usage {
                    let m = &self.meta;
                    self.queue.push_back(m.event(serde_json::json!({
                        "id": m.id,
                        "object": "chat.completion.chunk",
                        "created": m.created,
                        "model": m.model,
                        "choices": [],
                        "usage": ChunkMeta::usage(&c),
                    })));
                }
                self.queue.push_back(SseEvent::default().data("[DONE]"));
                self.finished = true;
            }
            JobEvent::Error(e) => {
                // Mid-stream the status is sent already: the error goes as an event.
                self.queue.push_back(self.meta.event(e.body()));
                self.queue.push_back(SseEvent::default().data("[DONE]"));
                self.finished = true;
            }
        }
    }
}
