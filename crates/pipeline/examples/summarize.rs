//! Summarize a video from Rust with the `Pipeline` builder, printing each chunk's description as
//! soon as the language model writes it, then the overall summary and the run's metrics.
//!
//! ```text
//! cargo run -p vidlm-pipeline --example summarize -- MODEL VIDEO [CHUNKING]
//! cargo run -p vidlm-pipeline --example summarize -- \
//!     crates/models/tests/fixtures/smolvlm-tiny-sf2 samples/bbb-trailer-720p-55s.mp4 fixed:10
//! ```

use vidlm_pipeline::{
    format_clock, install_ctrlc, CancelToken, Event, JobOutcome, JobOutput, JobSpec, Pipeline,
    PipelineConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, video, rest @ ..] = args.as_slice() else {
        eprintln!("usage: summarize MODEL VIDEO [CHUNKING]");
        std::process::exit(2);
    };

    let mut config = PipelineConfig::default();
    config.model.id = model.clone();
    config.sampling.strategy = "fps:1".into();
    config.pooling.method = "adaptive:0.95".parse()?;
    if let Some(chunking) = rest.first() {
        config.chunking.policy = chunking.parse()?;
    }
    config.generation.max_new_tokens = 32;

    // Ctrl-C stops the run cleanly; what finished is still printed.
    let cancel = CancelToken::new();
    install_ctrlc(&cancel)?;
    let pipeline = Pipeline::builder()
        .config(config)
        .cancel_token(cancel)
        .build()?;

    let jobs = [JobSpec::summarize("example", video.as_str())];
    let report = pipeline.run(&jobs, |event| {
        if let Event::Segment { segment, .. } = event {
            println!(
                "[{} - {}] {}",
                format_clock(segment.start),
                format_clock(segment.end),
                segment.text
            );
        }
    });
    match &report.outcomes[0] {
        JobOutcome::Finished(JobOutput::Summary(s)) => println!("\nSummary: {}", s.summary),
        JobOutcome::Failed(e) => eprintln!("failed: {e}"),
        _ => eprintln!("interrupted"),
    }
    let m = &report.metrics;
    println!(
        "\n{} frames decoded, {} sampled, {} token groups after pooling; {} tokens in, {} out",
        m.frames_decoded, m.frames_sampled, m.groups_pooled, m.tokens_in, m.tokens_out
    );
    println!(
        "wall {:.2} s; busy: decode {:.2} s, preprocess {:.2} s, encode {:.2} s, llm {:.2} s",
        m.wall_seconds,
        m.stage_seconds.decode,
        m.stage_seconds.preprocess,
        m.stage_seconds.encode,
        m.stage_seconds.llm
    );
    if let Some(rss) = m.peak_rss_bytes {
        println!("peak memory {:.0} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}
