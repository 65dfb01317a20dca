//! The scheduler's one error type, and its mapping to gRPC codes at the
//! service edge.

use corral_proto::tonic;

/// Everything that can go wrong in the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TOML configuration was refused; the message names the field.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    /// Bad input from the network; `field` names what was wrong.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// An operation, worker or blob that is not known.
    #[error("{0}")]
    NotFound(String),
    /// A blob the request depends on is absent from the CAS (REAPI wants
    /// FAILED_PRECONDITION with the missing digests named).
    #[error("{message}")]
    MissingBlobs {
        message: String,
        /// `blobs/<hash>/<size>` of each missing blob.
        subjects: Vec<String>,
    },
    /// The CAS or action cache failed for a reason other than a missing
    /// blob; keeps the CAS's own gRPC mapping.
    #[error("storage: {0}")]
    Cas(#[from] corral_cas::Error),
    /// A protocol violation by a worker.
    #[error("worker protocol: {0}")]
    Protocol(String),
}

/// Results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Config(_) => tonic::Status::internal(message),
            Error::InvalidArgument { .. } | Error::Protocol(_) => {
                tonic::Status::invalid_argument(message)
            }
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::MissingBlobs { subjects, .. } => {
                crate::status::missing_blobs(message, &subjects)
            }
            Error::Cas(e) => e.into(),
        }
    }
}
