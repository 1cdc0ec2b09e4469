//! The library entry point: a [`Pipeline`] built once (model loaded, configuration checked) and
//! run over one or many jobs.

use std::sync::Mutex;
use std::time::Instant;

use vidlm_models::VisionLanguageModel;

use crate::graph::Graph;
use crate::job::{Event, JobOutput, JobSpec};
use crate::metrics::{Metrics, MetricsReport};
use crate::report::{AskReport, SamplingInfo, SummaryReport};
use crate::source::SourceOpener;
use crate::{CancelToken, JobError, PipelineConfig, PipelineError, Result};

/// Builds a [`Pipeline`].
///
/// ```no_run
/// use vidlm_pipeline::{Pipeline, PipelineConfig};
/// # fn main() -> Result<(), vidlm_pipeline::PipelineError> {
/// # let model: Box<dyn vidlm_models::VisionLanguageModel> = todo!();
/// let mut config = PipelineConfig::default();
/// config.sampling.strategy = "fps:2".into();
/// let pipeline = Pipeline::builder().config(config).model(model).build()?;
/// let report = pipeline.summarize("clip.mp4")?;
/// println!("{}", report.summary);
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct PipelineBuilder {
    config: PipelineConfig,
    model: Option<Box<dyn VisionLanguageModel>>,
    encoder: Option<Box<dyn VisionLanguageModel>>,
    opener: Option<Box<dyn SourceOpener>>,
    cancel: Option<CancelToken>,
    cache: Option<crate::VisualCache>,
}

impl PipelineBuilder {
    /// Keeps the visual tokens of local files in `cache`, so a job on a clip already encoded
    /// with the same sampling, model and pooling skips decoding and the vision encoder. The
    /// model must be the one `config.model` names: its files are part of the key.
    pub fn cache(mut self, cache: crate::VisualCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Sets the configuration (default: [`PipelineConfig::default`]).
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses `model` for the language model, and for the vision encoder too unless
    /// [`Self::encoder_model`] gives a second instance.
    pub fn model(mut self, model: Box<dyn VisionLanguageModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// A second instance of the same model for the vision encoder, so encoding overlaps
    /// generation instead of taking turns on one instance.
    pub fn encoder_model(mut self, model: Box<dyn VisionLanguageModel>) -> Self {
        self.encoder = Some(model);
        self
    }

    /// Where frames come from (default: [`crate::MediaOpener`], files, URLs and stdin through
    /// FFmpeg).
    pub fn source_opener(mut self, opener: Box<dyn SourceOpener>) -> Self {
        self.opener = Some(opener);
        self
    }

    /// A cancellation token, e.g. one wired to Ctrl-C with [`crate::install_ctrlc`].
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Checks the configuration and assembles the pipeline. Without [`Self::model`], loads the
    /// model `config.model.id` names (a directory or hub id), and a second instance for the
    /// encoder when `workers.separate_encoder` is set.
    ///
    /// # Errors
    /// [`PipelineError::Config`] for an invalid configuration, [`PipelineError::Load`] when the
    /// model cannot be loaded.
    pub fn build(mut self) -> Result<Pipeline> {
        self.config.validate()?;
        let model = match self.model.take() {
            Some(m) => m,
            None => load_model(&self.config.model)?,
        };
        if self.encoder.is_none() && self.config.workers.separate_encoder {
            self.encoder = Some(load_model(&self.config.model)?);
        }
        let max_frames = model.max_frames().max(1);
        let model_name = model.name().to_string();
        // The encoder decides how frames group (Qwen3-VL: pairs); both instances are one model.
        let frames_per_group = self
            .encoder
            .as_ref()
            .map_or(model.frames_per_group(), |e| e.frames_per_group())
            .max(1);
        let cache = self.cache.map(|cache| {
            let enc = self.encoder.as_ref().unwrap_or(&model);
            let identity = crate::cache::model_identity(
                &self.config.model,
                &model_name,
                max_frames,
                frames_per_group,
                &enc.device(),
            );
            (cache, identity)
        });
        Ok(Pipeline {
            cache,
            config: self.config,
            llm: Mutex::new(model),
            encoder: self.encoder.map(Mutex::new),
            opener: self
                .opener
                .unwrap_or_else(|| Box::new(crate::source::MediaOpener)),
            cancel: self.cancel.unwrap_or_default(),
            max_frames,
            frames_per_group,
            model_name,
        })
    }
}

/// Loads the model a [`crate::ModelConfig`] names, through the model crate's registry
/// ([`vidlm_models::load_model`]) with [`crate::ModelConfig::load_options`].
///
/// # Errors
/// [`PipelineError::Load`] naming the model, with the model crate's error.
pub fn load_model(cfg: &crate::ModelConfig) -> Result<Box<dyn VisionLanguageModel>> {
    vidlm_models::load_model(&cfg.id, &cfg.load_options()).map_err(|error| PipelineError::Load {
        model: cfg.id.clone(),
        error,
    })
}

/// A configured pipeline: model, stage widths, sampling, pooling, chunking and prompts.
pub struct Pipeline {
    config: PipelineConfig,
    llm: Mutex<Box<dyn VisionLanguageModel>>,
    encoder: Option<Mutex<Box<dyn VisionLanguageModel>>>,
    opener: Box<dyn SourceOpener>,
    cancel: CancelToken,
    max_frames: usize,
    frames_per_group: usize,
    model_name: String,
    cache: Option<(crate::VisualCache, String)>,
}

/// How one job of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// It finished.
    Finished(JobOutput),
    /// It failed (one line naming the input when displayed; the kind with [`JobError::kind`]).
    Failed(JobError),
    /// The run was cancelled before it finished.
    Cancelled,
}

/// The outcome of [`Pipeline::run`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One outcome per job, in the order of the jobs given.
    pub outcomes: Vec<JobOutcome>,
    /// Counters and stage times of the run.
    pub metrics: MetricsReport,
}

impl Pipeline {
    /// Starts building a pipeline.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The cancellation token all runs of this pipeline poll.
    pub fn cancel_token(&self) -> &CancelToken {
        &self.cancel
    }

    /// Runs `jobs` through the staged workers, calling `on_event` (on the calling thread) as
    /// chunks are described and jobs finish. Errors of one job never stop the others; after
    /// cancellation, jobs not yet finished are reported as [`JobOutcome::Cancelled`].
    pub fn run(&self, jobs: &[JobSpec], mut on_event: impl FnMut(&Event)) -> RunReport {
        let metrics = Metrics::default();
        let t0 = Instant::now();
        let mut outcomes = vec![JobOutcome::Cancelled; jobs.len()];
        let encoder = self.encoder.as_ref().unwrap_or(&self.llm);
        let graph = Graph {
            cache: self
                .cache
                .as_ref()
                .map(|(cache, model)| crate::graph::RunCache {
                    cache,
                    model,
                    device: crate::graph::lock(encoder).device(),
                    pending: Default::default(),
                }),
            opener: self.opener.as_ref(),
            encoder: self.encoder.as_ref().unwrap_or(&self.llm),
            llm: &self.llm,
            config: &self.config,
            max_frames: self.max_frames,
            frames_per_group: self.frames_per_group,
            // Asked once per run: the encoder's resize/normalize, run on the preprocess threads.
            pixel_step: crate::graph::lock(self.encoder.as_ref().unwrap_or(&self.llm)).pixel_step(),
            metrics: &metrics,
            cancel: &self.cancel,
        };
        graph.run(jobs, &mut |ev| {
            match &ev {
                Event::Finished { job, output } => {
                    outcomes[*job] = JobOutcome::Finished(output.clone())
                }
                Event::Failed { job, error } => outcomes[*job] = JobOutcome::Failed(error.clone()),
                _ => {}
            }
            on_event(&ev);
        });
        let metrics = metrics.report(t0.elapsed().as_secs_f64());
        tracing::info!(?metrics, "run finished");
        RunReport { outcomes, metrics }
    }

    /// Summarizes one video: timestamped descriptions and an overall summary.
    ///
    /// # Errors
    /// [`PipelineError::Input`] when the input cannot be read, [`PipelineError::Cancelled`] when
    /// cancelled, others when the model fails.
    pub fn summarize(&self, input: &str) -> Result<SummaryReport> {
        self.summarize_range(input, None, None)
    }

    /// [`Self::summarize`] over the time range `[from, to)`.
    ///
    /// # Errors
    /// As [`Self::summarize`].
    pub fn summarize_range(
        &self,
        input: &str,
        from: Option<f64>,
        to: Option<f64>,
    ) -> Result<SummaryReport> {
        let job = JobSpec {
            from,
            to,
            ..JobSpec::summarize(input, input)
        };
        match self.run_one(job, &mut |_| {})? {
            JobOutput::Summary(out) => Ok(self.summary_report(input, out)),
            JobOutput::Answer(_) => unreachable!("a summarize job gives a summary"),
        }
    }

    /// Answers a question about a video (or its range `[from, to)`). A video longer than one
    /// prompt is described chunk by chunk first; the chunks whose descriptions match the question
    /// best are asked over, and their time ranges are returned as evidence.
    ///
    /// # Errors
    /// As [`Self::summarize`].
    pub fn ask(
        &self,
        input: &str,
        question: &str,
        from: Option<f64>,
        to: Option<f64>,
    ) -> Result<AskReport> {
        self.ask_streaming(input, question, from, to, |_| {})
    }

    /// [`Self::ask`], calling `on_text` (on the calling thread) with each piece of the answer as
    /// the model writes it; the pieces in order equal the report's `answer`. Chunk descriptions
    /// made on the way to the answer do not stream.
    ///
    /// # Errors
    /// As [`Self::summarize`].
    ///
    /// # Example
    /// ```no_run
    /// # fn demo(pipeline: &vidlm_pipeline::Pipeline) -> vidlm_pipeline::Result<()> {
    /// use std::io::Write;
    /// let report = pipeline.ask_streaming("clip.mp4", "What happens?", None, None, |text| {
    ///     print!("{text}");
    ///     let _ = std::io::stdout().flush();
    /// })?;
    /// println!("\n(evidence: {} ranges)", report.evidence.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn ask_streaming(
        &self,
        input: &str,
        question: &str,
        from: Option<f64>,
        to: Option<f64>,
        mut on_text: impl FnMut(&str),
    ) -> Result<AskReport> {
        let job = JobSpec {
            from,
            to,
            ..JobSpec::ask(input, input, question)
        };
        let out = self.run_one(job, &mut |ev| {
            if let Event::AnswerText { text, .. } = ev {
                on_text(text);
            }
        })?;
        match out {
            JobOutput::Answer(out) => Ok(AskReport {
                answer_times: crate::timestamps::answer_ranges(&out.answer, out.duration, from, to),
                video: input.to_string(),
                model: self.model_name.clone(),
                question: question.to_string(),
                answer: out.answer,
                token_ids: out.token_ids,
                evidence: out.evidence,
                frames: out.frames,
                chunks: out.chunks,
                timings: out.timings,
                usage: out.usage,
            }),
            JobOutput::Summary(_) => unreachable!("an ask job gives an answer"),
        }
    }

    /// Builds the documented summary report of a finished summarize job.
    pub fn summary_report(&self, input: &str, out: crate::SummaryOutput) -> SummaryReport {
        SummaryReport {
            video: input.to_string(),
            model: self.model_name.clone(),
            duration: out.duration,
            sampling: SamplingInfo {
                strategy: self.config.sampling.strategy.clone(),
                pooling: self.config.pooling.method.to_string(),
                chunking: self.config.chunking.policy.to_string(),
                frames: out.frames,
            },
            segments: out.segments,
            chunks: out.chunks,
            summary: out.summary,
            timings: out.timings,
            usage: out.usage,
        }
    }

    fn run_one(&self, job: JobSpec, on_event: &mut dyn FnMut(&Event)) -> Result<JobOutput> {
        let report = self.run(std::slice::from_ref(&job), on_event);
        match report.outcomes.into_iter().next() {
            Some(JobOutcome::Finished(out)) => Ok(out),
            Some(JobOutcome::Failed(e)) => Err(PipelineError::Job(e)),
            _ => Err(PipelineError::Cancelled),
        }
    }
}
