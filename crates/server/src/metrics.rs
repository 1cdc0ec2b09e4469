//! The server's counters, rendered for `GET /metrics` in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use vidlm_pipeline::{MetricsReport, Stage, StageSeconds};

/// Counters shared by the handlers and the workers.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by (path, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    in_flight: AtomicI64,
    cancelled: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    frames_decoded: AtomicU64,
    frames_encoded: AtomicU64,
    /// Busy seconds per stage; `llm` also counts image generations.
    stages: Mutex<StageSeconds>,
}

impl Metrics {
    /// Counts one response.
    pub fn count(&self, path: &str, status: u16) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((path.to_string(), status)).or_default() += 1;
    }

    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::SeqCst);
    }

    pub(crate) fn add_cancelled(&self, n: usize) {
        self.cancelled.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// Adds a pipeline run's counters.
    pub(crate) fn add_run(&self, r: &MetricsReport) {
        self.prompt_tokens.fetch_add(r.tokens_in, Ordering::SeqCst);
        self.completion_tokens
            .fetch_add(r.tokens_out, Ordering::SeqCst);
        self.frames_decoded
            .fetch_add(r.frames_decoded, Ordering::SeqCst);
        self.frames_encoded
            .fetch_add(r.frames_encoded, Ordering::SeqCst);
        let mut s = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        for stage in Stage::ALL {
            s.add(stage, r.stage_seconds.get(stage));
        }
    }

    /// Adds one generation outside the pipeline (images).
    pub(crate) fn add_generation(&self, prompt: usize, completion: usize, seconds: f64) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::SeqCst);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::SeqCst);
        let mut s = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        s.add(Stage::Llm, seconds);
    }

    /// The Prometheus text exposition, with `queued` jobs waiting per model.
    pub fn render(&self, queued: &[(String, usize)]) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP vidlm_requests_total HTTP responses by path and status."
        );
        let _ = writeln!(o, "# TYPE vidlm_requests_total counter");
        for ((path, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "vidlm_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP vidlm_queue_depth Requests accepted and not yet started."
        );
        let _ = writeln!(o, "# TYPE vidlm_queue_depth gauge");
        for (model, n) in queued {
            let model = model.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(o, "vidlm_queue_depth{{model=\"{model}\"}} {n}");
        }
        let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            let _ = writeln!(o, "{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::SeqCst) as f64;
        gauge(
            "vidlm_requests_in_flight",
            "Requests running on a model.",
            "gauge",
            self.in_flight.load(Ordering::SeqCst) as f64,
        );
        gauge(
            "vidlm_requests_cancelled_total",
            "Requests dropped because the client left or the server stopped.",
            "counter",
            ld(&self.cancelled),
        );
        gauge(
            "vidlm_prompt_tokens_total",
            "Prompt tokens given to the language model.",
            "counter",
            ld(&self.prompt_tokens),
        );
        gauge(
            "vidlm_completion_tokens_total",
            "Tokens the language model generated.",
            "counter",
            ld(&self.completion_tokens),
        );
        gauge(
            "vidlm_frames_decoded_total",
            "Video frames decoded.",
            "counter",
            ld(&self.frames_decoded),
        );
        gauge(
            "vidlm_frames_encoded_total",
            "Frames through the vision encoder.",
            "counter",
            ld(&self.frames_encoded),
        );
        let stages = *self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let llm = stages.get(Stage::Llm);
        let tps = if llm > 0.0 {
            ld(&self.completion_tokens) / llm
        } else {
            0.0
        };
        gauge(
            "vidlm_tokens_per_second",
            "Generated tokens per busy second of the language model, since start.",
            "gauge",
            tps,
        );
        let _ = writeln!(
            o,
            "# HELP vidlm_stage_busy_seconds_total Busy seconds per pipeline stage."
        );
        let _ = writeln!(o, "# TYPE vidlm_stage_busy_seconds_total counter");
        for stage in Stage::ALL {
            let _ = writeln!(
                o,
                "vidlm_stage_busy_seconds_total{{stage=\"{}\"}} {}",
                stage_name(stage),
                stages.get(stage)
            );
        }
        o
    }
}

/// The stage's name as the pipeline serializes it (`decode`, `encode`, ...).
fn stage_name(s: Stage) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(n)) => n,
        _ => format!("{s:?}").to_lowercase(),
    }
}
