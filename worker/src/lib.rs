//! Worker: scheduler session, input staging from a hardlink-caching local
//! CAS, output capture and upload.
//!
//! * `localcas`: the local CAS (a corral-cas `DiskStore`) filled from the
//!   remote CAS in batches and streams, each blob fetched once;
//!   `exec_variants` keeps executable copies apart.
//! * [`tree`], [`validate`]: fetching and checking input roots.
//! * [`stage`]: staged input roots, cached by digest and reused as the
//!   read-only lower layer of the runner's overlay; `link` hardlinks
//!   their files, copying a blob whose inode is out of links.
//! * `remote`: the batch and stream calls to the remote CAS.
//! * `executor`: the `executor::ActionExecutor` trait and its layers
//!   (timestamps, cancellation, the local executor); the local executor's
//!   steps are [`inputs`] (staging and image pull), [`plan`] (the one
//!   translation of an assignment into a runner request, also used by
//!   `corral runner exec --action`), `build_dir`, `sandbox` (the
//!   runner protocol) and `outputs` (capture and upload).
//! * `runner` reaches (and restarts) the runner process; `session` is
//!   the stream to the scheduler; [`daemon`] wires them from a
//!   [`config::WorkerConfig`].

#![deny(missing_docs)]

mod build_dir;
pub mod capture;
mod clock;
pub mod config;
pub mod daemon;
mod error;
mod exec_variants;
mod executor;
pub mod fsutil;
pub mod images;
pub mod inputs;
mod link;
mod localcas;
mod lru;
mod merged;
mod outputs;
pub mod paths;
pub mod plan;
mod platform;
pub mod prepare;
mod remote;
mod runner;
mod sandbox;
mod session;
pub mod stage;
mod status;
/// Test helpers (a loopback CAS, input-tree builders) for the worker's own
/// tests and for `corral-integration`'s benchmarks; not part of the product.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tree;
mod upload;
pub mod validate;

pub use error::{Error, Result};
pub use executor::WorkerMetrics;
pub use localcas::{LocalCas, LocalCasOptions};
pub use remote::RemoteCas;
pub use stage::{StagedInput, Stager};
