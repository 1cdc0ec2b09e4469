//! `vidlm ask`: answer a question about a video (sampled frames, video prompt) or about images
//! (`--image`, image prompt with splitting), with a SmolVLM2 model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use vidlm_models::smolvlm::{AskOutput, SmolVlmEngine};
use vidlm_models::{GenerationParams, LoadOptions, VideoFrame, VisionLanguageModel};

/// The default model: SmolVLM2 256M, trained on video.
pub const DEFAULT_MODEL: &str = "HuggingFaceTB/SmolVLM2-256M-Video-Instruct";

/// Arguments of `vidlm ask`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  vidlm ask clip.mp4 \"What happens?\" --model DIR\n  \
                        vidlm ask --image photo.png \"What is in this picture?\" --json"
)]
pub struct Args {
    /// `[VIDEO] QUESTION`: a video file (or URL) and the question; with `--image`, only the
    /// question.
    #[arg(value_name = "[VIDEO] QUESTION", num_args = 1..=2, required = true)]
    inputs: Vec<String>,
    /// Model directory or Hugging Face hub id (resolved in the HF cache; HF_HOME, HF_HUB_OFFLINE).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// Ask about this image instead of a video (repeatable).
    #[arg(long = "image", value_name = "PNG")]
    images: Vec<PathBuf>,
    /// Frame sampling: fps:N, frames:N, keyframes, scene:T or all (capped at the model's budget).
    #[arg(long, default_value = "frames:8")]
    sample: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold (1 disables it).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep the k most likely tokens (0 disables it).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Penalty on tokens already present (1 disables it).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Weight and activation dtype: f32 (CPU default), bf16 or f16 (for accelerators).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    dtype: String,
    /// Print one JSON object (answer, token_ids, frames, usage) instead of streaming the answer.
    #[arg(long)]
    json: bool,
}

/// The first line of an error: candle appends a backtrace to its messages when RUST_BACKTRACE is
/// set, and errors here are one line.
fn one_line(e: vidlm_models::ModelError) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().lines().next().unwrap_or_default())
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
        timestamp: 0.0,
    })
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
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        bail!("--temperature {}: must be a number >= 0", args.temperature);
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!("--top-p {}: must be in (0, 1]", args.top_p);
    }
    if args.threads == Some(0) {
        bail!("--threads 0: must be at least 1");
    }
    let strategy: vidlm_media::SamplingStrategy = args
        .sample
        .parse()
        .with_context(|| format!("--sample {}", args.sample))?;

    let t0 = Instant::now();
    let dtype = match args.dtype.as_str() {
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        _ => candle_core::DType::F32,
    };
    let opts = LoadOptions {
        threads: args.threads,
        dtype,
        ..LoadOptions::default()
    };
    let mut engine = SmolVlmEngine::load(&args.model, &opts)
        .map_err(one_line)
        .with_context(|| format!("--model {}: cannot load the model", args.model))?;
    let load_s = t0.elapsed().as_secs_f64();

    let params = GenerationParams {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    let stream = !args.json;
    let mut on_text = |s: &str| {
        if stream {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(s.as_bytes());
            let _ = stdout.flush();
        }
    };

    let t1 = Instant::now();
    let (frames, duration) = match &video {
        Some(v) => {
            vidlm_media::init();
            let input = vidlm_media::Input::parse(v);
            let info = vidlm_media::probe(&input)
                .with_context(|| format!("{v}: cannot read the video"))?;
            let mut so = vidlm_media::SampleOptions::new(strategy);
            so.max_frames = Some(engine.max_frames());
            let sampled = vidlm_media::sample_all(&input, so)
                .with_context(|| format!("{v}: cannot sample frames"))?;
            if sampled.is_empty() {
                bail!(
                    "{v}: no frames could be sampled with --sample {}",
                    args.sample
                );
            }
            let frames: Vec<VideoFrame> = sampled
                .into_iter()
                .map(|f| VideoFrame {
                    rgb: f.rgb,
                    width: f.width,
                    height: f.height,
                    timestamp: f.pts,
                })
                .collect();
            (frames, info.duration)
        }
        None => (
            args.images
                .iter()
                .map(load_png)
                .collect::<anyhow::Result<Vec<_>>>()?,
            None,
        ),
    };
    let sample_s = t1.elapsed().as_secs_f64();

    let out: AskOutput = if video.is_some() {
        engine.ask_video(&frames, duration, &question, &params, &mut on_text)
    } else {
        engine.ask_images(&frames, &question, &params, &mut on_text)
    }
    .map_err(one_line)
    .with_context(|| format!("{}: generation failed", engine.name()))?;
    let g = &out.generation;
    if args.json {
        let v = serde_json::json!({
            "answer": g.text,
            "token_ids": g.token_ids,
            "frames": frames.iter().map(|f| f.timestamp).collect::<Vec<_>>(),
            "finish": g.finish,
            "model": args.model,
            "usage": {
                "prompt_tokens": g.prompt_tokens,
                "generated_tokens": g.token_ids.len(),
                "seconds": {
                    "load": load_s,
                    "sample": sample_s,
                    "preprocess": out.preprocess_seconds,
                    "vision": out.vision_seconds,
                    "prefill": g.prefill_seconds,
                    "decode": g.decode_seconds,
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
