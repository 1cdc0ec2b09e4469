//! Cooperative cancellation shared by every stage of a run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A flag every stage polls between units of work. Cloning shares the flag.
///
/// Cancelling stops decoding at the next frame and a generation in flight at its next token;
/// later stages drop what is still queued for unfinished jobs and exit once their inputs close, so
/// results already finished are kept.
///
/// ```
/// let token = vidlm_pipeline::CancelToken::new();
/// let clone = token.clone();
/// clone.cancel();
/// assert!(token.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation; idempotent.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The same flag as a model's [`vidlm_models::StopFlag`], so cancelling also ends a
    /// generation in flight at its next token.
    pub fn stop_flag(&self) -> vidlm_models::StopFlag {
        vidlm_models::StopFlag::from_shared(self.0.clone())
    }
}

/// Makes Ctrl-C (SIGINT, and SIGTERM) cancel `token`. A second signal exits the process at once
/// with status 130, for users who do not want to wait for the current model call to return.
///
/// # Errors
/// A handler can be installed once per process; a second call returns an error.
pub fn install_ctrlc(token: &CancelToken) -> Result<(), crate::PipelineError> {
    let token = token.clone();
    let hits = Arc::new(AtomicUsize::new(0));
    ctrlc::set_handler(move || {
        if hits.fetch_add(1, Ordering::SeqCst) > 0 {
            std::process::exit(130);
        }
        tracing::warn!(
            "interrupted: stopping at the next token or frame, Ctrl-C again to quit now"
        );
        token.cancel();
    })
    .map_err(|e| crate::PipelineError::Config(format!("cannot install the Ctrl-C handler: {e}")))
}
