//! Digests, blob stores, the action cache and the CAS/AC/ByteStream/Capabilities services.
//!
//! * [`digest`]: [`Digest`] and [`DigestFunction`] (SHA-256, BLAKE3).
//! * [`context`]: the [`RequestContext`] every storage call carries.
//! * [`store`]: the object-safe [`BlobStore`] trait, its backends (disk,
//!   memory, remote gRPC, sharded) and the layers over them (verifying,
//!   namespaced, bounded).
//! * [`action_cache`]: the object-safe [`ActionCache`] trait, its backends
//!   (disk, memory, remote) and layers (validating, completeness).
//! * [`message`]: size caps of messages decoded from client-named blobs.
//! * [`factory`]: builds the whole stack from [`config`].
//! * [`channel`]: client channels to `http://`, `https://` and `unix:` addresses.
//! * [`client_options`]: what Corral's own clients present (TLS settings,
//!   a token file) and the [`Connector`] that applies it to every
//!   [`Connection`].
//! * [`resource`]: ByteStream resource names.
//! * [`service`]: the tonic services, built by [`service::Services`] so other
//!   roles can add theirs to the same server.
//! * [`config`]: the `[cas]` and `[action_cache]` TOML settings.

pub mod action_cache;
pub mod authorization;
pub mod channel;
pub mod client_connection;
pub mod client_options;
pub mod client_token;
pub mod config;
pub mod context;
pub mod digest;
pub mod error;
pub mod factory;
pub mod message;
pub mod resource;
pub mod service;
pub mod store;

pub use action_cache::{ActionCache, DiskActionCache, GrpcActionCache, MemoryActionCache};
pub use authorization::Authorization;
pub use client_connection::Connection;
pub use client_options::{ClientFlags, ClientOptions, Connector};
pub use config::{ActionCacheSpec, Config, StoreSpec};
pub use context::{Caller, Identity, Invocation, Peer, RequestContext};
pub use digest::{Digest, DigestFunction};
pub use error::{Error, Result};
pub use factory::Storage;
pub use message::MessageLimits;
pub use store::disk::DiskStore;
pub use store::memory::MemoryStore;
pub use store::remote::GrpcStore;
pub use store::{BlobStore, BlobWriter, BoundedStore, VerifyingStore};
