//! `vidlm summarize`: timestamped descriptions of a video and an overall summary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use vidlm_pipeline::{Event, JobOutcome, JobOutput, JobSpec, OutputFormat};

use crate::common::{parse_time_arg, progress_spinner, PipelineArgs};

/// Arguments of `vidlm summarize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The video: a file, a URL (http, rtsp, hls) or `-` for standard input.
    pub input: String,
    /// Output format: json, md, srt or vtt (default: the preset's, else json).
    #[arg(long, short = 'f', value_name = "FORMAT")]
    pub format: Option<String>,
    /// Write to FILE (atomically) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Start of the time range (seconds or [HH:]MM:SS).
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub from: Option<f64>,
    /// End of the time range.
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub to: Option<f64>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Runs `vidlm summarize`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(f), Some(t)) = (args.from, args.to) {
        if t <= f {
            bail!("--to ({t} s) must be after --from ({f} s)");
        }
    }
    let cfg = args.pipeline.config()?;
    let format: OutputFormat = args
        .format
        .as_deref()
        .unwrap_or(&cfg.output.format)
        .parse()?;
    let pipeline = args.pipeline.build_cached(args.pipeline.config()?)?;
    let job = JobSpec {
        from: args.from,
        to: args.to,
        ..JobSpec::summarize(args.input.clone(), args.input.clone())
    };
    let spinner = progress_spinner();
    let report = pipeline.run(std::slice::from_ref(&job), |ev| {
        if let (Some(pb), Event::Segment { segment, .. }) = (&spinner, ev) {
            pb.set_message(format!(
                "described {}-{}",
                vidlm_pipeline::format_clock(segment.start),
                vidlm_pipeline::format_clock(segment.end)
            ));
        }
    });
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    tracing::info!(metrics = ?report.metrics, "summarize done");
    if args.pipeline.metrics {
        eprintln!("{}", serde_json::json!({ "metrics": report.metrics }));
    }
    let output = match report.outcomes.into_iter().next() {
        Some(JobOutcome::Finished(JobOutput::Summary(s))) => s,
        Some(JobOutcome::Failed(e)) => bail!("{e}"),
        _ => {
            eprintln!("vidlm: interrupted; nothing written");
            return Ok(ExitCode::from(130));
        }
    };
    let rendered = pipeline.summary_report(&args.input, output).render(format);
    match &args.out {
        Some(path) => vidlm_pipeline::write_atomic(path, rendered.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())
                .and_then(|_| out.flush())
                .context("writing to standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
