//! `POST /v1/video/summarize`: `vidlm summarize`'s report on one video (JSON, or `format` md, srt
//! or vtt), with each described segment as a progress event when streamed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::unbounded_channel;
use vidlm_pipeline::OutputFormat;

use crate::api::{MediaRef, Prepared, SummarizeRequest};
use crate::routes::{admit, resolve_input, respond, AppState};
use crate::worker::{Job, JobEvent, JobTask};
use crate::ApiError;

const PATH: &str = "/v1/video/summarize";

pub(crate) async fn summarize(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r = summarize_inner(&state, &headers, body).await;
    respond(&state, PATH, r)
}

fn content_type(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Json => "application/json",
        OutputFormat::Markdown => "text/markdown; charset=utf-8",
        OutputFormat::Srt => "application/x-subrip; charset=utf-8",
        OutputFormat::Vtt => "text/vtt; charset=utf-8",
    }
}

async fn summarize_inner(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = admit(state, headers, body)?;
    let req = SummarizeRequest::parse(&body)?;
    drop(body);
    let worker = state.worker(req.model.as_deref())?.clone();
    let format: OutputFormat =
        req.format.as_deref().unwrap_or("json").parse().map_err(
            |e: vidlm_pipeline::PipelineError| ApiError::bad_param("format", e.to_string()),
        )?;
    let (config, from, to) = req.settings.apply(&state.base, state.limits)?;
    let media = MediaRef::Video(req.video.clone());
    let input = resolve_input(state, &media, from, to).await?;
    // The report names the video as given (a data: payload by its scheme only).
    let name = if req.video.starts_with("data:") {
        "data:".to_string()
    } else {
        req.video
            .strip_prefix("file://")
            .unwrap_or(&req.video)
            .to_string()
    };
    let (tx, mut rx) = unbounded_channel();
    worker.submit(Job {
        prepared: Prepared {
            model: worker.id.clone(),
            question: String::new(),
            media,
            config,
            from,
            to,
            stop: Vec::new(),
            stream: req.stream,
            include_usage: false,
        },
        task: JobTask::Summarize { format, name },
        input,
        events: tx,
    })?;
    let dropped = || ApiError::internal("the model's worker dropped the request");
    if !req.stream {
        loop {
            match rx.recv().await {
                Some(JobEvent::Summary(s)) => {
                    return Ok(([(header::CONTENT_TYPE, content_type(format))], s).into_response())
                }
                Some(JobEvent::Error(e)) => return Err(e),
                Some(_) => {}
                None => return Err(dropped()),
            }
        }
    }
    // As for chat: an input that does not open is still a plain HTTP error.
    match rx.recv().await {
        Some(JobEvent::Error(e)) => return Err(e),
        None => return Err(dropped()),
        Some(_) => {}
    }
    let fmt = req.format.unwrap_or_else(|| "json".into());
    let events = futures_util::stream::unfold(Some((rx, fmt)), |st| async move {
        let (mut rx, fmt) = st?;
        loop {
            let data = match rx.recv().await? {
                JobEvent::Segment(s) => serde_json::json!({
                    "type": "segment", "start": s.start, "end": s.end, "text": s.text,
                }),
                JobEvent::Summary(content) => {
                    let v =
                        serde_json::json!({"type": "result", "format": fmt, "content": content});
                    // The result is the last event.
                    return Some((
                        Ok::<_, Infallible>(SseEvent::default().data(v.to_string())),
                        None,
                    ));
                }
                JobEvent::Error(e) => {
                    return Some((Ok(SseEvent::default().data(e.body().to_string())), None));
                }
                _ => continue,
            };
            return Some((
                Ok(SseEvent::default().data(data.to_string())),
                Some((rx, fmt)),
            ));
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
