//! `google.rpc.PreconditionFailure` from `google/rpc/error_details.proto`,
//! which the `bazel-remote-apis` crate does not generate. REAPI requires it
//! in the details of a FAILED_PRECONDITION caused by missing blobs, with one
//! violation of type `MISSING` per blob; Bazel reads it to upload them again.

use crate::{protobuf, rpc};

/// The message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

/// One entry of [`PreconditionFailure`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Violation {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

/// Its `Any` type URL.
pub const PRECONDITION_FAILURE_URL: &str = "type.googleapis.com/google.rpc.PreconditionFailure";

/// A FAILED_PRECONDITION `google.rpc.Status` naming missing blobs by their
/// `blobs/HASH/SIZE` subjects.
pub fn missing_blobs_status(message: &str, subjects: &[String]) -> rpc::Status {
    use prost::Message;
    let failure = PreconditionFailure {
        violations: subjects
            .iter()
            .map(|s| Violation {
                r#type: "MISSING".to_string(),
                subject: s.clone(),
                description: String::new(),
            })
            .collect(),
    };
    rpc::Status {
        code: tonic::Code::FailedPrecondition as i32,
        message: message.to_string(),
        details: vec![protobuf::Any {
            type_url: PRECONDITION_FAILURE_URL.to_string(),
            value: failure.encode_to_vec(),
        }],
    }
}
