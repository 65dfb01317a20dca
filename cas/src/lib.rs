//! Digests, blob stores, the action cache and the CAS/AC/ByteStream/Capabilities services.
//!
//! * [`digest`]: [`Digest`] and [`DigestFunction`] (SHA-256, BLAKE3).
//! * [`store`]: the object-safe [`BlobStore`] trait with disk, memory and
//!   remote (gRPC) implementations.
//! * [`action_cache`]: the object-safe [`ActionCache`] trait, disk and
//!   memory implementations.
//! * [`resource`]: ByteStream resource names.
//! * [`service`]: the tonic services, built by [`service::Services`] so other
//!   roles can add theirs to the same server.
//! * [`config`]: the `[cas]` TOML settings.

pub mod action_cache;
pub mod config;
pub mod digest;
pub mod error;
pub mod resource;
pub mod service;
pub mod store;

pub use action_cache::{ActionCache, DiskActionCache, MemoryActionCache};
pub use config::Config;
pub use digest::{Digest, DigestFunction};
pub use error::{Error, Result};
pub use store::disk::DiskStore;
pub use store::memory::MemoryStore;
pub use store::remote::GrpcStore;
pub use store::{BlobStore, BlobWriter};
