//! The worker: pulls jobs from the queue, runs them through the same pipeline and records as
//! `vidlm batch`, stores each result record in the results bucket, then acks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{message::Acker, AckKind, Message};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc as tmpsc, Notify};
use vidlm_pipeline::batch::{parse_manifest, run_records, BatchProgress, ManifestItem};
use vidlm_pipeline::Pipeline;

use crate::queue::{job_hash, Queue};
use crate::Result;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs in hand at once, each run through the pipeline on its own thread (the model is shared
    /// and takes turns, so 2 overlaps one job's decoding with another's generation).
    pub concurrency: usize,
    /// Exit once no job is left: none pending and none in any worker's hands (a job held by a
    /// worker that died comes back after the ack wait, so drained workers wait for it).
    pub drain: bool,
    /// How long one pull waits for a job.
    pub pull_wait: Duration,
    /// How long storing a result or acking is retried while the server is unreachable (it may be
    /// restarting) before the job is left to be redelivered.
    pub retry_for: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            drain: false,
            pull_wait: Duration::from_secs(1),
            retry_for: Duration::from_secs(60),
        }
    }
}

/// Counts of a worker's run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Jobs that finished with an `ok` record.
    pub ok: usize,
    /// Jobs recorded as errors (bad input, invalid job record).
    pub failed: usize,
    /// Jobs given up after too many deliveries (a dead-letter error record).
    pub dead_letters: usize,
    /// Jobs handed back unfinished (nak) because the worker was stopped.
    pub returned: usize,
}

/// Asks a running worker to stop: [`Stop::stop`] ends pulling, and the worker exits once the jobs
/// in hand are finished (or, once the pipeline's cancel token is cancelled, handed back). Clones
/// share the request.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    requested: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Stop {
    /// A stop not requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests the stop; idempotent.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// A job in this worker's hands.
struct InHand {
    acker: Acker,
    id: String,
    hash: String,
}

/// What a pipeline thread reports for one job.
enum Outcome {
    /// The final record (`ok` or `error`).
    Record(Value),
    /// The run was cancelled before the job finished.
    Cancelled,
}

/// Pulls and runs jobs until stopped (or, with [`WorkerOptions::drain`], until none is left).
///
/// Each job's record is the one `vidlm batch` writes for it; it is stored in the results bucket
/// under the job id and the message acked after. While a job runs, in-progress acks keep it from
/// being redelivered; a job that fails is recorded as an error and acked (it would fail again); a
/// job delivered more than the consumer's tries gets a dead-letter error record. Jobs not finished
/// when the pipeline is cancelled are handed back (nak) for another worker.
///
/// # Errors
/// [`crate::FleetError::Missing`] when the stream has no consumer (call [`Queue::ensure`] first).
/// Lost connections are not errors: the worker waits for the server to come back.
pub async fn run_worker(
    queue: &Queue,
    pipeline: Arc<Pipeline>,
    opts: &WorkerOptions,
    stop: &Stop,
) -> Result<WorkerSummary> {
    let mut consumer = queue.consumer().await?;
    let config = consumer
        .info()
        .await
        .map_err(|e| queue.err("reading the consumer", e))?
        .config
        .clone();
    // The last delivery JetStream makes is the dead-letter one.
    let max_tries = (config.max_deliver - 1).max(1);
    let progress_every = (config.ack_wait / 4).max(Duration::from_millis(250));
    let concurrency = opts.concurrency.max(1);

    let (job_tx, job_rx) = mpsc::channel::<(u64, ManifestItem)>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (done_tx, mut done_rx) = tmpsc::unbounded_channel::<(u64, Outcome)>();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (pipeline, job_rx, done_tx) = (pipeline.clone(), job_rx.clone(), done_tx.clone());
            std::thread::spawn(move || pipeline_thread(&pipeline, &job_rx, &done_tx))
        })
        .collect();
    drop(done_tx);

    let mut w = State {
        queue,
        opts,
        max_tries,
        in_hand: HashMap::new(),
        next_key: 0,
        summary: WorkerSummary::default(),
    };
    let mut last_progress = Instant::now();
    loop {
        while let Ok((key, outcome)) = done_rx.try_recv() {
            w.finish(key, outcome).await;
        }
        if last_progress.elapsed() >= progress_every {
            w.progress().await;
            last_progress = Instant::now();
        }
        if stop.is_requested() && w.in_hand.is_empty() {
            break;
        }
        let free = concurrency - w.in_hand.len().min(concurrency);
        let mut idle = Duration::MAX;
        if !stop.is_requested() && free > 0 {
            // Draining pulls without waiting, so the last worker notices the end at once.
            if w.pull(&consumer, free, &job_tx, opts.drain).await > 0 || !opts.drain {
                continue;
            }
            if w.in_hand.is_empty() && w.queue_empty(&mut consumer).await {
                tracing::info!("queue drained");
                break;
            }
            // Jobs are still in other workers' hands and may come back: look again shortly.
            idle = opts.pull_wait;
        }
        let next_progress = tokio::time::sleep(
            progress_every
                .saturating_sub(last_progress.elapsed())
                .min(idle),
        );
        tokio::select! {
            done = done_rx.recv() => match done {
                Some((key, outcome)) => w.finish(key, outcome).await,
                None => break,
            },
            () = next_progress => {}
            () = stop.wake.notified() => {}
        }
    }
    drop(job_tx);
    for t in threads {
        // A pipeline thread only ends by its channel closing; a panic there was already logged.
        let _ = t.join();
    }
    Ok(w.summary)
}

/// Runs jobs from `jobs` one at a time through `pipeline` until the channel closes.
fn pipeline_thread(
    pipeline: &Pipeline,
    jobs: &Mutex<mpsc::Receiver<(u64, ManifestItem)>>,
    done: &tmpsc::UnboundedSender<(u64, Outcome)>,
) {
    loop {
        let next = jobs
            .lock()
            .map_err(|_| ())
            .and_then(|rx| rx.recv().map_err(|_| ()));
        let Ok((key, item)) = next else { return };
        let mut record = None;
        // A panic here would leave the job in hand for ever (kept alive by in-progress acks):
        // record it as the job's error instead.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_records(pipeline, &[&item], |r, progress| {
                // Live inputs also make per-window records; the results keep the final one.
                if matches!(progress, BatchProgress::ItemDone { .. }) {
                    record = Some(r.clone());
                }
                Ok(())
            })
        }));
        let error = |why: String| Outcome::Record(error_record(&item.id, &item.job.input, &why));
        let outcome = match (ran, record) {
            (Ok(Ok(_)), Some(r)) => Outcome::Record(r),
            (Ok(Ok(_)), None) => Outcome::Cancelled,
            (Ok(Err(e)), _) => error(e.to_string()),
            (Err(_), _) => error("internal error: the pipeline panicked on this job".into()),
        };
        if done.send((key, outcome)).is_err() {
            return;
        }
    }
}

/// The batch error record (`{"id", "status": "error", "input", "error"}`).
fn error_record(id: &str, input: &str, error: &str) -> Value {
    json!({"id": id, "status": "error", "input": input, "error": error})
}

struct State<'a> {
    queue: &'a Queue,
    opts: &'a WorkerOptions,
    max_tries: i64,
    in_hand: HashMap<u64, InHand>,
    next_key: u64,
    summary: WorkerSummary,
}

impl State<'_> {
    /// Pulls up to `free` jobs (waiting up to the pull wait for one, unless `no_wait`) and hands
    /// them to the pipeline threads; returns how many came.
    async fn pull(
        &mut self,
        consumer: &async_nats::jetstream::consumer::PullConsumer,
        free: usize,
        jobs: &mpsc::Sender<(u64, ManifestItem)>,
        no_wait: bool,
    ) -> usize {
        let wait = self.opts.pull_wait;
        let fetched = tokio::time::timeout(wait + Duration::from_secs(5), async {
            let batch = if no_wait {
                consumer.fetch().max_messages(free).messages().await
            } else {
                consumer
                    .batch()
                    .max_messages(free)
                    .expires(wait)
                    .messages()
                    .await
            };
            let mut batch = batch.map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            while let Some(m) = batch.next().await {
                match m {
                    Ok(m) => got.push(m),
                    // The pull ended early (timeout, or the server is going away).
                    Err(e) => {
                        tracing::debug!("pull: {e}");
                        break;
                    }
                }
            }
            Ok::<_, String>(got)
        })
        .await;
        let messages = match fetched {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!("cannot pull jobs (retrying): {e}");
                tokio::time::sleep(wait).await;
                return 0;
            }
            Err(_) => {
                tracing::warn!("pulling jobs timed out (retrying)");
                return 0;
            }
        };
        let n = messages.len();
        for m in messages {
            self.accept(m, jobs).await;
        }
        n
    }

    /// Takes one delivered message: an invalid record or a job past its tries is recorded at
    /// once, anything else goes to a pipeline thread.
    async fn accept(&mut self, m: Message, jobs: &mpsc::Sender<(u64, ManifestItem)>) {
        let delivered = m.info().map(|i| i.delivered).unwrap_or(1);
        let (m, acker) = m.split();
        let text = String::from_utf8_lossy(&m.payload);
        let hash = serde_json::from_str::<Value>(&text)
            .map(|v| job_hash(&v))
            .unwrap_or_default();
        let item = match parse_manifest(&text) {
            Ok(mut items) if items.len() == 1 => items.remove(0),
            parsed => {
                let why = match parsed {
                    Err(e) => e,
                    Ok(items) => format!("{} jobs in one message", items.len()),
                };
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string));
                let Some(id) = id else {
                    // No id to record it under: drop it for good.
                    tracing::error!("dropping a message that is no job record: {why}");
                    let _ = acker.ack_with(AckKind::Term).await;
                    return;
                };
                let record = error_record(&id, "", &format!("invalid job record: {why}"));
                self.complete(InHand { acker, id, hash }, &record).await;
                return;
            }
        };
        let hand = InHand {
            acker,
            id: item.id.clone(),
            hash,
        };
        if delivered > 1 {
            // A worker may have stored the result and died before its ack.
            let key = crate::result_key(&hand.id);
            if let Ok(Some(h)) = self.queue.stored_hash(&key).await {
                if h == hand.hash {
                    tracing::info!("{}: result already stored, acking", hand.id);
                    self.ack(&hand).await;
                    return;
                }
            }
        }
        if delivered > self.max_tries {
            let tries = delivered - 1;
            let record = json!({
                "id": hand.id,
                "status": "error",
                "input": item.job.input,
                "error": format!(
                    "given up after {tries} unfinished tries: the workers that took it stopped \
                     without finishing it (killed, crashed or stalled)"
                ),
                "dead_letter": true,
            });
            tracing::warn!("{}: dead letter after {tries} unfinished tries", hand.id);
            self.complete(hand, &record).await;
            return;
        }
        tracing::info!("{}: started (delivery {delivered})", hand.id);
        let key = self.next_key;
        self.next_key += 1;
        self.in_hand.insert(key, hand);
        if jobs.send((key, item)).is_err() {
            // The pipeline threads are gone; the job comes back after the ack wait.
            self.in_hand.remove(&key);
        }
    }

    /// Records what a pipeline thread reported for job `key`.
    async fn finish(&mut self, key: u64, outcome: Outcome) {
        let Some(hand) = self.in_hand.remove(&key) else {
            return;
        };
        match outcome {
            Outcome::Record(record) => self.complete(hand, &record).await,
            Outcome::Cancelled => {
                tracing::info!("{}: handed back unfinished", hand.id);
                self.summary.returned += 1;
                if let Err(e) = hand.acker.ack_with(AckKind::Nak(None)).await {
                    tracing::warn!(
                        "{}: nak failed ({e}); it comes back after the ack wait",
                        hand.id
                    );
                }
            }
        }
    }

    /// Stores `record`, then acks: a job is acked only once its result is safe.
    async fn complete(&mut self, hand: InHand, record: &Value) {
        let t0 = Instant::now();
        loop {
            match self.queue.store(record, &hand.hash).await {
                Ok(()) => break,
                Err(e) if t0.elapsed() < self.opts.retry_for => {
                    tracing::warn!("{}: {e} (retrying)", hand.id);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!("{}: {e}; it will be redelivered", hand.id);
                    return;
                }
            }
        }
        let dead = record["dead_letter"].as_bool().unwrap_or(false);
        match record["status"].as_str() {
            _ if dead => self.summary.dead_letters += 1,
            Some("ok") => self.summary.ok += 1,
            _ => self.summary.failed += 1,
        }
        tracing::info!("{}: {}", hand.id, record["status"].as_str().unwrap_or("?"));
        self.ack(&hand).await;
    }

    /// Acks, waiting for the server to confirm; retried while it is away. A job whose ack is lost
    /// is redelivered, and finds its result stored.
    async fn ack(&self, hand: &InHand) {
        let t0 = Instant::now();
        while let Err(e) = hand.acker.double_ack().await {
            if t0.elapsed() >= self.opts.retry_for {
                tracing::error!("{}: ack failed ({e}); it will be redelivered", hand.id);
                return;
            }
            tracing::warn!("{}: ack failed ({e}), retrying", hand.id);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Tells the server the jobs in hand are still running.
    async fn progress(&self) {
        for hand in self.in_hand.values() {
            if let Err(e) = hand.acker.ack_with(AckKind::Progress).await {
                tracing::debug!("{}: in-progress ack failed: {e}", hand.id);
            }
        }
    }

    /// Whether no job is pending and none is in any worker's hands.
    async fn queue_empty(
        &self,
        consumer: &mut async_nats::jetstream::consumer::PullConsumer,
    ) -> bool {
        match consumer.info().await {
            Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
            Err(e) => {
                tracing::warn!("cannot read the queue's state (retrying): {e}");
                false
            }
        }
    }
}
