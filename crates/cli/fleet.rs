//! `vidlm submit`, `vidlm worker`, `vidlm results` and `vidlm status`: `vidlm batch` on many
//! machines, over a NATS JetStream work queue (vidlm-fleet).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use vidlm_fleet::{ConsumerSettings, Queue, QueueOptions, Stop, WorkerOptions};
use vidlm_pipeline::batch::read_manifest;
use vidlm_pipeline::CancelToken;

use crate::common::{parse_duration, PipelineArgs};

/// Where the queue is (shared by the fleet subcommands). No `Debug`: the options are not logged.
#[derive(clap::Args, Clone)]
pub struct QueueArgs {
    /// The NATS server with JetStream (`nats-server -js`), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    pub queue: String,
    /// The stream: jobs on subject STREAM.jobs, results in bucket STREAM-results.
    #[arg(long, value_name = "NAME", default_value = "vidlm")]
    pub stream: String,
    /// A NATS creds file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// A CA certificate (PEM) to trust; the connection then requires TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl QueueArgs {
    fn options(&self) -> QueueOptions {
        QueueOptions {
            creds: self.creds.clone(),
            tls_ca: self.tls_ca.clone(),
            ..QueueOptions::new(&self.queue, &self.stream)
        }
    }

    async fn connect(&self) -> anyhow::Result<Queue> {
        Ok(Queue::connect(&self.options()).await?)
    }
}

/// Arguments of `vidlm submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The manifest (the JSONL or CSV of `vidlm batch`).
    pub manifest: PathBuf,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// When the stream is created: how long a job may go without a sign of life from its worker
    /// before it is redelivered.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub ack_wait: String,
    /// When the stream is created: how many workers may stop on a job without finishing it
    /// before it is recorded as a dead letter.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_tries: u32,
}

/// Arguments of `vidlm worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Jobs run at once, each as its own pipeline run on its own thread; the model takes turns,
    /// so with 2 one job's decoding overlaps another's generation.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub concurrency: usize,
    /// Exit once no job is left (none pending, none in any worker's hands): for batch runs and
    /// Kubernetes Jobs.
    #[arg(long)]
    pub drain: bool,
    /// After SIGTERM or Ctrl-C, how long the jobs in hand may run on before they are handed back
    /// to the queue (a second signal hands them back at once).
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    pub grace: String,
    /// Result records larger than this (bytes of JSON) go to the object store STREAM-outputs
    /// instead of the results bucket (`vidlm results` reads both).
    #[arg(long, value_name = "BYTES", default_value_t = vidlm_fleet::INLINE_MAX)]
    pub inline_max: usize,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Arguments of `vidlm results`.
#[derive(clap::Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// The JSONL to write (whole, atomically): one result record per job id, sorted by id.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,
}

/// Arguments of `vidlm status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Print the counts as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A small runtime: the fleet's work is network waits, the pipeline has its own threads.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `vidlm submit`: prints `N new, N already queued, N already done`.
pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let items = read_manifest(&args.manifest)?;
    let settings = ConsumerSettings {
        ack_wait: Duration::from_secs_f64(parse_duration(&args.ack_wait).context("--ack-wait")?),
        max_tries: args.max_tries.max(1),
    };
    let report = runtime()?.block_on(async {
        let queue = args.queue.connect().await?;
        queue.ensure(settings).await?;
        anyhow::Ok(queue.submit(&items).await?)
    })?;
    println!(
        "{} new, {} already queued, {} already done ({} jobs in {})",
        report.new,
        report.queued,
        report.done,
        items.len(),
        args.manifest.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `vidlm worker`. Exit status: 0 when drained, 130 when stopped by a signal.
pub fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let grace = Duration::from_secs_f64(parse_duration(&args.grace).context("--grace")?);
    let rt = runtime()?;
    let stop = Stop::new();
    let cancel = CancelToken::new();
    // Signals first, so one during the model load stops the worker before it takes a job.
    rt.block_on(watch_signals(stop.clone(), cancel.clone(), grace))?;
    // The model loads before the worker connects: a wrong model takes no job.
    let pipeline = Arc::new(
        args.pipeline
            .build_with_token(args.pipeline.config()?, cancel)?,
    );
    if stop.is_requested() {
        return Ok(ExitCode::from(130));
    }
    let opts = WorkerOptions {
        concurrency: args.concurrency.max(1),
        drain: args.drain,
        ..WorkerOptions::default()
    };
    let queue_opts = QueueOptions {
        inline_max: args.inline_max,
        ..args.queue.options()
    };
    let summary = rt.block_on(async {
        let queue = Queue::connect(&queue_opts).await?;
        queue.ensure(ConsumerSettings::default()).await?;
        anyhow::Ok(vidlm_fleet::run_worker(&queue, pipeline, &opts, &stop).await?)
    })?;
    eprintln!(
        "vidlm: worker: {} ok, {} failed, {} dead letters, {} handed back",
        summary.ok, summary.failed, summary.dead_letters, summary.returned
    );
    Ok(if stop.is_requested() {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// First SIGTERM/SIGINT: stop pulling and let the jobs in hand finish for `grace`; then (or on a
/// second signal) cancel the pipeline, so the unfinished jobs are handed back.
async fn watch_signals(stop: Stop, cancel: CancelToken, grace: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!(
            "stopping: finishing the jobs in hand for up to {grace:?}; signal again to hand them back now"
        );
        stop.stop();
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("handing the unfinished jobs back");
        cancel.cancel();
    });
    Ok(())
}

/// Runs `vidlm results`.
pub fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    let records =
        runtime()?.block_on(async { anyhow::Ok(args.queue.connect().await?.results().await?) })?;
    let mut text = String::new();
    for r in &records {
        text.push_str(&r.to_string());
        text.push('\n');
    }
    vidlm_pipeline::write_atomic(&args.out, text.as_bytes())?;
    eprintln!("vidlm: {} results -> {}", records.len(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs `vidlm status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let s =
        runtime()?.block_on(async { anyhow::Ok(args.queue.connect().await?.status().await?) })?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "pending": s.pending, "in_progress": s.in_progress, "done": s.done, "failed": s.failed
            })
        );
    } else {
        println!(
            "pending {}, in progress {}, done {}, failed {}",
            s.pending, s.in_progress, s.done, s.failed
        );
    }
    Ok(ExitCode::SUCCESS)
}
