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

/// `google.rpc.RetryInfo`: when a refused call may be tried again. REAPI
/// asks for it on RESOURCE_EXHAUSTED (a quota), and clients that honour
/// it wait that long instead of retrying at once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<protobuf::Duration>,
}

/// Its `Any` type URL.
pub const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A `google.rpc.Status` of `code` carrying a [`RetryInfo`] of `delay`.
pub fn retry_status(code: tonic::Code, message: &str, delay: std::time::Duration) -> rpc::Status {
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(protobuf::Duration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    rpc::Status {
        code: code as i32,
        message: message.to_string(),
        details: vec![protobuf::Any {
            type_url: RETRY_INFO_URL.to_string(),
            value: info.encode_to_vec(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn retry_status_carries_the_delay() {
        let status = retry_status(
            tonic::Code::ResourceExhausted,
            "over",
            std::time::Duration::from_millis(1500),
        );
        assert_eq!(status.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(status.details[0].type_url, RETRY_INFO_URL);
        let info = RetryInfo::decode(status.details[0].value.as_slice()).unwrap();
        let delay = info.retry_delay.unwrap();
        assert_eq!((delay.seconds, delay.nanos), (1, 500_000_000));
    }
}
