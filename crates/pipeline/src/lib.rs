//! vidlm-pipeline: the staged workers that turn videos into timestamped descriptions, summaries
//! and answers.
//!
//! ```text
//! decode+sample --> preprocess --> vision encode --> pool + chunk --> language model --> events
//!  (N videos)      (M threads)    (batched across    (one thread)     (one thread)
//!                                  videos)
//! ```
//!
//! Stages are joined by bounded queues (backpressure), several videos are in flight at once, one
//! failing video never stops the others, and a [`CancelToken`] stops everything cleanly keeping
//! finished results. The [`Pipeline`] builder is the API; the `vidlm` command line is a thin layer
//! over it. Presets (`pipelines/*.toml`) deserialize into [`PipelineConfig`].
//!
//! ```no_run
//! # fn main() -> Result<(), vidlm_pipeline::PipelineError> {
//! # let model: Box<dyn vidlm_models::VisionLanguageModel> = todo!();
//! use vidlm_pipeline::{Pipeline, PipelineConfig};
//! let config = PipelineConfig::load("pipelines/summarize.toml".as_ref())?;
//! let pipeline = Pipeline::builder().config(config).model(model).build()?;
//! let report = pipeline.summarize("samples/bbb-720p-5s.mp4")?;
//! for s in &report.segments {
//!     println!("[{:.1}-{:.1}] {}", s.start, s.end, s.text);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod batch;
mod cache;
mod cancel;
mod chunking;
mod config;
mod device;
mod error;
mod graph;
mod job;
mod metrics;
mod pipeline;
mod pooling;
mod report;
mod segment;
mod source;
mod stages;
mod timestamps;

pub use cache::{content_hash, VisualCache, DEFAULT_MAX_BYTES, FORMAT_VERSION};
pub use cancel::{install_ctrlc, CancelToken};
pub use chunking::{format_clock, merge_similar, Chunking};
pub use config::{
    ChunkingConfig, DtypeChoice, GenerationConfig, ModelConfig, OutputConfig, PipelineConfig,
    PoolingConfig, PromptConfig, SamplingConfig, WorkerConfig,
};
pub use device::{DeviceChoice, CUDA_BUILD};
pub use error::{ErrorKind, JobError, PipelineError, Result};
pub use job::{AnswerOutput, Event, JobOutput, JobSpec, SummaryOutput, Task, TimeRange, Usage};
pub use metrics::{
    peak_rss_bytes, CacheStatus, JobTimings, Metrics, MetricsReport, Stage, StageSeconds,
};
pub use pipeline::{load_model, JobOutcome, Pipeline, PipelineBuilder, RunReport};
pub use pooling::{PoolOp, Pooling};
pub use report::{write_atomic, AskReport, OutputFormat, SamplingInfo, SummaryReport};
pub use segment::{Segment, TimeSource};
pub use source::{
    is_live_input, FrameSource, MediaOpener, SampleRequest, SampledFrame, SourceInfo, SourceOpener,
};
pub use timestamps::{answer_times, model_segments, parse_times, TimeMention};
