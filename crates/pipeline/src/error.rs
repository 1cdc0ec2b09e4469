//! Errors of the pipeline library.

use std::path::PathBuf;

/// Everything that can go wrong while running a pipeline job or loading its configuration.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input could not be opened or decoded (missing file, not a video, truncated, ...).
    #[error("{input}: {reason}")]
    Input {
        /// The input as the user gave it.
        input: String,
        /// Why it failed, one line.
        reason: String,
    },
    /// Opening, decoding or sampling the input failed (the message names the input).
    #[error(transparent)]
    Media(#[from] vidlm_media::MediaError),
    /// The model could not be loaded.
    #[error("model {model}: {error}")]
    Load {
        /// The model directory or hub id.
        model: String,
        /// Why, with its kind (its message is one line and part of this one's).
        error: vidlm_models::ModelError,
    },
    /// A model call failed.
    #[error("model: {0}")]
    Model(#[from] vidlm_models::ModelError),
    /// A tensor operation in the pooling stage failed.
    #[error("pooling: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A configuration value is invalid (a bad `--pool`, a malformed preset ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A preset or manifest file could not be parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The run was cancelled before this job finished.
    #[error("cancelled")]
    Cancelled,
    /// A job failed (the message starts with its input; [`JobError::kind`] tells what failed).
    #[error(transparent)]
    Job(JobError),
    /// A stage thread panicked; the message is the panic payload.
    #[error("internal error in the {stage} stage: {message}")]
    Panic {
        /// The stage that panicked.
        stage: &'static str,
        /// The panic message.
        message: String,
    },
}

impl PipelineError {
    /// Builds an [`PipelineError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl PipelineError {
    /// What kind of failure this is, whatever stage it came from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Input { .. } | Self::Media(_) => ErrorKind::Input,
            Self::Load { .. } | Self::Model(_) | Self::Tensor(_) => ErrorKind::Model,
            Self::Config(_) | Self::File { .. } => ErrorKind::Config,
            Self::Io { .. } => ErrorKind::Io,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Panic { .. } => ErrorKind::Internal,
            Self::Job(e) => e.kind(),
        }
    }
}

/// The kind of a [`PipelineError`], kept from the stage where it happened to the caller (and
/// written into batch records as `error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input: missing, not a video, truncated, nothing sampled.
    Input,
    /// The model: loading it, or a model or pooling call.
    Model,
    /// The configuration or a preset/manifest file.
    Config,
    /// Reading or writing a file.
    Io,
    /// The run was cancelled.
    Cancelled,
    /// A bug: a stage panicked.
    Internal,
}

/// A job's failure as the stages report it: the input it was for and the error, with its kind.
/// Cloning shares the error. Displayed as one line that starts with the input.
///
/// ```
/// use vidlm_pipeline::{ErrorKind, JobError, PipelineError};
/// let e = JobError::new("a.mp4", PipelineError::Config("bad".into()));
/// assert_eq!(e.to_string(), "a.mp4: invalid configuration: bad");
/// assert_eq!(e.kind(), ErrorKind::Config);
/// ```
#[derive(Debug, Clone)]
pub struct JobError {
    input: String,
    error: std::sync::Arc<PipelineError>,
}

impl JobError {
    /// `error`, from the job whose input is `input`.
    pub fn new(input: impl Into<String>, error: impl Into<PipelineError>) -> Self {
        Self {
            input: input.into(),
            error: std::sync::Arc::new(error.into()),
        }
    }

    /// The job's input.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The error, with its kind.
    pub fn error(&self) -> &PipelineError {
        &self.error
    }

    /// [`PipelineError::kind`] of the error.
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line (errors from elsewhere may carry more), naming the input once: media errors
        // already start with it.
        let line = vidlm_models::error_line(&self.error);
        if line.starts_with(&self.input) {
            f.write_str(&line)
        } else {
            write!(f, "{}: {line}", self.input)
        }
    }
}

/// Equal when they are the same kind of failure with the same message.
impl PartialEq for JobError {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.to_string() == other.to_string()
    }
}

impl std::error::Error for JobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// Result alias of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Turns a caught panic payload into a one-line message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
