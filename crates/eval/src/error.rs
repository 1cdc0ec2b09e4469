//! The crate's error type.

use std::path::PathBuf;

/// Errors of reading suites, running them and writing reports.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A manifest (or another input file) is malformed: the file, and `line N: reason`.
    #[error("{path}: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line.
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
    /// A bad option (an unknown condition or mode).
    #[error("{0}")]
    Config(String),
    /// The pipeline failed as a whole (not one item: those are recorded and counted).
    #[error(transparent)]
    Pipeline(#[from] vidlm_pipeline::PipelineError),
    /// The model failed outside the pipeline (likelihood scoring).
    #[error(transparent)]
    Model(#[from] vidlm_models::ModelError),
    /// A synthetic clip could not be made (ffmpeg missing or failing).
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
}

impl EvalError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, EvalError>;
