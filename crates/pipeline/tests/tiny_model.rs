//! The pipeline library end to end with the real tiny SmolVLM2 checkpoint
//! (crates/models/tests/fixtures/smolvlm-tiny-sf2) and real media: pooling through the real
//! model, long-video questions with cited evidence, several videos in flight.

use std::path::{Path, PathBuf};
use std::process::Command;

use vidlm_pipeline::{
    Chunking, ErrorKind, JobOutcome, JobOutput, JobSpec, Pipeline, PipelineConfig, SummaryReport,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pipeline(edit: impl FnOnce(&mut PipelineConfig)) -> Pipeline {
    let mut cfg = PipelineConfig::default();
    cfg.model.id = root()
        .join("crates/models/tests/fixtures/smolvlm-tiny-sf2")
        .to_string_lossy()
        .into_owned();
    cfg.generation.max_new_tokens = 4;
    edit(&mut cfg);
    Pipeline::builder().config(cfg).build().unwrap()
}

fn sample() -> String {
    root()
        .join("samples/bbb-720p-5s.mp4")
        .to_string_lossy()
        .into_owned()
}

/// A synthetic clip made with the ffmpeg CLI, or None (printing why) without it.
fn synthetic(dir: &Path, seconds: u32) -> Option<String> {
    let out = dir.join(format!("testsrc-{seconds}.mp4"));
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x64:rate=10",
        ])
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => Some(out.to_string_lossy().into_owned()),
        Ok(s) => panic!("ffmpeg failed: {s}"),
        Err(e) => {
            eprintln!("skipping: the ffmpeg CLI is not available ({e})");
            None
        }
    }
}

fn prompt_tokens(r: &SummaryReport) -> usize {
    r.usage.prompt_tokens
}

#[test]
fn pooling_reaches_the_model_with_fewer_tokens_and_whole_time_ranges() {
    let plain = pipeline(|_| {}).summarize(&sample()).unwrap();
    assert_eq!(plain.sampling.frames, 6);
    let mean = pipeline(|c| c.pooling.method = "mean:2".parse().unwrap())
        .summarize(&sample())
        .unwrap();
    assert_eq!(mean.sampling.frames, 3);
    let spatial = pipeline(|c| c.pooling.method = "spatial:2x2".parse().unwrap())
        .summarize(&sample())
        .unwrap();
    assert_eq!(spatial.sampling.frames, 6);
    // The tiny model gives 4x4 tokens per frame: 2x2 pooling leaves 2x2, a quarter.
    let per_frame = (prompt_tokens(&plain) - prompt_tokens(&spatial)) / 6;
    assert_eq!(per_frame, 12, "{plain:?} {spatial:?}");
    assert!(prompt_tokens(&mean) < prompt_tokens(&plain));
    for r in [&plain, &mean, &spatial] {
        assert_eq!(r.segments.len(), 1);
        assert_eq!(r.segments[0].start, 0.0);
        assert_eq!(Some(r.segments[0].end), r.duration);
    }
}

#[test]
fn long_questions_cite_chunks_whose_frames_they_used() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clip) = synthetic(dir.path(), 16) else {
        return;
    };
    let p = pipeline(|c| {
        c.chunking.policy = Chunking::Fixed(4.0);
        c.sampling.strategy = "fps:1".into();
    });
    let a = p
        .ask(&clip, "What colour is the square?", Some(2.0), Some(14.0))
        .unwrap();
    let chunks: Vec<(f64, f64)> = a.chunks.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(chunks, vec![(2.0, 6.0), (6.0, 10.0), (10.0, 14.0)]);
    assert!(!a.evidence.is_empty());
    for e in &a.evidence {
        assert!(chunks.contains(&(e.start, e.end)), "{e:?} is not a chunk");
    }
    assert!(!a.frames.is_empty());
    for t in &a.frames {
        assert!(
            a.evidence.iter().any(|e| e.start <= *t && *t < e.end),
            "frame at {t} outside the evidence {:?}",
            a.evidence
        );
    }
    // Three descriptions, then the answer, each at most max_new_tokens (4).
    assert_eq!(a.usage.calls, 4);
    assert!(a.token_ids.len() <= 4);
    assert!(a.usage.generated_tokens <= 16 && a.usage.generated_tokens >= a.token_ids.len());
}

#[test]
fn several_videos_in_flight_share_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clip) = synthetic(dir.path(), 8) else {
        return;
    };
    let p = pipeline(|c| {
        c.workers.decode = 3;
        c.workers.encode_batch = 16;
        c.sampling.strategy = "fps:2".into();
    });
    let jobs = vec![
        JobSpec::summarize("bbb", sample()),
        JobSpec::summarize("synthetic", clip.clone()),
        JobSpec::ask("question", clip, "What is shown?"),
        JobSpec::summarize("missing", dir.path().join("missing.mp4").to_string_lossy()),
    ];
    let report = p.run(&jobs, |_| {});
    let o = &report.outcomes;
    assert!(
        matches!(&o[0], JobOutcome::Finished(JobOutput::Summary(_))),
        "{:?}",
        o[0]
    );
    assert!(
        matches!(&o[1], JobOutcome::Finished(JobOutput::Summary(_))),
        "{:?}",
        o[1]
    );
    assert!(
        matches!(&o[2], JobOutcome::Finished(JobOutput::Answer(_))),
        "{:?}",
        o[2]
    );
    assert!(
        matches!(&o[3], JobOutcome::Failed(e)
            if e.to_string().contains("missing.mp4") && e.kind() == ErrorKind::Input),
        "{:?}",
        o[3]
    );
    let m = &report.metrics;
    // 11 frames of the sample at fps:2, 16 of each synthetic clip.
    assert_eq!(m.frames_sampled, 11 + 16 + 16);
    assert_eq!(m.frames_encoded, m.frames_sampled);
    assert!(m.frames_decoded >= m.frames_sampled);
    assert!(m.tokens_in > 0 && m.tokens_out > 0);
    assert!(m.peak_rss_bytes.is_some_and(|b| b > 0));
}

#[test]
fn the_answer_streams_in_pieces_that_make_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let Some(clip) = synthetic(dir.path(), 12) else {
        return;
    };
    // Chunked, so chunk descriptions are generated first: they must not stream.
    let p = pipeline(|c| {
        c.chunking.policy = Chunking::Fixed(4.0);
        c.sampling.strategy = "fps:1".into();
        c.generation.max_new_tokens = 8;
    });
    let mut pieces: Vec<String> = Vec::new();
    let a = p
        .ask_streaming(&clip, "What is in the frame?", None, None, |t| {
            pieces.push(t.to_string())
        })
        .unwrap();
    assert_eq!(a.chunks.len(), 3);
    assert!(!a.answer.is_empty(), "the tiny model wrote nothing");
    assert_eq!(pieces.concat(), a.answer);
    assert!(pieces.iter().all(|p| !p.is_empty()));
    // The same answer as the non-streaming call (greedy).
    let b = p.ask(&clip, "What is in the frame?", None, None).unwrap();
    assert_eq!(b.answer, a.answer);
    assert_eq!(b.token_ids, a.token_ids);
}
