//! Counters and stage timings of a run, and the process's peak memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The stages of the worker graph, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Demux + decode + sample (the sampler decides which frames are decoded at all).
    Decode,
    /// Frame conversion and scene scores.
    Preprocess,
    /// The vision encoder.
    Encode,
    /// Temporal/spatial pooling and chunking.
    Pool,
    /// The language model.
    Llm,
}

impl Stage {
    /// All stages in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Decode,
        Stage::Preprocess,
        Stage::Encode,
        Stage::Pool,
        Stage::Llm,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Seconds of work spent in each stage (busy time, not time blocked on queues).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageSeconds {
    /// Decoding and sampling.
    pub decode: f64,
    /// Preprocessing.
    pub preprocess: f64,
    /// Vision encoding.
    pub encode: f64,
    /// Pooling and chunking.
    pub pool: f64,
    /// Language model (prefill + generation).
    pub llm: f64,
}

impl StageSeconds {
    /// Adds `seconds` to `stage`.
    pub fn add(&mut self, stage: Stage, seconds: f64) {
        match stage {
            Stage::Decode => self.decode += seconds,
            Stage::Preprocess => self.preprocess += seconds,
            Stage::Encode => self.encode += seconds,
            Stage::Pool => self.pool += seconds,
            Stage::Llm => self.llm += seconds,
        }
    }

    /// The seconds of `stage`.
    pub fn get(&self, stage: Stage) -> f64 {
        match stage {
            Stage::Decode => self.decode,
            Stage::Preprocess => self.preprocess,
            Stage::Encode => self.encode,
            Stage::Pool => self.pool,
            Stage::Llm => self.llm,
        }
    }
}

/// Live counters of a run, shared by all stage threads.
#[derive(Debug, Default)]
pub struct Metrics {
    frames_decoded: AtomicU64,
    frames_sampled: AtomicU64,
    frames_encoded: AtomicU64,
    groups_pooled: AtomicU64,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    busy_nanos: [AtomicU64; 5],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_status: Mutex<HashMap<usize, CacheStatus>>,
    per_job: Mutex<HashMap<usize, StageSeconds>>,
    starts: Mutex<HashMap<usize, Instant>>,
}

impl Metrics {
    pub(crate) fn add_decoded(&self, n: u64) {
        self.frames_decoded.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_sampled(&self, n: u64) {
        self.frames_sampled.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_encoded(&self, n: u64) {
        self.frames_encoded.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_groups(&self, n: u64) {
        self.groups_pooled.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_tokens(&self, prompt: u64, generated: u64) {
        self.tokens_in.fetch_add(prompt, Ordering::Relaxed);
        self.tokens_out.fetch_add(generated, Ordering::Relaxed);
    }

    /// Records how the visual-token cache served job `job`.
    pub(crate) fn set_cache(&self, job: usize, status: CacheStatus) {
        match status {
            CacheStatus::Hit => self.cache_hits.fetch_add(1, Ordering::Relaxed),
            CacheStatus::Miss => self.cache_misses.fetch_add(1, Ordering::Relaxed),
            CacheStatus::Bypass => 0,
        };
        let mut map = self.cache_status.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(job, status);
    }

    /// How the visual-token cache served job `job` (`None` without a cache).
    pub fn job_cache(&self, job: usize) -> Option<CacheStatus> {
        let map = self.cache_status.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&job).copied()
    }

    /// Records `elapsed` of work in `stage`, for job `job` when it belongs to one.
    pub(crate) fn add_time(&self, stage: Stage, job: Option<usize>, elapsed: Duration) {
        self.busy_nanos[stage.index()].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if let Some(job) = job {
            let mut map = self.per_job.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(job)
                .or_default()
                .add(stage, elapsed.as_secs_f64());
        }
    }

    /// Marks the moment job `job` started (its input being opened).
    pub(crate) fn job_started(&self, job: usize) {
        let mut map = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(job, Instant::now());
    }

    /// Seconds since job `job` started (0 when it never did).
    pub fn job_elapsed(&self, job: usize) -> f64 {
        let map = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&job).map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Stage seconds of one job (zeros when it did no work).
    pub fn job_seconds(&self, job: usize) -> StageSeconds {
        let map = self.per_job.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&job).copied().unwrap_or_default()
    }

    /// A snapshot of the counters; `wall_seconds` is the caller's wall clock for the run.
    pub fn report(&self, wall_seconds: f64) -> MetricsReport {
        let mut stage_seconds = StageSeconds::default();
        for stage in Stage::ALL {
            let nanos = self.busy_nanos[stage.index()].load(Ordering::Relaxed);
            stage_seconds.add(stage, nanos as f64 * 1e-9);
        }
        MetricsReport {
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            frames_sampled: self.frames_sampled.load(Ordering::Relaxed),
            frames_encoded: self.frames_encoded.load(Ordering::Relaxed),
            groups_pooled: self.groups_pooled.load(Ordering::Relaxed),
            tokens_in: self.tokens_in.load(Ordering::Relaxed),
            tokens_out: self.tokens_out.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
            stage_seconds,
            wall_seconds,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// Where one job's time went: busy seconds per stage and wall-clock seconds from opening the
/// input to the result. Stages overlap, so the stages may add up to more than `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JobTimings {
    /// Busy seconds per stage.
    #[serde(flatten)]
    pub stages: StageSeconds,
    /// Wall-clock seconds.
    pub total: f64,
    /// How the visual-token cache served the job (absent without a cache).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// How the visual-token cache served a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Tokens read from the cache: nothing decoded or encoded.
    Hit,
    /// Decoded and encoded, then stored.
    Miss,
    /// Not cacheable (stdin, a URL, a live stream).
    Bypass,
}

/// What a run did, for logs, JSON output and benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Frames the decoder produced (as reported by the media layer).
    pub frames_decoded: u64,
    /// Frames the sampler kept.
    pub frames_sampled: u64,
    /// Frames through the vision encoder.
    pub frames_encoded: u64,
    /// Token groups left after pooling.
    pub groups_pooled: u64,
    /// Prompt tokens given to the language model (text + visual), all calls.
    pub tokens_in: u64,
    /// Tokens the language model generated, all calls.
    pub tokens_out: u64,
    /// Jobs whose visual tokens came from the cache.
    pub cache_hits: u64,
    /// Jobs encoded and then stored in the cache.
    pub cache_misses: u64,
    /// Busy seconds per stage, summed over that stage's threads.
    pub stage_seconds: StageSeconds,
    /// Wall-clock seconds of the run.
    pub wall_seconds: f64,
    /// Peak resident memory of the process (VmHWM), when the OS reports it.
    pub peak_rss_bytes: Option<u64>,
}

/// The process's peak resident set size from `/proc/self/status` (`VmHWM`), or `None` where that
/// file does not exist (non-Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn accumulates_per_stage_and_job() {
        let m = Metrics::default();
        m.add_time(Stage::Encode, Some(3), Duration::from_millis(250));
        m.add_time(Stage::Encode, None, Duration::from_millis(250));
        let r = m.report(1.0);
        assert!((r.stage_seconds.encode - 0.5).abs() < 1e-9);
        assert!((m.job_seconds(3).encode - 0.25).abs() < 1e-9);
        assert_eq!(m.job_seconds(4), StageSeconds::default());
    }
}
