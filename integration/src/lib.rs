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

/// Runs `future` on a runtime of its own, for the plain `#[test]`s of
/// `tests/` that start binaries and then talk to them.
///
/// # Panics
/// When the process cannot start a runtime (out of threads or memory):
/// no test could run then.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}
