//! Turning worker errors into the `google.rpc.Status` of an
//! `ExecuteResponse`. A missing input blob carries the REAPI-prescribed
//! `PreconditionFailure` detail (violation type `MISSING`, subject
//! `blobs/HASH/SIZE`), which is how Bazel knows to upload it again.

use corral_proto::error_details::missing_blobs_status;
use corral_proto::rpc;

use crate::error::Error;

/// The status an error is reported with.
pub fn to_status(error: &Error) -> rpc::Status {
    match error {
        Error::MissingBlob(blob) => {
            missing_blobs_status(&error.to_string(), &[format!("blobs/{blob}")])
        }
        _ => status(error.code(), error.to_string()),
    }
}

/// A status with just a code and message.
pub fn status(code: tonic::Code, message: impl Into<String>) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
}
