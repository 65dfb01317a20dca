//! The end-to-end test harness (farms, servers, real Bazel and BuildStream
//! clients, an OCI registry) used by the root package's `tests/`, and the
//! benchmarks that the `corral-bench` binary (behind `corral bench`) runs.

pub mod bazel;
pub mod bench;
pub mod buildstream;
pub mod certs;
pub mod farm;
pub mod process;
pub mod registry;
pub mod remote;
pub mod server;
pub mod tokens;

pub use server::{corral_binary, use_corral};
