//! `vidlm ask`: answer a question about a video or about images, with any supported model
//! (SmolVLM2 or Qwen3-VL, as the checkpoint's config.json says).
//!
//! A video goes through the pipeline: clips that fit one prompt are asked directly; longer ones
//! are described chunk by chunk first, the chunks that match the question are asked over, and
//! their time ranges come back as evidence. `--image` asks the model's image prompt instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use vidlm_models::{GenerationParams, VideoFrame};
use vidlm_pipeline::{format_clock, PipelineConfig, TimeRange};

use crate::common::{parse_time_arg, PipelineArgs};

/// The default model: SmolVLM2 256M, trained on video.
pub const DEFAULT_MODEL: &str = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct";
/// Frame sampling without `--pipeline` or `--sample`.
pub const DEFAULT_SAMPLE: &str = "frames:8";
/// Most new tokens without `--pipeline` or `--max-new-tokens`.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 256;

/// Arguments of `vidlm ask`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --pipeline: --model HuggingFaceTB/SmolVLM2-256M-Video-Instruct \
                        --sample frames:8 --max-new-tokens 256, greedy.\n\n\
                        Examples:\n  vidlm ask clip.mp4 \"What happens?\" --model DIR\n  \
                        vidlm ask long.mp4 \"When does the door open?\" --pipeline \
                        pipelines/ask.toml --json\n  \
                        vidlm ask clip.mp4 \"Who speaks?\" --from 1:00 --to 2:00\n  \
                        vidlm ask --image photo.png \"What is in this picture?\" --json"
)]
pub struct Args {
    /// `[VIDEO] QUESTION`: a video file (or URL) and the question; with `--image`, only the
    /// question.
    #[arg(value_name = "[VIDEO] QUESTION", num_args = 1..=2, required = true)]
    inputs: Vec<String>,
    /// Ask about this image instead of a video (repeatable; Qwen3-VL takes one).
    #[arg(long = "image", value_name = "PNG")]
    images: Vec<PathBuf>,
    /// Start of the time range asked about (seconds or [HH:]MM:SS).
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    from: Option<f64>,
    /// End of the time range asked about (exclusive).
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    to: Option<f64>,
    /// Nucleus sampling threshold (1 disables it; default: the preset's, else 1).
    #[arg(long, value_name = "P")]
    top_p: Option<f64>,
    /// Keep the k most likely tokens (0 disables it; default: the preset's, else 0).
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Penalty on tokens already present (1 disables it; default: the preset's, else 1).
    #[arg(long, value_name = "X")]
    repetition_penalty: Option<f32>,
    /// Print one JSON object (answer, token_ids, frames, evidence, answer_times, usage, model)
    /// instead of the answer as text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

impl Args {
    /// The pipeline configuration: the preset (or ask's defaults) with every flag applied.
    fn config(&self) -> anyhow::Result<PipelineConfig> {
        let mut p = self.pipeline.clone();
        if p.pipeline.is_none() {
            // The CLI contract's defaults (issue 3), not the summarize-oriented library ones.
            p.model.get_or_insert_with(|| DEFAULT_MODEL.to_string());
            p.sample.get_or_insert_with(|| DEFAULT_SAMPLE.to_string());
            p.max_new_tokens.get_or_insert(DEFAULT_MAX_NEW_TOKENS);
        }
        let mut cfg = p.config()?;
        if let Some(x) = self.top_p {
            cfg.generation.top_p = x;
        }
        if let Some(k) = self.top_k {
            cfg.generation.top_k = k;
        }
        if let Some(r) = self.repetition_penalty {
            cfg.generation.repetition_penalty = r;
        }
        let g = &cfg.generation;
        if !(g.temperature >= 0.0 && g.temperature.is_finite()) {
            bail!("--temperature {}: must be a number >= 0", g.temperature);
        }
        if !(g.top_p > 0.0 && g.top_p <= 1.0) {
            bail!("--top-p {}: must be in (0, 1]", g.top_p);
        }
        if !(g.repetition_penalty > 0.0 && g.repetition_penalty.is_finite()) {
            bail!(
                "--repetition-penalty {}: must be a number > 0",
                g.repetition_penalty
            );
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `vidlm ask`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let t_all = Instant::now();
    let (video, question) = match (args.images.is_empty(), args.inputs.as_slice()) {
        (true, [v, q]) => (Some(v.clone()), q.clone()),
        (true, [_]) => bail!("ask: give a VIDEO and a QUESTION (or --image PNG and a QUESTION)"),
        (false, [q]) => (None, q.clone()),
        (false, _) => bail!("ask: with --image give only the QUESTION, not a video"),
        _ => bail!("ask: expected [VIDEO] QUESTION"),
    };
    if question.trim().is_empty() {
        bail!("ask: the question is empty");
    }
    if args.pipeline.threads == Some(0) {
        bail!("--threads 0: must be at least 1");
    }
    if let (Some(f), Some(t)) = (args.from, args.to) {
        if t <= f {
            bail!("--to ({t} s) must be after --from ({f} s)");
        }
    }
    let cfg = args.config()?;
    match video {
        Some(v) => ask_video(&args, cfg, &v, &question, t_all),
        None => {
            if args.from.is_some() || args.to.is_some() {
                bail!("--from/--to: only for a video, not with --image");
            }
            ask_images(&args, &cfg, &question, t_all)
        }
    }
}

/// A video through the pipeline's `ask`.
fn ask_video(
    args: &Args,
    cfg: PipelineConfig,
    video: &str,
    question: &str,
    t_all: Instant,
) -> anyhow::Result<ExitCode> {
    // Check the sampling spec before the (slow) model load, naming the flag.
    cfg.sampling
        .strategy
        .parse::<vidlm_media::SamplingStrategy>()
        .with_context(|| format!("--sample {}", cfg.sampling.strategy))?;
    let model_id = cfg.model.id.clone();
    let t0 = Instant::now();
    let pipeline = args.pipeline.build_cached(cfg)?;
    let load_s = t0.elapsed().as_secs_f64();
    let spinner = if args.json {
        None
    } else {
        crate::common::progress_spinner()
    };
    // The answer streams to stdout as it is written (unless --json); the spinner covers sampling,
    // encoding and any chunk descriptions before it.
    let mut spinner = spinner;
    let mut streamed = false;
    let mut write_err: Option<std::io::Error> = None;
    let result = pipeline.ask_streaming(video, question, args.from, args.to, |text| {
        if args.json || write_err.is_some() {
            return;
        }
        if let Some(pb) = spinner.take() {
            pb.finish_and_clear();
        }
        streamed = true;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            write_err = Some(e);
        }
    });
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(vidlm_pipeline::PipelineError::Cancelled) => {
            eprintln!("vidlm: interrupted; nothing written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => return Err(e.into()),
    };
    let s = &report.timings.stages;
    if args.pipeline.metrics {
        eprintln!(
            "{}",
            serde_json::json!({ "metrics": { "timings": report.timings, "usage": report.usage } })
        );
    }
    if args.json {
        let v = serde_json::json!({
            "answer": report.answer,
            "token_ids": report.token_ids,
            "frames": report.frames,
            "evidence": report.evidence,
            "answer_times": report.answer_times,
            "chunks": report.chunks,
            "question": report.question,
            "video": report.video,
            "model": model_id,
            "usage": {
                "calls": report.usage.calls,
                "prompt_tokens": report.usage.prompt_tokens,
                "generated_tokens": report.usage.generated_tokens,
                "seconds": {
                    "load": load_s,
                    "sample": s.decode,
                    "preprocess": s.preprocess,
                    "vision": s.encode,
                    "pool": s.pool,
                    "llm": s.llm,
                    "total": t_all.elapsed().as_secs_f64(),
                },
            },
        });
        println!("{v}");
    } else {
        if let Some(e) = write_err {
            return Err(e).context("writing to standard output");
        }
        let mut out = std::io::stdout().lock();
        // The answer streamed; an empty one (nothing streamed) still ends with a newline.
        let rest = if streamed { "" } else { report.answer.as_str() };
        writeln!(out, "{rest}")
            .and_then(|_| out.flush())
            .context("writing to standard output")?;
        if !report.chunks.is_empty() {
            eprintln!("evidence: {}", ranges(&report.evidence));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `0:10-0:20, 0:40-0:50`.
fn ranges(r: &[TimeRange]) -> String {
    r.iter()
        .map(|t| format!("{}-{}", format_clock(t.start), format_clock(t.end)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn load_png(path: &PathBuf) -> anyhow::Result<VideoFrame> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open image", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read image", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a decodable image", path.display()))?
        .to_rgb8();
    let (width, height) = img.dimensions();
    Ok(VideoFrame {
        rgb: img.into_raw(),
        width,
        height,
        pts: 0.0,
    })
}

/// Images through the model's own image prompt (SmolVLM2: several, with splitting; Qwen3-VL:
/// one), streaming the answer unless `--json`.
fn ask_images(
    args: &Args,
    cfg: &PipelineConfig,
    question: &str,
    t_all: Instant,
) -> anyhow::Result<ExitCode> {
    // Read the images first: a bad path fails before the (slow) model load.
    let t1 = Instant::now();
    let frames = args
        .images
        .iter()
        .map(load_png)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let read_s = t1.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let spec = cfg.model.id.as_str();
    let mut model = vidlm_pipeline::load_model(&cfg.model)?;
    match model.max_images() {
        0 => bail!(
            "--image: {spec} is a {} model, which takes no still images",
            model.family()
        ),
        1 if frames.len() > 1 => bail!(
            "--image: {spec} is a {} model, which takes one image per question (got {})",
            model.family(),
            frames.len()
        ),
        n if frames.len() > n => bail!(
            "--image: {spec} is a {} model, which takes at most {n} images per question (got {})",
            model.family(),
            frames.len()
        ),
        _ => {}
    }
    let load_s = t0.elapsed().as_secs_f64();

    let params: GenerationParams = cfg.generation.params();
    let stream = !args.json;
    let mut on_text = |s: &str| {
        if stream {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        }
    };
    let t2 = Instant::now();
    // Qwen3-VL's image call does not split its time: its preprocessing and vision are inside the
    // LLM seconds.
    let out = model
        .generate_images(&frames, question, &params, &mut on_text)
        .with_context(|| format!("{spec}: generation failed"))?;
    let (g, pre_s, vis_s) = (out.generation, out.preprocess_seconds, out.vision_seconds);
    let gen_s = t2.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "answer": g.text,
            "token_ids": g.token_ids,
            "frames": frames.iter().map(|f| f.pts).collect::<Vec<_>>(),
            "evidence": [],
            "answer_times": [],
            "finish": g.finish,
            "question": question,
            "model": spec,
            "usage": {
                "calls": 1,
                "prompt_tokens": g.prompt_tokens,
                "generated_tokens": g.token_ids.len(),
                "seconds": {
                    "load": load_s,
                    "sample": read_s,
                    "preprocess": pre_s,
                    "vision": vis_s,
                    "pool": 0.0,
                    "llm": (gen_s - pre_s - vis_s).max(0.0),
                    "total": t_all.elapsed().as_secs_f64(),
                },
            },
        });
        println!("{v}");
    } else {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
