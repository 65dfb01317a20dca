//! The asset index: (instance name, URI, qualifiers) → a blob or directory
//! digest in the CAS.
//!
//! [`AssetIndex`] is small and object safe, like the action cache: the
//! services hold an `Arc<dyn AssetIndex>`, and every call carries the
//! request's [`RequestContext`], whose instance name is part of the key.
//! Backends only keep entries ([`disk::DiskIndex`], durable under the
//! server's data directory; [`memory::MemoryIndex`]). The rules — an entry
//! is served only until it expires, only if stored late enough for the
//! request, and only while every blob it refers to is in the CAS — are the
//! services', applied to what a backend returns.

pub mod disk;
pub mod memory;

use std::time::SystemTime;

use async_trait::async_trait;
use corral_cas::{Digest, DigestFunction, RequestContext};
use sha2::Digest as _;

use crate::error::Result;
use crate::qualifiers::Qualifiers;

pub use disk::DiskIndex;
pub use memory::MemoryIndex;

/// What an entry names in the CAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssetKind {
    /// A blob (FetchBlob, PushBlob).
    Blob,
    /// The root Directory of a tree (FetchDirectory, PushDirectory).
    Directory,
}

impl AssetKind {
    fn tag(self) -> u8 {
        match self {
            AssetKind::Blob => b'b',
            AssetKind::Directory => b'd',
        }
    }
}

/// What an entry is found by, besides the instance name (which comes from
/// the call's context). The digest function is part of it: a request for
/// BLAKE3 digests never gets a SHA-256 entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssetKey {
    /// Blob or directory.
    pub kind: AssetKind,
    /// The digest function of the entry's digests.
    pub function: DigestFunction,
    /// The URI exactly as the client sent it.
    pub uri: String,
    /// The validated qualifiers, sorted by name.
    pub qualifiers: Vec<(String, String)>,
}

impl AssetKey {
    /// The key of `uri` with `qualifiers`.
    pub fn new(
        kind: AssetKind,
        function: DigestFunction,
        uri: &str,
        qualifiers: &Qualifiers,
    ) -> AssetKey {
        AssetKey {
            kind,
            function,
            uri: uri.to_string(),
            qualifiers: qualifiers
                .pairs()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// An unambiguous encoding of the key within `instance` (every part
    /// length-prefixed), stored beside a disk entry to check it on read.
    pub fn encode(&self, instance: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.uri.len());
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        field(instance.as_bytes());
        field(&[self.kind.tag()]);
        field(self.function.name().as_bytes());
        field(self.uri.as_bytes());
        for (name, value) in &self.qualifiers {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        out
    }

    /// The SHA-256 of [`AssetKey::encode`], in hex: a file name.
    pub fn id(&self, instance: &str) -> String {
        hex::encode(sha2::Sha256::digest(self.encode(instance)))
    }
}

/// What an entry says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssetEntry {
    /// The blob, or the root Directory.
    pub digest: Digest,
    /// Further blobs the asset needs (Push's `references_blobs`).
    pub references_blobs: Vec<Digest>,
    /// Further directory trees it needs (Push's `references_directories`).
    pub references_directories: Vec<Digest>,
    /// When it was pushed, or when its download started.
    pub stored_at: SystemTime,
    /// When it stops being served, if the client said.
    pub expire_at: Option<SystemTime>,
}

/// An asset index backend.
#[async_trait]
pub trait AssetIndex: Send + Sync + 'static {
    /// The entry of `key` in the context's instance, if any.
    async fn get(&self, ctx: &RequestContext, key: &AssetKey) -> Result<Option<AssetEntry>>;

    /// Stores `entry` under `key` in the context's instance, replacing any
    /// entry there.
    async fn put(&self, ctx: &RequestContext, key: &AssetKey, entry: &AssetEntry) -> Result<()>;

    /// Removes the entry of `key`, if any (an expired one).
    async fn remove(&self, ctx: &RequestContext, key: &AssetKey) -> Result<()>;
}
