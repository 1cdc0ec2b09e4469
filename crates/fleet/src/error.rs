//! Errors of the fleet library.

/// Everything that can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The server could not be reached, or refused the connection (auth, TLS).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server URL, without any user or password in it.
        url: String,
        /// Why, one line.
        reason: String,
    },
    /// An option is invalid (a stream name NATS does not accept, an unreadable creds file).
    #[error("{0}")]
    Config(String),
    /// The stream, bucket or consumer is not there (nothing was submitted to this stream yet).
    #[error("{0}")]
    Missing(String),
    /// A JetStream request failed: creating the stream, publishing, fetching, storing a result.
    #[error("{what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// The server's or client's reason, one line.
        reason: String,
    },
}

impl FleetError {
    /// A [`FleetError::JetStream`] for `what`, with `err` as the reason.
    pub(crate) fn js(what: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::JetStream {
            what: what.into(),
            reason: err.to_string(),
        }
    }
}

/// The fleet's result type.
pub type Result<T, E = FleetError> = std::result::Result<T, E>;
