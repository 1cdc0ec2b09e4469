//! End-to-end benchmark: the staged pipeline against the same work done stage after stage (no
//! overlap), in the same process, alternating runs.
//!
//! ```text
//! cargo bench -p vidlm-pipeline --bench pipeline
//! VIDLM_BENCH_MODEL=DIR VIDLM_BENCH_VIDEO=FILE VIDLM_BENCH_RUNS=5 cargo bench -p vidlm-pipeline --bench pipeline
//! ```
//!
//! The issue's full-size run: `python tools/make_smolvlm_bench_checkpoint.py` (in the reference
//! venv) writes `target/bench-models/smolvlm2-256m-random-pipeline`; pass its absolute path as
//! VIDLM_BENCH_MODEL.
//!
//! Defaults: the tiny SmolVLM2 fixture, the 55 s trailer, fps:1, a 10 s chunk grid, 3 runs per
//! mode, a second model instance for the encoder (so encoding can overlap generation). Prints the
//! median wall time and busy time per stage of each mode, the ratio of the two, and the pipelined
//! wall time over its slowest stage (goal: within 1.10).

use std::path::PathBuf;

use vidlm_pipeline::{Chunking, JobOutcome, JobSpec, Pipeline, PipelineConfig, Stage};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the vidlm binary does.
    vidlm_models::memory::keep_freed_memory_for_reuse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = std::env::var("VIDLM_BENCH_MODEL").unwrap_or_else(|_| {
        root.join("crates/models/tests/fixtures/smolvlm-tiny-sf2")
            .to_string_lossy()
            .into_owned()
    });
    let video = std::env::var("VIDLM_BENCH_VIDEO").unwrap_or_else(|_| {
        root.join("samples/bbb-trailer-720p-55s.mp4")
            .to_string_lossy()
            .into_owned()
    });
    let runs: usize = std::env::var("VIDLM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let sample = std::env::var("VIDLM_BENCH_SAMPLE").unwrap_or_else(|_| "fps:1".into());

    let pipeline = |overlap: bool| -> Result<Pipeline, Box<dyn std::error::Error>> {
        let mut cfg = PipelineConfig::default();
        cfg.model.id = model.clone();
        cfg.sampling.strategy = sample.clone();
        cfg.chunking.policy = Chunking::Fixed(10.0);
        cfg.chunking.merge_threshold = 2.0;
        cfg.generation.max_new_tokens = 16;
        cfg.workers.separate_encoder = true;
        cfg.workers.overlap = overlap;
        Ok(Pipeline::builder().config(cfg).build()?)
    };
    let modes = [
        ("pipelined", pipeline(true)?),
        ("stage after stage", pipeline(false)?),
    ];
    let job = [JobSpec::summarize("bench", video.as_str())];
    // Warm-up (page cache, allocator), not counted.
    for (_, p) in &modes {
        p.run(&job, |_| {});
    }
    let mut walls = vec![Vec::new(); 2];
    let mut stages = vec![vec![Vec::new(); Stage::ALL.len()]; 2];
    for _ in 0..runs {
        for (m, (name, p)) in modes.iter().enumerate() {
            let r = p.run(&job, |_| {});
            if let JobOutcome::Failed(e) = &r.outcomes[0] {
                return Err(format!("{name}: {e}").into());
            }
            walls[m].push(r.metrics.wall_seconds);
            for (i, s) in Stage::ALL.iter().enumerate() {
                stages[m][i].push(r.metrics.stage_seconds.get(*s));
            }
        }
    }
    println!("model {model}\nvideo {video}\nsampling {sample}, {runs} runs per mode, medians:");
    println!(
        "{:<18} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "mode", "wall s", "decode", "preprocess", "encode", "pool", "llm"
    );
    let mut slowest = 0.0f64;
    for (m, (name, _)) in modes.iter().enumerate() {
        let s: Vec<f64> = stages[m].iter().map(|v| median(v.clone())).collect();
        if m == 0 {
            slowest = s.iter().copied().fold(0.0, f64::max);
        }
        println!(
            "{:<18} {:>8.3} {:>8.3} {:>10.3} {:>8.3} {:>8.3} {:>8.3}",
            name,
            median(walls[m].clone()),
            s[0],
            s[1],
            s[2],
            s[3],
            s[4]
        );
    }
    let (piped, seq) = (median(walls[0].clone()), median(walls[1].clone()));
    println!("stage-after-stage / pipelined wall: {:.2}x", seq / piped);
    println!(
        "pipelined wall / slowest stage: {:.2} (goal <= 1.10)",
        piped / slowest
    );
    Ok(())
}
