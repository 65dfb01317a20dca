//! The one error type of `corral-cas`, and its mapping to gRPC status codes
//! at the service edge.

use std::io;

/// Everything that can go wrong in a store, the action cache or a service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed; `field` names the request field.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// Uploaded bytes do not hash to the digest they were sent under.
    #[error("{field}: data does not match the digest: expected {expected}, got {actual}")]
    DigestMismatch {
        field: String,
        expected: String,
        actual: String,
    },
    /// A blob to be decoded as a message is larger than the limit for that
    /// message: refused from its digest's size, before anything is read.
    #[error("{field}: the {kind} {digest} is {size} bytes, more than the limit of {limit} bytes ({setting})")]
    MessageTooLarge {
        field: String,
        kind: &'static str,
        digest: String,
        size: u64,
        limit: u64,
        /// The setting that sets the limit, so an operator knows what to raise.
        setting: String,
    },
    /// A blob or action result is not there.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well formed but the state does not allow it (for
    /// example a referenced blob is missing).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An offset past the end of a blob (`field` names it).
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
    /// Something already exists and the request may not replace it.
    #[error("{0}")]
    AlreadyExists(String),
    /// The caller may not do this; the message names what and where.
    #[error("{0}")]
    PermissionDenied(String),
    /// A size limit of the store or service would be exceeded.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A tenant's quota would be exceeded: RESOURCE_EXHAUSTED with a
    /// `RetryInfo` saying when to try again.
    #[error("{message}")]
    QuotaExceeded {
        /// Which tenant, which quota, and the delay, in words.
        message: String,
        /// When a retry may pass.
        retry_after: std::time::Duration,
    },
    /// An operation the service does not offer.
    #[error("{0}")]
    Unimplemented(String),
    /// A local file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A remote CAS answered with an error.
    #[error("remote CAS: {0}")]
    Remote(tonic::Status),
    /// A bug or an impossible state; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An `INVALID_ARGUMENT` naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
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

    /// Prefixes the field of an argument error with its parent, so nested
    /// fields read `requests[3].digest.hash`.
    pub fn in_field(self, parent: &str) -> Self {
        match self {
            Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                field: format!("{parent}.{field}"),
                reason,
            },
            Error::DigestMismatch {
                field,
                expected,
                actual,
            } => Error::DigestMismatch {
                field: if field.is_empty() {
                    parent.to_string()
                } else {
                    format!("{parent}.{field}")
                },
                expected,
                actual,
            },
            Error::MessageTooLarge {
                field,
                kind,
                digest,
                size,
                limit,
                setting,
            } => Error::MessageTooLarge {
                field: format!("{parent}.{field}"),
                kind,
                digest,
                size,
                limit,
                setting,
            },
            other => other,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::InvalidArgument { .. }
            | Error::DigestMismatch { .. }
            | Error::MessageTooLarge { .. } => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::OutOfRange { .. } => tonic::Code::OutOfRange,
            Error::ResourceExhausted(_) | Error::QuotaExceeded { .. } => {
                tonic::Code::ResourceExhausted
            }
            Error::Unimplemented(_) => tonic::Code::Unimplemented,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                tonic::Code::ResourceExhausted
            }
            Error::Io { .. } | Error::Internal(_) => tonic::Code::Internal,
            Error::Remote(status) => status.code(),
        }
    }

    /// The error as a `google.rpc.Status`, for per-blob batch responses.
    pub fn to_rpc_status(&self) -> corral_proto::rpc::Status {
        if let Error::QuotaExceeded { retry_after, .. } = self {
            return corral_proto::error_details::retry_status(
                self.code(),
                &self.to_string(),
                *retry_after,
            );
        }
        corral_proto::rpc::Status {
            code: self.code() as i32,
            message: self.to_string(),
            details: Vec::new(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if matches!(err.code(), tonic::Code::Internal) {
            tracing::error!(error = %err, "internal error");
        }
        err.into_status()
    }
}

impl Error {
    /// The gRPC status for this error, without logging it (for callers
    /// that log refusals themselves); a quota error carries `RetryInfo`.
    pub fn into_status(self) -> tonic::Status {
        match self {
            Error::Remote(status) => status,
            quota @ Error::QuotaExceeded { .. } => {
                use corral_proto::prost::Message;
                let details = quota.to_rpc_status().encode_to_vec();
                tonic::Status::with_details(quota.code(), quota.to_string(), details.into())
            }
            other => tonic::Status::new(other.code(), other.to_string()),
        }
    }
}

impl From<corral_auth::QuotaExceeded> for Error {
    fn from(over: corral_auth::QuotaExceeded) -> Self {
        Error::QuotaExceeded {
            message: over.to_string(),
            retry_after: over.retry_after,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Remote(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::error_details::{RetryInfo, RETRY_INFO_URL};
    use corral_proto::prost::Message;

    #[test]
    fn a_quota_error_tells_the_client_when_to_retry() {
        let err = Error::QuotaExceeded {
            message: "tenant `a` is over its quota of 3 queued operations; retry in 1.000 s".into(),
            retry_after: std::time::Duration::from_secs(1),
        };
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("queued operations"));
        let details = corral_proto::rpc::Status::decode(status.details()).unwrap();
        assert_eq!(details.details[0].type_url, RETRY_INFO_URL);
        let info = RetryInfo::decode(details.details[0].value.as_slice()).unwrap();
        assert_eq!(info.retry_delay.map(|d| d.seconds), Some(1));
    }
}
