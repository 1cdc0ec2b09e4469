//! `vidlm eval`: run a benchmark suite (or the synthetic probes) with any model and pipeline
//! setting, under the language-prior controls, and write records and a report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::json;
use vidlm_eval::reuse::ReuseEncodings;
use vidlm_eval::run::{self, Mode};
use vidlm_eval::Condition;
use vidlm_pipeline::batch::{BatchProgress, OutputLog};
use vidlm_pipeline::{install_ctrlc, CancelToken, Pipeline};

use crate::common::PipelineArgs;

/// Frame sampling without `--pipeline` or `--sample`.
const DEFAULT_SAMPLE: &str = "frames:8";
/// Most new tokens without `--pipeline` or `--max-new-tokens`: lmms-eval's Video-MME and MVBench
/// tasks generate at most 16.
const DEFAULT_MAX_NEW_TOKENS: usize = 16;

/// Arguments of `vidlm eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(clap::Subcommand, Debug)]
enum EvalCommand {
    /// Run a suite: vidlm JSONL, Video-MME, MVBench, NExT-QA CSV or Charades-STA.
    Run(Box<RunArgs>),
    /// Write synthetic clips with known answers and their suite (DIR/suite.jsonl).
    Synth(SynthArgs),
}

/// Arguments of `vidlm eval run`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes DIR/records.jsonl (one line per item and condition), \
                        DIR/report.json, DIR/report.md and DIR/report.png.\n\n\
                        Example:\n  vidlm eval run suite.jsonl --model DIR --out results \
                        --conditions video,blind"
)]
pub struct RunArgs {
    /// The suite's annotation file.
    suite: PathBuf,
    /// Output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// generate (the model writes, scored as the benchmark scores) or likelihood (each option's
    /// log-probability after the prompt, see --likelihood-of; multiple choice only).
    #[arg(long, default_value = "generate", value_parser = ["generate", "likelihood"])]
    mode: String,
    /// In likelihood mode, what each option is scored by: `option` (its text's tokens after the
    /// prompt, summed) or `letter` (its letter as the first answer token).
    #[arg(long, default_value = "option", value_parser = ["option", "letter"])]
    likelihood_of: String,
    /// Conditions each item runs under: video, blind, single-frame, shuffled.
    #[arg(long, default_value = "video", value_name = "LIST")]
    conditions: String,
    /// Seed of the shuffled condition.
    #[arg(long, default_value_t = 0, value_name = "S")]
    shuffle_seed: u64,
    /// Folder of the videos (named as the benchmark names them); default: the suite's folder.
    #[arg(long, value_name = "D")]
    video_dir: Option<PathBuf>,
    /// Keep DIR/records.jsonl and run only what it lacks.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Start DIR/records.jsonl over when it exists.
    #[arg(long)]
    overwrite: bool,
    /// Encode every condition's frames afresh (by default a frame group with the pixels of one
    /// already encoded reuses its visual tokens).
    #[arg(long)]
    no_encoding_reuse: bool,
    /// Run at most this many items (the first N of the suite).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Arguments of `vidlm eval synth`.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output folder: the clips and suite.jsonl.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seed: the same seed writes the same clips and questions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Items per task.
    #[arg(long, default_value_t = 4, value_name = "N")]
    per_task: usize,
}

/// Runs `vidlm eval`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        EvalCommand::Run(a) => run_suite(*a),
        EvalCommand::Synth(a) => synth(a),
    }
}

fn synth(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let n = vidlm_eval::synth::write_suite(&a.out, a.seed, a.per_task)
        .with_context(|| format!("writing the synthetic suite to {}", a.out.display()))?;
    eprintln!(
        "vidlm: {n} items -> {}",
        a.out.join("suite.jsonl").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_suite(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mode: Mode = a.mode.parse()?;
    let conditions = Condition::parse_list(&a.conditions)?;
    let (layout, mut items) = vidlm_eval::suite::read_suite(&a.suite, a.video_dir.as_deref())?;
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    if mode == Mode::Likelihood {
        let before = items.len();
        items.retain(|i| matches!(i.truth, vidlm_eval::suite::Truth::Choice { .. }));
        if items.len() < before {
            eprintln!(
                "vidlm: likelihood mode scores multiple-choice items only: {} of {before} items left out",
                before - items.len()
            );
        }
        if items.is_empty() {
            bail!(
                "{}: no multiple-choice items to score by likelihood",
                a.suite.display()
            );
        }
    }
    let mut p = a.pipeline.clone();
    if p.pipeline.is_none() {
        p.sample.get_or_insert_with(|| DEFAULT_SAMPLE.to_string());
        p.max_new_tokens.get_or_insert(DEFAULT_MAX_NEW_TOKENS);
    }
    if p.model.is_none() && p.pipeline.is_none() {
        bail!("--model is required (a model directory or hub id)");
    }
    let cfg = p.config()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let records_path = a.out.join("records.jsonl");
    let exists = std::fs::metadata(&records_path).is_ok_and(|m| m.len() > 0);
    if exists && !a.resume && !a.overwrite {
        bail!(
            "{}: the records exist; --resume continues them, --overwrite starts them over",
            records_path.display()
        );
    }
    let (mut log, done) = OutputLog::open(&records_path, a.resume)?;
    let todo = run::pending(&items, &conditions, &done);
    let cancel = CancelToken::new();
    install_ctrlc(&cancel)?;
    let bar = crate::batch::progress_bar(todo.len() as u64);
    let tick = |id: &str, ok: bool| {
        if let Some(pb) = &bar {
            pb.inc(1);
            pb.set_message(format!("{id} {}", if ok { "ok" } else { "failed" }));
        }
    };
    let mut reuse = None;
    let summary = if todo.is_empty() {
        eprintln!("vidlm: nothing to run: every item has a record");
        None
    } else if mode == Mode::Generate {
        // The encoder (the second instance with --separate-encoder) reuses the tokens of frames
        // another condition already encoded.
        let model = vidlm_pipeline::load_model(&cfg.model)?;
        let mut builder = Pipeline::builder()
            .config(cfg.clone())
            .source_opener(Box::new(run::opener(&items, &todo, a.shuffle_seed)))
            .cancel_token(cancel.clone());
        if a.no_encoding_reuse {
            builder = builder.model(model);
        } else if cfg.workers.separate_encoder {
            let (enc, counts) = ReuseEncodings::new(vidlm_pipeline::load_model(&cfg.model)?);
            builder = builder.model(model).encoder_model(Box::new(enc));
            reuse = Some(counts);
        } else {
            let (m, counts) = ReuseEncodings::new(model);
            builder = builder.model(Box::new(m));
            reuse = Some(counts);
        }
        let pipeline = builder.build()?;
        Some(
            run::run_generate(&pipeline, &items, &todo, &mut log, |p| {
                if let BatchProgress::ItemDone { id, ok } = p {
                    tick(id, *ok);
                }
            })
            .with_context(|| format!("writing {}", records_path.display()))?,
        )
    } else {
        let mut model = vidlm_pipeline::load_model(&cfg.model)?;
        let tokenizer = run::HfTokenizer::for_model(&cfg.model.id)?;
        Some(
            run::run_likelihood(
                model.as_mut(),
                &tokenizer,
                &items,
                &todo,
                &run::sample_request(&cfg.sampling),
                a.likelihood_of.parse()?,
                a.shuffle_seed,
                &mut log,
                tick,
                &|| cancel.is_cancelled(),
            )
            .with_context(|| format!("writing {}", records_path.display()))?,
        )
    };
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if let (true, Some(Some(m))) = (a.pipeline.metrics, summary.as_ref().map(|s| &s.metrics)) {
        eprintln!("{}", json!({ "metrics": m }));
    }
    if let Some(c) = &reuse {
        eprintln!(
            "vidlm: vision encoder ran on {} frame groups, {} reused across conditions",
            c.encoded(),
            c.reused()
        );
    }
    let records = run::read_records(&records_path)?;
    let description = json!({
        "suite": a.suite.display().to_string(),
        "layout": layout,
        "model": cfg.model.id,
        "mode": mode,
        "likelihood_of": (mode == Mode::Likelihood).then_some(&a.likelihood_of),
        "sample": cfg.sampling.strategy,
        "max_frames": cfg.sampling.max_frames,
        "max_new_tokens": cfg.generation.max_new_tokens,
        "conditions": conditions,
        "shuffle_seed": a.shuffle_seed,
        "items": items.len(),
        "encoder_groups": reuse.as_ref().map(|c| json!({"encoded": c.encoded(), "reused": c.reused()})),
    });
    let report = vidlm_eval::report::build(description, &items, &conditions, &records);
    write_reports(&a.out, &report)?;
    let failed: usize = report.conditions.iter().map(|c| c.overall.failed).sum();
    for c in &report.conditions {
        let o = &c.overall;
        eprintln!(
            "vidlm: {}: {}/{} right ({:.1}%, 95% CI {:.1}-{:.1}, chance {:.1}%), {} failed",
            c.condition,
            o.correct,
            o.n,
            100.0 * o.accuracy,
            100.0 * o.ci_low,
            100.0 * o.ci_high,
            100.0 * o.chance,
            o.failed
        );
    }
    eprintln!("vidlm: report -> {}", a.out.join("report.md").display());
    Ok(if cancel.is_cancelled() {
        ExitCode::from(130)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_reports(dir: &Path, report: &vidlm_eval::report::Report) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report).context("serializing the report")?;
    vidlm_pipeline::write_atomic(&dir.join("report.json"), &json)?;
    vidlm_pipeline::write_atomic(&dir.join("report.md"), report.markdown().as_bytes())?;
    vidlm_eval::chart::write_png(report, &dir.join("report.png"))?;
    Ok(())
}
