//! The `vidlm` command line: a thin layer over the library crates. Each subcommand lives in its own
//! module with its clap `Args` and a `run` function.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ask;
mod batch;
mod common;
mod eval;
mod fleet;
mod frames;
mod probe;
mod serve;
mod summarize;

/// vidlm: summarize videos, ask questions about clips, and run batch jobs over files and streams.
#[derive(Parser)]
#[command(name = "vidlm", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `vidlm_media=debug`. Also read from
    /// RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print container, streams, duration and frame rate of a video (like ffprobe).
    Probe(probe::Args),
    /// Decode and sample frames; write them as PNGs with an index.json, or list their times.
    Frames(frames::Args),
    /// Answer a question about a video or images.
    Ask(ask::Args),
    /// Write timestamped descriptions of a video and an overall summary.
    Summarize(summarize::Args),
    /// Run summarize/ask jobs over a manifest of files, URLs and streams.
    Batch(batch::Args),
    /// Queue a manifest's jobs on a NATS JetStream server for `vidlm worker`s.
    Submit(fleet::SubmitArgs),
    /// Run queued jobs (as `vidlm batch` would) and store their results in the queue.
    Worker(fleet::WorkerArgs),
    /// Collect the queue's result records into one JSONL file.
    Results(fleet::ResultsArgs),
    /// Print the queue's pending, in-progress, done and failed counts.
    Status(fleet::StatusArgs),
    /// Serve the models over an OpenAI-compatible HTTP API (chat completions with video).
    Serve(serve::Args),
    /// Measure answers: benchmark suites and synthetic probes, with language-prior controls.
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    // Model activations are large; reusing freed blocks avoids page faults on every op.
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let result = match cli.command {
        Command::Probe(args) => probe::run(args),
        Command::Frames(args) => frames::run(args),
        Command::Ask(args) => ask::run(args),
        Command::Summarize(args) => summarize::run(args),
        Command::Batch(args) => batch::run(args),
        Command::Submit(args) => fleet::submit(args),
        Command::Worker(args) => fleet::worker(args),
        Command::Results(args) => fleet::results(args),
        Command::Status(args) => fleet::status(args),
        Command::Serve(args) => serve::run(args),
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the context chain joined, as users of ffmpeg expect.
            eprintln!("vidlm: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    // The NATS client logs its CONNECT message, password included, at trace level.
    let filter = match "async_nats=debug".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
