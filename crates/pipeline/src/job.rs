//! The public job types: what a job asks for ([`JobSpec`], [`Task`]), what it returns
//! ([`JobOutput`]) and the [`Event`]s a run reports as jobs finish.

use vidlm_models::Generation;

use crate::metrics::JobTimings;
use crate::segment::Segment;
use crate::source::SourceInfo;
use crate::JobError;

/// What a job asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Timestamped descriptions and an overall summary.
    Summarize,
    /// An answer to a question, with the time ranges it used.
    Ask {
        /// The question.
        question: String,
    },
}

/// One unit of work: an input and what to do with it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The caller's name for the job (a manifest id, a file name).
    pub id: String,
    /// A path, URL or `-`.
    pub input: String,
    /// Summarize or ask.
    pub task: Task,
    /// Start of the time range, seconds.
    pub from: Option<f64>,
    /// End of the time range, seconds.
    pub to: Option<f64>,
}

impl JobSpec {
    /// A summarize job over the whole input.
    pub fn summarize(id: impl Into<String>, input: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            input: input.into(),
            task: Task::Summarize,
            from: None,
            to: None,
        }
    }

    /// An ask job over the whole input.
    pub fn ask(
        id: impl Into<String>,
        input: impl Into<String>,
        question: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            input: input.into(),
            task: Task::Ask {
                question: question.into(),
            },
            from: None,
            to: None,
        }
    }
}

/// Language-model usage of one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    /// Model calls (descriptions, summaries, answers).
    pub calls: usize,
    /// Prompt tokens over all calls.
    pub prompt_tokens: usize,
    /// Generated tokens over all calls.
    pub generated_tokens: usize,
}

impl Usage {
    pub(crate) fn add(&mut self, g: &Generation) {
        self.calls += 1;
        self.prompt_tokens += g.prompt_tokens;
        self.generated_tokens += g.token_ids.len();
    }
}

/// The result of a summarize job.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryOutput {
    /// The input's duration as the container gives it (None for live inputs).
    pub duration: Option<f64>,
    /// The chunks as described, one per chunk, times on the chunk grid (or at scene cuts).
    pub chunks: Vec<Segment>,
    /// The chunks after merging adjacent ones that say the same thing.
    pub segments: Vec<Segment>,
    /// The overall summary.
    pub summary: String,
    /// Frame groups given to the language model.
    pub frames: usize,
    /// Language-model usage.
    pub usage: Usage,
    /// Where the job's time went.
    pub timings: JobTimings,
}

/// A time range, seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
}

/// The result of an ask job.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerOutput {
    /// The input's duration (None for live inputs).
    pub duration: Option<f64>,
    /// The answer text, as the model decoded it.
    pub answer: String,
    /// The answer's generated token ids.
    pub token_ids: Vec<u32>,
    /// The time ranges whose frames the answer was given over.
    pub evidence: Vec<TimeRange>,
    /// Timestamps of the frame groups in the final prompt.
    pub frames: Vec<f64>,
    /// Descriptions of the chunks when the video was too long for one prompt (empty otherwise).
    pub chunks: Vec<Segment>,
    /// Language-model usage.
    pub usage: Usage,
    /// Where the job's time went.
    pub timings: JobTimings,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutput {
    /// From [`Task::Summarize`].
    Summary(SummaryOutput),
    /// From [`Task::Ask`].
    Answer(AnswerOutput),
}

/// What the graph reports while it runs. `job` indexes the job list given to the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The input was opened.
    Started {
        /// Job index.
        job: usize,
        /// What is known about the input.
        info: SourceInfo,
    },
    /// A chunk (for live inputs: a window) was described.
    Segment {
        /// Job index.
        job: usize,
        /// The chunk's range and description.
        segment: Segment,
    },
    /// A piece of an ask job's answer as the model writes it (whole UTF-8 characters; the pieces
    /// in order make up the answer). Only the final answer streams, not the chunk descriptions
    /// made on the way.
    AnswerText {
        /// Job index.
        job: usize,
        /// The new text.
        text: String,
    },
    /// The job finished.
    Finished {
        /// Job index.
        job: usize,
        /// Its result.
        output: JobOutput,
    },
    /// The job failed; the others go on.
    Failed {
        /// Job index.
        job: usize,
        /// What failed, with its kind; displayed as one line naming the input.
        error: JobError,
    },
}
