//! Worker: scheduler session, input staging from a hardlink-caching local
//! CAS, output capture and upload.
//!
//! * [`localcas`]: the local CAS (a corral-cas `DiskStore`) filled from the
//!   remote CAS in batches and streams, each blob fetched once;
//!   [`exec_variants`] keeps executable copies apart.
//! * [`tree`], [`validate`]: fetching and checking input roots.
//! * [`stage`]: staged input roots, cached by digest and reused as the
//!   read-only lower layer of the runner's overlay; [`link`] hardlinks
//!   their files, copying a blob whose inode is out of links.
//! * [`remote`]: the batch and stream calls to the remote CAS.
//! * [`action`]: one assignment from staging to upload; [`runner`] reaches
//!   (and restarts) the runner process; [`session`] is the stream to the
//!   scheduler; [`daemon`] wires them from a [`config::WorkerConfig`].

pub mod action;
pub mod bench;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod error;
pub mod exec_variants;
pub mod fsutil;
pub mod images;
pub mod link;
pub mod localcas;
pub mod lru;
pub mod merged;
pub mod paths;
pub mod platform;
pub mod prepare;
pub mod remote;
pub mod runner;
pub mod session;
pub mod stage;
pub mod status;
pub mod testkit;
pub mod tree;
pub mod upload;
pub mod validate;

pub use error::{Error, Result};
pub use localcas::{LocalCas, LocalCasOptions};
pub use remote::RemoteCas;
pub use stage::{StagedInput, Stager};
