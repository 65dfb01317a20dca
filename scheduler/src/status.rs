//! Building `google.rpc.Status` values and gRPC errors the way REAPI wants
//! them.

use corral_proto::prost::Message;
use corral_proto::{rpc, tonic};

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
    corral_proto::error_details::missing_blobs_status(message, subjects)
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
    use corral_proto::error_details::{PreconditionFailure, PRECONDITION_FAILURE_URL};

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
