//! Protocol types for Corral.
//!
//! The REAPI v2, longrunning and rpc types are those of the
//! `bazel-remote-apis` crate, re-exported under short names so the rest of the
//! workspace never spells out the long package paths. ByteStream is generated
//! here from `proto/bytestream/`, with `bytes::Bytes` payloads (same wire
//! format; one copy fewer per chunk each way). Corral's own protocols
//! (worker ↔ scheduler, worker ↔ runner) are generated from `corral/**.proto`
//! by `build.rs` without a system `protoc`.

pub use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
pub use bazel_remote_apis::build::bazel::semver;
/// ByteStream (`google.bytestream`), wire-identical to the crate's but with
/// `data: bytes::Bytes`.
pub mod bytestream {
    tonic::include_proto!("google.bytestream");
}
pub use bazel_remote_apis::google::longrunning;
pub use bazel_remote_apis::google::protobuf;
pub use bazel_remote_apis::google::rpc;

/// Corral's runner protocol (`proto/corral/runner/v1/runner.proto`): the
/// worker asks the runner, over a unix socket, to run one sandboxed command.
pub mod runner {
    pub mod v1 {
        tonic::include_proto!("corral.runner.v1");
    }
}

/// Provenance of executed results in the action cache
/// (`proto/corral/provenance/v1/provenance.proto`).
pub mod provenance {
    pub mod v1 {
        tonic::include_proto!("corral.provenance.v1");
    }
}

pub mod error_details;
pub mod hostname;
pub mod scratch;

pub use prost;
pub use tonic;

/// Corral's worker protocol (`proto/corral/worker/v1/worker.proto`): the
/// bidirectional stream between the scheduler and each worker.
// Generated oneofs hold whole Actions and Commands beside small messages; they
// are moved rarely, so boxing them would only make the code noisier.
#[allow(clippy::large_enum_variant)]
pub mod worker {
    pub mod v1 {
        tonic::include_proto!("corral.worker.v1");
    }
}
