//! `vidlm batch`: summarize/ask jobs over a manifest of files, URLs and streams, one JSON line per
//! item in the output (appended whole, so an interrupted run leaves a valid file; `--resume`
//! continues it).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use vidlm_pipeline::batch::{read_manifest, run_batch, BatchProgress, OutputLog, Shard};

use crate::common::PipelineArgs;

/// Arguments of `vidlm batch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The manifest: JSONL or CSV with id, input, task (summarize|ask), question, from, to.
    pub manifest: PathBuf,
    /// Output JSONL (default: the manifest's name with `.results.jsonl`).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Keep the output and skip the ids it already has a result or error for.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start the output over when it already exists (otherwise that is an error, so results are
    /// never lost by accident).
    #[arg(long)]
    pub overwrite: bool,
    /// Run only part I of N of the manifest (items I, I+N, I+2N...), for N machines:
    /// `I/N`, or `N` with I from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job). The output
    /// gets a `.shard-I-of-N` suffix, so each shard has its own file and `--resume` works per
    /// shard.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Runs `vidlm batch`. Exit status: 0 when every item succeeded, 1 when any failed, 130 when
/// interrupted (the output then holds the items finished so far).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut items = read_manifest(&args.manifest)?;
    let mut out_path = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch".into());
        args.manifest
            .with_file_name(format!("{stem}.results.jsonl"))
    });
    if let Some(spec) = &args.shard {
        let index = std::env::var("JOB_COMPLETION_INDEX").ok();
        let shard = Shard::parse(spec, index.as_deref()).map_err(anyhow::Error::msg)?;
        items = shard.select(items);
        out_path = shard_path(&out_path, shard);
        tracing::info!("shard {shard}: {} items", items.len());
    }
    let exists = std::fs::metadata(&out_path).is_ok_and(|m| m.len() > 0);
    if exists && !args.resume && !args.overwrite {
        anyhow::bail!(
            "{}: the output exists; --resume continues it, --overwrite starts it over",
            out_path.display()
        );
    }
    let (mut log, done) = OutputLog::open(&out_path, args.resume)?;
    let todo = items.iter().filter(|i| !done.contains(&i.id)).count();
    if todo == 0 {
        eprintln!(
            "vidlm: nothing to do: all {} items are in {}",
            items.len(),
            out_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let pipeline = args.pipeline.build()?;
    let bar = progress_bar(todo as u64);
    let summary = run_batch(&pipeline, &items, &done, &mut log, |p| {
        if let Some(pb) = &bar {
            match p {
                BatchProgress::ItemDone { id, ok } => {
                    pb.inc(1);
                    pb.set_message(format!("{id} {}", if *ok { "ok" } else { "failed" }));
                }
                BatchProgress::Window { id, segment } => pb.set_message(format!(
                    "{id} window {}-{}",
                    vidlm_pipeline::format_clock(segment.start),
                    vidlm_pipeline::format_clock(segment.end)
                )),
            }
        }
    })
    .with_context(|| format!("writing {}", out_path.display()))?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if let (true, Some(m)) = (args.pipeline.metrics, &summary.metrics) {
        eprintln!("{}", serde_json::json!({ "metrics": m }));
    }
    eprintln!(
        "vidlm: {} ok, {} failed, {} skipped{} -> {}",
        summary.ok,
        summary.failed,
        summary.skipped,
        if summary.cancelled > 0 {
            format!(", {} not run (interrupted)", summary.cancelled)
        } else {
            String::new()
        },
        out_path.display()
    );
    Ok(if pipeline.cancel_token().is_cancelled() {
        ExitCode::from(130)
    } else if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `out` with `.shard-I-of-N` before its extension: `r.jsonl` -> `r.shard-0-of-3.jsonl`.
fn shard_path(out: &std::path::Path, shard: Shard) -> PathBuf {
    let tag = format!("shard-{}-of-{}", shard.index, shard.count);
    let name = match (out.file_stem(), out.extension()) {
        (Some(stem), Some(ext)) => {
            format!("{}.{tag}.{}", stem.to_string_lossy(), ext.to_string_lossy())
        }
        _ => format!(
            "{}.{tag}",
            out.file_name().unwrap_or_default().to_string_lossy()
        ),
    };
    out.with_file_name(name)
}

/// A progress bar with ETA on stderr when it is a terminal.
pub(crate) fn progress_bar(len: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} items, ETA {eta} {msg}",
    ) {
        pb.set_style(style);
    }
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    Some(pb)
}
