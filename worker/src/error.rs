//! The one error type of `corral-worker`, and how each kind becomes a gRPC
//! status in the `ExecuteResponse` the worker reports.

use std::io;

/// Everything that can go wrong while the worker stages, runs or captures an
/// action.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The action, command or input tree is malformed; `field` says where.
    #[error("{field}: {reason}")]
    Invalid {
        /// Where in the action the problem is.
        field: String,
        /// What is wrong there.
        reason: String,
    },
    /// A blob the action needs is in neither CAS.
    #[error("missing blob {0}")]
    MissingBlob(String),
    /// An output exists but is not of the kind requested (REAPI: FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A local or remote store failed.
    #[error(transparent)]
    Cas(#[from] corral_cas::Error),
    /// A call to the remote CAS, the scheduler or the runner failed.
    #[error("{context}: {status}")]
    Rpc {
        /// What the worker was doing.
        context: String,
        /// The status the peer answered.
        status: tonic::Status,
    },
    /// A local file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the worker was doing, and on which path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The configuration or the command line is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The runner could not run the command (died, refused, unreachable).
    #[error("runner: {0}")]
    Runner(String),
    /// A service the worker needs (the scheduler) cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The scheduler cancelled the action (a client gave up, or its
    /// deadline passed) or the worker lost its stream.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A bug or an impossible state; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid-input error naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a gRPC status with the call that returned it.
    pub fn rpc(context: impl Into<String>, status: tonic::Status) -> Self {
        Error::Rpc {
            context: context.into(),
            status,
        }
    }

    /// The gRPC code REAPI prescribes for this failure.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Invalid { .. } => tonic::Code::InvalidArgument,
            Error::MissingBlob(_) | Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::Cas(e) => match e.code() {
                tonic::Code::NotFound => tonic::Code::FailedPrecondition,
                code => code,
            },
            Error::Rpc { status, .. } => match status.code() {
                tonic::Code::NotFound => tonic::Code::FailedPrecondition,
                code => code,
            },
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::Cancelled(_) => tonic::Code::Cancelled,
            Error::Io { .. } | Error::Config(_) | Error::Runner(_) | Error::Internal(_) => {
                tonic::Code::Internal
            }
        }
    }

    /// True when the error says a blob is missing, so that the caller may
    /// fetch it again (it may have been evicted locally) or report
    /// FAILED_PRECONDITION with a `MISSING` violation.
    pub fn is_missing_blob(&self) -> bool {
        matches!(self, Error::MissingBlob(_))
            || matches!(self, Error::Cas(e) if e.code() == tonic::Code::NotFound)
    }
}
