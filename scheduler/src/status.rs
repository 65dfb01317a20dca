//! Building `google.rpc.Status` values and gRPC errors the way REAPI wants
//! them.

use corral_proto::prost::Message;
use corral_proto::{protobuf, rpc, tonic};

/// `google.rpc.PreconditionFailure` from `google/rpc/error_details.proto`,
/// which the `bazel-remote-apis` crate does not generate. REAPI requires it
/// in the details of a FAILED_PRECONDITION caused by missing blobs, with one
/// violation of type `MISSING` per blob.
#[derive(Clone, PartialEq, corral_proto::prost::Message)]
pub struct PreconditionFailure {
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

/// One entry of [`PreconditionFailure`].
#[derive(Clone, PartialEq, corral_proto::prost::Message)]
pub struct Violation {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub subject: String,
    #[prost(string, tag = "3")]
    pub description: String,
}

const PRECONDITION_FAILURE_URL: &str = "type.googleapis.com/google.rpc.PreconditionFailure";

/// A `google.rpc.Status` with no details.
pub fn rpc_status(code: tonic::Code, message: impl Into<String>) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
}

/// The `google.rpc.Status` REAPI wants for missing blobs.
pub fn missing_blobs_rpc(message: &str, subjects: &[String]) -> rpc::Status {
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

/// A gRPC FAILED_PRECONDITION error naming missing blobs in its details.
pub fn missing_blobs(message: String, subjects: &[String]) -> tonic::Status {
    let details = missing_blobs_rpc(&message, subjects).encode_to_vec();
    tonic::Status::with_details(tonic::Code::FailedPrecondition, message, details.into())
}

/// The `blobs/<hash>/<size>` subject REAPI uses to name a missing blob.
pub fn blob_subject(hash: &str, size: i64) -> String {
    format!("blobs/{hash}/{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_blob_status_carries_precondition_failure() {
        let s = missing_blobs("gone".into(), &["blobs/ab/3".into()]);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let decoded = rpc::Status::decode(s.details()).unwrap();
        assert_eq!(decoded.details[0].type_url, PRECONDITION_FAILURE_URL);
        let pf = PreconditionFailure::decode(decoded.details[0].value.as_slice()).unwrap();
        assert_eq!(pf.violations[0].r#type, "MISSING");
        assert_eq!(pf.violations[0].subject, "blobs/ab/3");
    }
}
