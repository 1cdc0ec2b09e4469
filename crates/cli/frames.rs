//! `vidlm frames`: decode and sample frames; write them as numbered PNGs with an `index.json`,
//! or list their timestamps as JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::common::parse_time_arg;
use anyhow::Context;
use serde::Serialize;
use vidlm_media::{parse_size, DecodeMode, Input, SampleOptions, Sampler, SamplingStrategy};

/// Arguments of `vidlm frames`.
#[derive(clap::Args)]
pub struct Args {
    /// Video file, URL (http(s), HLS, RTSP...) or `-` for standard input.
    pub input: String,
    /// Sampling strategy: fps:N, frames:N, keyframes, scene:T or all.
    #[arg(long, default_value = "fps:1", value_parser = parse_strategy)]
    pub sample: SamplingStrategy,
    /// Output size WIDTHxHEIGHT (after rotation); default: the display size.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Directory for the PNGs and index.json (created if missing).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the sampled timestamps as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Window start: seconds or [HH:]MM:SS[.fff].
    #[arg(long, value_parser = parse_time_arg)]
    pub from: Option<f64>,
    /// Window end (exclusive): seconds or [HH:]MM:SS[.fff].
    #[arg(long, value_parser = parse_time_arg)]
    pub to: Option<f64>,
    /// At most this many frames.
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Stream index to decode (as `vidlm probe` lists them); default: the best video stream.
    #[arg(long)]
    pub stream: Option<usize>,
    /// auto (choose per file), seek, sequential or parallel; all give the same frames.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    pub mode: DecodeMode,
}

fn parse_strategy(s: &str) -> Result<SamplingStrategy, String> {
    s.parse()
        .map_err(|e: vidlm_media::MediaError| e.to_string())
}
fn parse_size_arg(s: &str) -> Result<(u32, u32), String> {
    parse_size(s).map_err(|e| e.to_string())
}
fn parse_mode(s: &str) -> Result<DecodeMode, String> {
    s.parse()
        .map_err(|e: vidlm_media::MediaError| e.to_string())
}

/// One frame in `index.json` / `--json`.
#[derive(Serialize)]
struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    pts: f64,
    index: Option<u64>,
    keyframe: bool,
    width: u32,
    height: u32,
}

/// `index.json` / `--json` document.
#[derive(Serialize)]
struct Index<'a> {
    input: String,
    strategy: String,
    stream: usize,
    from: f64,
    to: Option<f64>,
    frames: &'a [Entry],
    warnings: &'a [String],
}

/// Runs `vidlm frames`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.out.is_none() && !args.json {
        anyhow::bail!(
            "nothing to do: give --out DIR (PNGs + index.json) and/or --json (timestamps)"
        );
    }
    let input = Input::parse(&args.input);
    let opts = SampleOptions {
        strategy: args.sample,
        from: args.from.unwrap_or(0.0),
        to: args.to,
        max_frames: args.max_frames,
        size: args.size,
        stream: args.stream,
        mode: args.mode,
        workers: None,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the output directory", dir.display()))?;
    }
    let mut sampler = Sampler::open(&input, opts.clone())?;
    let bar = progress_bar();
    let mut entries = Vec::new();
    for frame in sampler.by_ref() {
        let frame = frame?;
        let file = match &args.out {
            Some(dir) => {
                let name = format!("frame_{:05}.png", entries.len() + 1);
                frame.write_png(&dir.join(&name))?;
                Some(name)
            }
            None => None,
        };
        bar.set_message(format!(
            "{} frames, at {:.1} s",
            entries.len() + 1,
            frame.pts
        ));
        bar.tick();
        entries.push(Entry {
            file,
            pts: frame.pts,
            index: frame.index,
            keyframe: frame.keyframe,
            width: frame.width,
            height: frame.height,
        });
    }
    bar.finish_and_clear();
    let index = Index {
        input: input.to_string(),
        strategy: opts.strategy.to_string(),
        stream: sampler.stream_index(),
        from: opts.from,
        to: opts.to,
        frames: &entries,
        warnings: sampler.warnings(),
    };
    if let Some(dir) = &args.out {
        write_index(dir, &index)?;
    }
    if args.json {
        let times: Vec<Entry> = entries
            .iter()
            .map(|e| Entry {
                file: None,
                pts: e.pts,
                index: e.index,
                keyframe: e.keyframe,
                width: e.width,
                height: e.height,
            })
            .collect();
        crate::probe::write_stdout(
            &(serde_json::to_string_pretty(&Index {
                frames: &times,
                ..index
            })? + "\n"),
        )?;
    }
    // A truncated input still produced its frames above; report it as a failure all the same.
    if let Some(w) = sampler.warnings().iter().find(|w| w.contains("truncated")) {
        anyhow::bail!("{w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn write_index(dir: &Path, index: &Index) -> anyhow::Result<()> {
    let path = dir.join("index.json");
    let json = serde_json::to_vec_pretty(index)?;
    vidlm_media::write_atomic(&path, &json)
        .with_context(|| format!("{}: cannot write", path.display()))
}

fn progress_bar() -> indicatif::ProgressBar {
    // Hidden automatically when stderr is not a terminal.
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}
