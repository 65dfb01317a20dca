//! The Remote Asset API (`build.bazel.remote.asset.v1`): Fetch and Push,
//! served beside the CAS on the same port, so that BuildStream keeps its
//! artifact and source caches on the farm and Bazel downloads through it
//! (`--experimental_remote_downloader`).
//!
//! * [`service`]: [`AssetServices`], the tonic Fetch and Push services.
//!   Each call's [`corral_cas::RequestContext`] is built at the edge.
//! * [`index`]: the [`AssetIndex`] trait — (instance, URI, qualifiers) →
//!   digest — with a durable disk backend and a memory one.
//! * [`completeness`]: an entry is served only while every blob it refers
//!   to (whole directory trees included) is in the CAS; a push naming
//!   blobs the CAS lacks is refused, listing them.
//! * [`qualifiers`]: parsing and validation of qualifiers, `checksum.sri`
//!   included.
//! * [`uri`]: checking request URIs.
//! * [`policy`] and [`fetcher`]: downloads on a FetchBlob miss, only from
//!   allowed hosts or URL prefixes, with size, time and redirect limits
//!   and checksum verification.
//! * [`config`]: the `[asset]` table.
//! * [`clock`]: injected wall-clock time (expiry, content age).
//! * [`error`] and [`status_details`]: errors and their `google.rpc`
//!   details.
#![deny(missing_docs)]

pub mod clock;
pub mod completeness;
pub mod config;
pub mod error;
pub mod fetcher;
pub mod index;
pub mod policy;
pub mod qualifiers;
pub mod request;
pub mod service;
pub mod status_details;
pub mod uri;

pub use clock::{Clock, SystemClock};
pub use config::{AssetConfig, DownloadConfig, IndexKind};
pub use error::{AssetError, Result};
pub use fetcher::{DownloadError, Fetcher};
pub use index::{AssetEntry, AssetIndex, AssetKey, AssetKind, DiskIndex, MemoryIndex};
pub use policy::DownloadPolicy;
pub use service::AssetServices;

/// The generated Remote Asset API types and tonic clients and servers.
pub use bazel_remote_apis::build::bazel::remote::asset::v1 as proto;
