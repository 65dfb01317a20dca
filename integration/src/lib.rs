//! The benchmark harness behind `corral bench`, and helpers shared by the
//! end-to-end tests in `tests/`.

pub mod bazel;
pub mod bench;
pub mod buildstream;
pub mod farm;
pub mod process;
pub mod registry;
pub mod remote;
pub mod server;
