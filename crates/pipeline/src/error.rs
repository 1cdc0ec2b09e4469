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
