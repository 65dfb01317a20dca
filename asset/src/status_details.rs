//! `google.rpc.BadRequest` from `google/rpc/error_details.proto`, which the
//! `bazel-remote-apis` crate does not generate, and the `google.rpc.Status`
//! values built from it.
//!
//! The Remote Asset API asks that a request refused for unsupported
//! qualifiers carry a `BadRequest` detail with one `FieldViolation` per
//! qualifier: field `qualifiers.name`, description `"NAME" not supported`.

use corral_proto::{protobuf, rpc};
use prost::Message;

/// `google.rpc.BadRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BadRequest {
    /// One entry per offending field.
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldViolation {
    /// The path of the field, e.g. `qualifiers.name`.
    #[prost(string, tag = "1")]
    pub field: String,
    /// Why it is refused.
    #[prost(string, tag = "2")]
    pub description: String,
}

/// The `Any` type URL of [`BadRequest`].
pub const BAD_REQUEST_URL: &str = "type.googleapis.com/google.rpc.BadRequest";

/// The INVALID_ARGUMENT status for unsupported qualifier `names`.
pub fn unsupported_qualifiers(message: &str, names: &[String]) -> rpc::Status {
    let detail = BadRequest {
        field_violations: names
            .iter()
            .map(|name| FieldViolation {
                field: "qualifiers.name".to_string(),
                description: format!("{name:?} not supported"),
            })
            .collect(),
    };
    rpc::Status {
        code: tonic::Code::InvalidArgument as i32,
        message: message.to_string(),
        details: vec![protobuf::Any {
            type_url: BAD_REQUEST_URL.to_string(),
            value: detail.encode_to_vec(),
        }],
    }
}

/// A `google.rpc.Status` with no details (the inline `status` of a Fetch
/// response).
pub fn rpc_status(code: tonic::Code, message: impl Into<String>) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
}
