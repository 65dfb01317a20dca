//! The one error type of `corral-asset`, and its mapping to gRPC statuses
//! (with the `google.rpc` details the Remote Asset API asks for) at the
//! service edge.

use corral_cas::Digest;
use prost::Message;

use crate::status_details;

/// What can make an asset call fail as a whole (a gRPC error). Failures of
/// a download, which are outside the server's control, are not errors of
/// the call: the Fetch service answers them in the response's `status`
/// (see [`crate::fetcher::DownloadError`]).
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The request is malformed; `field` names the request field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, e.g. `uris[2]` or `qualifiers[0].value`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Qualifiers this server does not know (and that are not configured
    /// as ignorable). The API requires INVALID_ARGUMENT with a
    /// `google.rpc.BadRequest` naming each.
    #[error("qualifiers: {} not supported (known: resource_type, checksum.sri, directory, vcs.branch, vcs.commit; others can be listed in [asset] ignored_qualifiers)", quoted(.0))]
    UnsupportedQualifiers(Vec<String>),
    /// A Push names blobs the CAS does not hold.
    #[error("the CAS does not hold {} blob(s) the push refers to: {}", .0.len(), list(.0))]
    MissingBlobs(Vec<Digest>),
    /// The CAS failed (or refused) a call the service made.
    #[error(transparent)]
    Cas(#[from] corral_cas::Error),
    /// A local file (the index, the download spool) could not be read or
    /// written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A bug or an impossible state; the message says which.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the crate's [`AssetError`].
pub type Result<T, E = AssetError> = std::result::Result<T, E>;

impl AssetError {
    /// An INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AssetError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A local I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AssetError::Io {
            context: context.into(),
            source,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> tonic::Code {
        match self {
            AssetError::InvalidArgument { .. } | AssetError::UnsupportedQualifiers(_) => {
                tonic::Code::InvalidArgument
            }
            AssetError::MissingBlobs(_) => tonic::Code::FailedPrecondition,
            AssetError::Cas(e) => e.code(),
            AssetError::Io { .. } | AssetError::Internal(_) => tonic::Code::Internal,
        }
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(digests: &[Digest]) -> String {
    digests
        .iter()
        .map(|d| format!("{}/{}", d.hash_hex(), d.size()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<AssetError> for tonic::Status {
    fn from(err: AssetError) -> Self {
        let code = err.code();
        let message = err.to_string();
        let details = match err {
            // The CAS's own mapping (a remote CAS's status passes through).
            AssetError::Cas(e) => return e.into(),
            AssetError::UnsupportedQualifiers(names) => {
                status_details::unsupported_qualifiers(&message, &names)
            }
            AssetError::MissingBlobs(digests) => {
                let subjects: Vec<String> = digests
                    .iter()
                    .map(|d| format!("blobs/{}/{}", d.hash_hex(), d.size()))
                    .collect();
                corral_proto::error_details::missing_blobs_status(&message, &subjects)
            }
            _ => {
                if code == tonic::Code::Internal {
                    tracing::error!(error = %message, "asset service internal error");
                }
                return tonic::Status::new(code, message);
            }
        };
        tonic::Status::with_details(code, message, details.encode_to_vec().into())
    }
}
