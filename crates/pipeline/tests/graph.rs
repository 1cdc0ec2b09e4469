//! Plumbing tests of the worker graph: ordering, batching across videos, backpressure, error
//! isolation and cancellation. They use a small test-only model and frame source defined here
//! (the end-to-end tests with the real tiny SmolVLM2 checkpoint live in the repository's tests/).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::{Device, Tensor};
use vidlm_models::{
    Clip, FinishReason, FramePixels, Generation, GenerationParams, ModelError, PixelData,
    PixelStep, VideoFrame, VisionLanguageModel, VisualTokens,
};
use vidlm_pipeline::{
    CancelToken, Chunking, ErrorKind, Event, FrameSource, JobOutcome, JobOutput, JobSpec, Pipeline,
    PipelineConfig, PipelineError, SampleRequest, SampledFrame, SourceInfo, SourceOpener,
};

/// Shared observations of the test model and source.
#[derive(Default)]
struct Probe {
    /// Sizes and distinct frame widths (= videos) of every encode call.
    batches: Mutex<Vec<(usize, usize)>>,
    frames_yielded: AtomicUsize,
    frames_encoded: AtomicUsize,
    /// `frames_yielded - frames_encoded` seen at each generate call.
    in_flight: Mutex<Vec<usize>>,
    prompts: Mutex<Vec<(usize, String)>>,
    /// (duration, fps) of the source video each generate call was told.
    clip_videos: Mutex<Vec<(Option<f64>, Option<f64>)>>,
    /// Words written by long answers.
    words_written: AtomicUsize,
    /// Names of the threads that ran the model's pixel step.
    pixel_threads: Mutex<HashSet<String>>,
    /// Frames that reached the encoder as pixels from the pixel step.
    pixels_encoded: AtomicUsize,
}

/// The test model's pixel step: a frame's mean colour, computed wherever the pipeline runs it.
struct MeanColour {
    probe: Arc<Probe>,
    poison_width: Option<u32>,
}

fn mean_colour(f: &VideoFrame) -> [f32; 3] {
    let n = (f.width * f.height) as f32;
    let mut mean = [0f32; 3];
    for p in f.rgb.chunks_exact(3) {
        for c in 0..3 {
            mean[c] += p[c] as f32 / n;
        }
    }
    mean
}

fn mean_tokens(mean: [f32; 3], pts: f64) -> Result<VisualTokens, ModelError> {
    let data: Vec<f32> = (0..4).flat_map(|_| mean).collect();
    Ok(VisualTokens {
        embeddings: Tensor::from_vec(data, (4, 3), &Device::Cpu)?,
        grid_h: 2,
        grid_w: 2,
        start: pts,
        end: pts,
    })
}

impl PixelStep for MeanColour {
    fn pixels(&self, frame: &VideoFrame, _clip: usize) -> Result<FramePixels, ModelError> {
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.probe.pixel_threads.lock().unwrap().insert(name);
        if Some(frame.width) == self.poison_width {
            return Err(ModelError::Input("poisoned frame".into()));
        }
        Ok(FramePixels {
            pts: frame.pts,
            data: PixelData::Planes {
                values: mean_colour(frame).to_vec(),
                shape: [3, 1, 1],
            },
        })
    }
}

/// Encodes a frame as a 2x2 grid of its mean colour (hidden 3); generation describes the clip's
/// groups so the tests can check what reached the language model.
struct TestModel {
    probe: Arc<Probe>,
    max_frames: usize,
    encode_delay: Duration,
    generate_delay: Duration,
    /// Frames of this width make encode_frames fail.
    poison_width: Option<u32>,
    /// When > 0, answers are this many words, one per 2 ms, honouring `params.stop`.
    answer_words: usize,
    /// Whether it hands out a pixel step (run by the preprocess threads).
    pixel_step: bool,
}

impl VisionLanguageModel for TestModel {
    fn name(&self) -> &str {
        "test-model"
    }

    fn accepts_text_only(&self) -> bool {
        true
    }

    fn pixel_step(&self) -> Option<Arc<dyn PixelStep>> {
        self.pixel_step.then(|| {
            Arc::new(MeanColour {
                probe: self.probe.clone(),
                poison_width: self.poison_width,
            }) as Arc<dyn PixelStep>
        })
    }

    fn encode_frame_pixels(
        &mut self,
        frames: &[FramePixels],
        _clip: usize,
    ) -> Result<Vec<VisualTokens>, ModelError> {
        std::thread::sleep(self.encode_delay);
        self.probe
            .pixels_encoded
            .fetch_add(frames.len(), Ordering::SeqCst);
        self.probe
            .frames_encoded
            .fetch_add(frames.len(), Ordering::SeqCst);
        frames
            .iter()
            .map(|f| match &f.data {
                PixelData::Planes { values, .. } => {
                    mean_tokens([values[0], values[1], values[2]], f.pts)
                }
                PixelData::Rgb { .. } => Err(ModelError::Input("not this model's pixels".into())),
            })
            .collect()
    }

    fn max_frames(&self) -> usize {
        self.max_frames
    }

    fn encode_frames(&mut self, frames: &[VideoFrame]) -> Result<Vec<VisualTokens>, ModelError> {
        std::thread::sleep(self.encode_delay);
        let widths: HashSet<u32> = frames.iter().map(|f| f.width).collect();
        self.probe
            .batches
            .lock()
            .unwrap()
            .push((frames.len(), widths.len()));
        if frames.iter().any(|f| Some(f.width) == self.poison_width) {
            return Err(ModelError::Input("poisoned frame".into()));
        }
        self.probe
            .frames_encoded
            .fetch_add(frames.len(), Ordering::SeqCst);
        frames
            .iter()
            .map(|f| mean_tokens(mean_colour(f), f.pts))
            .collect()
    }

    fn generate(
        &mut self,
        clip: &Clip,
        prompt: &str,
        params: &GenerationParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation, ModelError> {
        self.probe
            .clip_videos
            .lock()
            .unwrap()
            .push((clip.duration, clip.fps));
        let clip = &clip.groups;
        std::thread::sleep(self.generate_delay);
        if self.answer_words > 0 {
            let mut text = String::new();
            let mut finish = FinishReason::Length;
            for i in 0..self.answer_words {
                if params.stop.as_ref().is_some_and(|s| s.is_set()) {
                    finish = FinishReason::Cancelled;
                    break;
                }
                let w = format!("w{i} ");
                on_text(&w);
                text.push_str(&w);
                self.probe.words_written.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            return Ok(Generation {
                token_ids: vec![7; self.probe.words_written.load(Ordering::SeqCst)],
                text,
                prompt_tokens: 10,
                finish,
                prefill_seconds: 0.0,
                decode_seconds: 0.0,
            });
        }
        let p = &self.probe;
        let gap = p.frames_yielded.load(Ordering::SeqCst) - p.frames_encoded.load(Ordering::SeqCst);
        p.in_flight.lock().unwrap().push(gap);
        p.prompts
            .lock()
            .unwrap()
            .push((clip.len(), prompt.to_string()));
        let text = match (clip.first(), clip.last()) {
            (Some(a), Some(b)) => format!("{} groups {:.1} to {:.1}", clip.len(), a.start, b.end),
            _ => format!("text only: {} lines", prompt.lines().count()),
        };
        on_text(&text);
        Ok(Generation {
            text,
            token_ids: vec![1, 2, 3],
            prompt_tokens: 10 + 4 * clip.len(),
            finish: FinishReason::Stop,
            prefill_seconds: 0.0,
            decode_seconds: 0.0,
        })
    }
}

/// Inputs are `NAME:seconds=S,fps=R,width=W[,fail_at=K][,live]`; `missing` does not exist.
struct TestOpener {
    probe: Arc<Probe>,
    /// Delay per frame (a slow decoder).
    delay: Duration,
}

struct TestSource {
    info: SourceInfo,
    times: Vec<f64>,
    next: usize,
    width: u32,
    fail_at: Option<usize>,
    probe: Arc<Probe>,
    delay: Duration,
}

impl SourceOpener for TestOpener {
    fn open(
        &self,
        input: &str,
        request: &SampleRequest,
    ) -> Result<Box<dyn FrameSource>, PipelineError> {
        let bad = |reason: &str| PipelineError::Input {
            input: input.into(),
            reason: reason.into(),
        };
        let (_, params) = input.split_once(':').ok_or_else(|| bad("no such file"))?;
        let mut seconds = 0.0;
        let mut fps = 1.0;
        let mut width = 8;
        let mut fail_at = None;
        let mut live = false;
        for kv in params.split(',') {
            match kv.split_once('=') {
                Some(("seconds", v)) => seconds = v.parse().unwrap(),
                Some(("fps", v)) => fps = v.parse().unwrap(),
                Some(("width", v)) => width = v.parse().unwrap(),
                Some(("fail_at", v)) => fail_at = Some(v.parse().unwrap()),
                None if kv == "live" => live = true,
                _ => panic!("bad test input {input}"),
            }
        }
        let to = request.to.unwrap_or(seconds).min(seconds);
        let mut times = Vec::new();
        let mut t = request.from;
        while t < to - 1e-9 {
            times.push(t);
            t += 1.0 / fps;
        }
        Ok(Box::new(TestSource {
            info: SourceInfo {
                duration: (!live).then_some(seconds),
                fps: Some(fps),
                live,
            },
            times,
            next: 0,
            width,
            fail_at,
            probe: self.probe.clone(),
            delay: self.delay,
        }))
    }
}

impl FrameSource for TestSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Option<Result<SampledFrame, PipelineError>> {
        std::thread::sleep(self.delay);
        if Some(self.next) == self.fail_at {
            return Some(Err(PipelineError::Input {
                input: "test".into(),
                reason: format!("corrupt packet at frame {}", self.next),
            }));
        }
        let t = *self.times.get(self.next)?;
        self.next += 1;
        self.probe.frames_yielded.fetch_add(1, Ordering::SeqCst);
        // The colour changes every 4 seconds, so chunks see different frames.
        let v = ((t / 4.0).floor() as u32 * 40 % 256) as u8;
        Some(Ok(SampledFrame {
            rgb: vec![v; (self.width * 4 * 3) as usize],
            width: self.width,
            height: 4,
            pts: t,
            index: Some(self.next as u64 - 1),
            keyframe: false,
        }))
    }
}

struct Setup {
    config: PipelineConfig,
    max_frames: usize,
    encode_delay: Duration,
    generate_delay: Duration,
    decode_delay: Duration,
    poison_width: Option<u32>,
    answer_words: usize,
    pixel_step: bool,
    cancel: CancelToken,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            config: PipelineConfig::default(),
            max_frames: 16,
            encode_delay: Duration::ZERO,
            generate_delay: Duration::ZERO,
            decode_delay: Duration::ZERO,
            poison_width: None,
            answer_words: 0,
            pixel_step: false,
            cancel: CancelToken::new(),
        }
    }
}

impl Setup {
    fn build(self) -> (Pipeline, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let model = TestModel {
            probe: probe.clone(),
            max_frames: self.max_frames,
            encode_delay: self.encode_delay,
            generate_delay: self.generate_delay,
            poison_width: self.poison_width,
            answer_words: self.answer_words,
            pixel_step: self.pixel_step,
        };
        let p = Pipeline::builder()
            .config(self.config)
            .model(Box::new(model))
            .source_opener(Box::new(TestOpener {
                probe: probe.clone(),
                delay: self.decode_delay,
            }))
            .cancel_token(self.cancel)
            .build()
            .unwrap();
        (p, probe)
    }
}

fn summary(outcome: &JobOutcome) -> &vidlm_pipeline::SummaryOutput {
    match outcome {
        JobOutcome::Finished(JobOutput::Summary(s)) => s,
        other => panic!("expected a summary, got {other:?}"),
    }
}

#[test]
fn short_clip_is_one_prompt_over_all_frames() {
    let (p, probe) = Setup::default().build();
    let report = p.summarize("clip:seconds=5,fps=2").unwrap();
    assert_eq!(report.segments.len(), 1);
    assert_eq!(
        (report.segments[0].start, report.segments[0].end),
        (0.0, 5.0)
    );
    assert_eq!(report.summary, "10 groups 0.0 to 4.5");
    let prompts = probe.prompts.lock().unwrap();
    assert_eq!(prompts.len(), 1, "one prompt, no reduce step");
    assert_eq!(prompts[0].0, 10);
    assert_eq!(report.sampling.frames, 10);
    assert_eq!(report.usage.calls, 1);
    // The model is told the source video's duration and frame rate, not just the frame times
    // (the last frame is at 4.5 s of a 5 s video).
    assert_eq!(
        *probe.clip_videos.lock().unwrap(),
        vec![(Some(5.0), Some(2.0))]
    );
}

#[test]
fn chunks_of_a_long_video_carry_the_whole_video_duration() {
    let mut setup = Setup::default();
    setup.config.chunking.policy = Chunking::Fixed(4.0);
    let (p, probe) = setup.build();
    p.summarize("long:seconds=9.5,fps=2").unwrap();
    let videos = probe.clip_videos.lock().unwrap();
    // Three chunk descriptions over frames, each told the 9.5 s video; the reduce step too.
    assert!(videos.len() >= 3, "{videos:?}");
    assert!(
        videos.iter().all(|v| *v == (Some(9.5), Some(2.0))),
        "{videos:?}"
    );
}

#[test]
fn long_video_is_chunked_on_the_grid_and_reduced() {
    let mut setup = Setup::default();
    setup.config.chunking.policy = Chunking::Fixed(4.0);
    setup.config.chunking.merge_threshold = 2.0; // keep every chunk
    let (p, probe) = setup.build();
    let report = p.summarize("long:seconds=18.5,fps=2").unwrap();
    let ranges: Vec<(f64, f64)> = report.chunks.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(
        ranges,
        vec![
            (0.0, 4.0),
            (4.0, 8.0),
            (8.0, 12.0),
            (12.0, 16.0),
            (16.0, 18.5)
        ]
    );
    assert_eq!(report.chunks[0].text, "8 groups 0.0 to 3.5");
    assert_eq!(report.chunks[4].text, "5 groups 16.0 to 18.0");
    // Map: 5 descriptions; reduce: one text-only call over the 5 timestamped lines.
    let prompts = probe.prompts.lock().unwrap();
    assert_eq!(prompts.len(), 6);
    assert!(prompts[1].1.contains("0:04 to 0:08"), "{}", prompts[1].1);
    assert_eq!(prompts[5].0, 0);
    assert!(
        prompts[5].1.contains("[0:16 - 0:18] 5 groups"),
        "{}",
        prompts[5].1
    );
    assert!(report.summary.starts_with("text only"));
}

#[test]
fn auto_chunking_fits_the_model_budget() {
    let (p, _) = Setup {
        max_frames: 6,
        ..Setup::default()
    }
    .build();
    let report = p.summarize("long:seconds=20,fps=1").unwrap();
    // 20 frames over a budget of 6 -> a 6 s grid.
    let ends: Vec<f64> = report.chunks.iter().map(|s| s.end).collect();
    assert_eq!(ends, vec![6.0, 12.0, 18.0, 20.0]);
    for w in report.segments.windows(2) {
        assert!(w[0].end <= w[1].start + 1e-9);
    }
}

#[test]
fn encoder_batches_frames_across_videos() {
    let mut setup = Setup {
        encode_delay: Duration::from_millis(20),
        decode_delay: Duration::from_millis(2),
        ..Setup::default()
    };
    setup.config.workers.decode = 3;
    setup.config.workers.encode_batch = 6;
    let (p, probe) = setup.build();
    let jobs: Vec<JobSpec> = (0..3)
        .map(|i| {
            JobSpec::summarize(
                format!("v{i}"),
                format!("v:seconds=30,fps=2,width={}", 8 + i),
            )
        })
        .collect();
    let report = p.run(&jobs, |_| {});
    for o in &report.outcomes {
        summary(o);
    }
    let batches = probe.batches.lock().unwrap();
    assert!(batches.iter().all(|(n, _)| *n <= 6));
    assert!(
        batches.iter().any(|(_, videos)| *videos > 1),
        "no batch mixed videos: {batches:?}"
    );
    assert_eq!(report.metrics.frames_encoded, 180);
    assert_eq!(report.metrics.frames_sampled, 180);
}

#[test]
fn a_slow_language_model_holds_back_decoding() {
    let mut setup = Setup {
        generate_delay: Duration::from_millis(30),
        ..Setup::default()
    };
    setup.config.workers.queue = 2;
    setup.config.workers.encode_batch = 1;
    setup.config.workers.decode = 1;
    setup.config.chunking.policy = Chunking::Fixed(1.0);
    let (p, probe) = setup.build();
    let report = p.summarize("long:seconds=60,fps=4").unwrap();
    assert_eq!(report.chunks.len(), 60);
    let gaps = probe.in_flight.lock().unwrap();
    let worst = *gaps.iter().max().unwrap();
    // Frames decoded but not encoded are bounded by the queues (2 + 2 + one in each stage's
    // hands), not by the video's 240 frames.
    assert!(worst <= 8, "{worst} frames in flight: {gaps:?}");
}

#[test]
fn one_bad_video_never_stops_the_others() {
    let mut setup = Setup {
        poison_width: Some(13),
        encode_delay: Duration::from_millis(2),
        ..Setup::default()
    };
    setup.config.workers.decode = 2;
    let (p, _) = setup.build();
    let jobs = vec![
        JobSpec::summarize("ok1", "a:seconds=4,fps=2"),
        JobSpec::summarize("missing", "missing"),
        JobSpec::summarize("corrupt", "b:seconds=4,fps=2,fail_at=3"),
        JobSpec::summarize("poison", "c:seconds=4,fps=2,width=13"),
        JobSpec::ask("ok2", "d:seconds=4,fps=2", "what?"),
    ];
    let report = p.run(&jobs, |_| {});
    let o = &report.outcomes;
    summary(&o[0]);
    assert!(
        matches!(&o[1], JobOutcome::Failed(e)
            if e.to_string() == "missing: no such file" && e.kind() == ErrorKind::Input),
        "{:?}",
        o[1]
    );
    assert!(
        matches!(&o[2], JobOutcome::Failed(e)
            if e.to_string().contains("corrupt packet at frame 3") && e.kind() == ErrorKind::Input),
        "{:?}",
        o[2]
    );
    assert!(
        matches!(&o[3], JobOutcome::Failed(e)
            if e.to_string().contains("poisoned frame") && e.kind() == ErrorKind::Model),
        "{:?}",
        o[3]
    );
    match &o[4] {
        JobOutcome::Finished(JobOutput::Answer(a)) => {
            assert_eq!(a.answer, "8 groups 0.0 to 3.5");
            assert_eq!(a.evidence.len(), 1);
            assert_eq!((a.evidence[0].start, a.evidence[0].end), (0.0, 4.0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn long_ask_picks_chunks_and_cites_them() {
    let mut setup = Setup::default();
    setup.config.chunking.policy = Chunking::Fixed(5.0);
    let (p, probe) = setup.build();
    // Chunk descriptions are "N groups A to B"; a question naming "15.0" matches the 4th chunk.
    let answer = p
        .ask(
            "v:seconds=20,fps=1",
            "what happens up to 19.0?",
            Some(2.0),
            None,
        )
        .unwrap();
    assert_eq!(answer.chunks.len(), 4);
    assert_eq!(answer.chunks[0].start, 2.0);
    let cited: Vec<(f64, f64)> = answer.evidence.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(cited, vec![(17.0, 20.0)]);
    assert_eq!(answer.frames, vec![17.0, 18.0, 19.0]);
    let prompts = probe.prompts.lock().unwrap();
    assert_eq!(prompts.last().unwrap().1, "what happens up to 19.0?");
}

#[test]
fn live_inputs_get_rolling_windows_as_they_close() {
    let mut setup = Setup::default();
    setup.config.chunking.window = 3.0;
    let (p, _) = setup.build();
    let jobs = vec![JobSpec::summarize("cam", "cam:seconds=10,fps=2,live")];
    let mut windows = Vec::new();
    let report = p.run(&jobs, |ev| {
        if let Event::Segment { segment, .. } = ev {
            windows.push((segment.start, segment.end));
        }
    });
    assert_eq!(
        windows,
        vec![(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 9.5)]
    );
    assert_eq!(summary(&report.outcomes[0]).duration, None);
}

#[test]
fn cancelling_keeps_finished_jobs_and_stops_the_rest() {
    let cancel = CancelToken::new();
    let mut setup = Setup {
        cancel: cancel.clone(),
        decode_delay: Duration::from_millis(5),
        ..Setup::default()
    };
    setup.config.workers.decode = 1;
    let (p, _) = setup.build();
    let mut jobs = vec![JobSpec::summarize("quick", "q:seconds=1,fps=2")];
    jobs.extend((0..4).map(|i| JobSpec::summarize(format!("slow{i}"), "s:seconds=600,fps=10")));
    let report = p.run(&jobs, |ev| {
        if matches!(ev, Event::Finished { .. }) {
            cancel.cancel();
        }
    });
    summary(&report.outcomes[0]);
    assert!(report.outcomes[1..]
        .iter()
        .all(|o| *o == JobOutcome::Cancelled));
    // The slow videos have 6000 frames each; decoding stopped soon after the cancel.
    assert!(
        report.metrics.frames_sampled < 6000,
        "{}",
        report.metrics.frames_sampled
    );
}

#[test]
fn cancelling_stops_an_answer_being_written() {
    let cancel = CancelToken::new();
    let (p, probe) = Setup {
        cancel: cancel.clone(),
        answer_words: 5000, // 10 s if nothing stops it
        ..Setup::default()
    }
    .build();
    let mut pieces = 0;
    let r = p.ask_streaming("v:seconds=2,fps=1", "what?", None, None, |_| {
        pieces += 1;
        cancel.cancel();
    });
    assert!(matches!(r, Err(PipelineError::Cancelled)), "{r:?}");
    let written = probe.words_written.load(Ordering::SeqCst);
    assert!(
        pieces >= 1 && written < 100,
        "{written} words written after the cancel"
    );
}

#[test]
fn stage_after_stage_mode_gives_the_same_results() {
    let run = |overlap: bool| {
        let mut setup = Setup::default();
        setup.config.workers.overlap = overlap;
        setup.config.chunking.policy = Chunking::Fixed(3.0);
        let (p, _) = setup.build();
        let jobs = vec![
            JobSpec::summarize("a", "a:seconds=10,fps=2"),
            JobSpec::ask("b", "b:seconds=7,fps=1", "what happens at 6.0?"),
            JobSpec::summarize("c", "missing"),
        ];
        p.run(&jobs, |_| {}).outcomes
    };
    let strip = |o: Vec<JobOutcome>| -> Vec<String> {
        o.into_iter()
            .map(|o| match o {
                JobOutcome::Finished(JobOutput::Summary(s)) => {
                    format!("{:?} {}", s.chunks, s.summary)
                }
                JobOutcome::Finished(JobOutput::Answer(a)) => {
                    format!("{:?} {}", a.evidence, a.answer)
                }
                other => format!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(strip(run(true)), strip(run(false)));
}

#[test]
fn the_pixel_step_runs_on_the_preprocess_threads_with_the_same_result() {
    let jobs = vec![
        JobSpec::summarize("a", "a:seconds=6,fps=2"),
        JobSpec::summarize("poison", "p:seconds=4,fps=2,width=13"),
        JobSpec::ask("b", "b:seconds=5,fps=2", "what?"),
    ];
    let run = |pixel_step: bool| {
        let mut config = PipelineConfig::default();
        config.chunking.policy = Chunking::Fixed(2.0);
        config.workers.preprocess = 2;
        let (p, probe) = Setup {
            config,
            pixel_step,
            poison_width: Some(13),
            ..Default::default()
        }
        .build();
        let mut outcomes = p.run(&jobs, |_| {}).outcomes;
        // Times differ run to run; everything else must not.
        for o in &mut outcomes {
            match o {
                JobOutcome::Finished(JobOutput::Summary(s)) => s.timings = Default::default(),
                JobOutcome::Finished(JobOutput::Answer(a)) => a.timings = Default::default(),
                _ => {}
            }
        }
        (outcomes, probe)
    };
    let (plain, plain_probe) = run(false);
    let (stepped, probe) = run(true);
    // Same outputs; the poisoned job fails alone, in the preprocess stage now.
    assert_eq!(plain[0], stepped[0]);
    assert_eq!(plain[2], stepped[2]);
    for o in [&plain[1], &stepped[1]] {
        assert!(
            matches!(o, JobOutcome::Failed(e)
                if e.to_string().contains("poisoned frame") && e.kind() == ErrorKind::Model),
            "{o:?}"
        );
    }
    assert!(
        matches!(stepped[0], JobOutcome::Finished(_)),
        "{:?}",
        stepped[0]
    );
    assert_eq!(plain_probe.pixels_encoded.load(Ordering::SeqCst), 0);
    assert!(plain_probe.pixel_threads.lock().unwrap().is_empty());
    // Every frame of the good jobs reached the encoder as pixels, made off the encode thread.
    assert_eq!(probe.pixels_encoded.load(Ordering::SeqCst), 12 + 10);
    let threads = probe.pixel_threads.lock().unwrap();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| t.starts_with("vidlm-preprocess-")),
        "{threads:?}"
    );
}
