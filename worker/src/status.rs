//! Turning worker errors into the `google.rpc.Status` of an
//! `ExecuteResponse`. A missing input blob carries the REAPI-prescribed
//! `PreconditionFailure` detail (violation type `MISSING`, subject
//! `blobs/HASH/SIZE`), which is how Bazel knows to upload it again.

use corral_proto::protobuf::Any;
use corral_proto::rpc;
use prost::Message;

use crate::error::Error;

/// `google.rpc.PreconditionFailure`, which bazel-remote-apis does not
/// generate.
#[derive(Clone, PartialEq, Message)]
pub struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

/// One `google.rpc.PreconditionFailure.Violation`.
#[derive(Clone, PartialEq, Message)]
pub struct Violation {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

/// The status an error is reported with.
pub fn to_status(error: &Error) -> rpc::Status {
    let mut details = Vec::new();
    if let Error::MissingBlob(blob) = error {
        let failure = PreconditionFailure {
            violations: vec![Violation {
                r#type: "MISSING".into(),
                subject: format!("blobs/{blob}"),
                description: "not in the CAS".into(),
            }],
        };
        details.push(Any {
            type_url: "type.googleapis.com/google.rpc.PreconditionFailure".into(),
            value: failure.encode_to_vec(),
        });
    }
    rpc::Status {
        code: error.code() as i32,
        message: error.to_string(),
        details,
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
