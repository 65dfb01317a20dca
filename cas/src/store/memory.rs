//! A blob store in a hash map: for tests and for short-lived processes that
//! need a CAS without a disk. Unbounded. It trusts what it is given: the
//! [`super::VerifyingStore`] above it checks every blob first. It keeps
//! each blob's owners beside it ([`super::owners`]).

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::owners::{visible, OwnerId, Owners, Viewer};
use super::{read_range, BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, DigestMap};
use crate::error::{Error, Result};

/// Chunk size of streamed reads from memory.
const READ_CHUNK: usize = 1 << 20;

/// An unbounded in-memory store.
#[derive(Default, Clone)]
pub struct MemoryStore {
    blobs: Arc<RwLock<DigestMap<Stored>>>,
}

/// One blob and its owners.
struct Stored {
    data: Bytes,
    owners: Owners,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of blobs held (the implicit empty blob not counted).
    pub fn len(&self) -> usize {
        self.map_read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops a blob, as eviction would; lets tests exercise "blob vanished".
    pub fn remove(&self, digest: &Digest) -> bool {
        self.map_write().remove(digest).is_some()
    }

    fn map_read(&self) -> std::sync::RwLockReadGuard<'_, DigestMap<Stored>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so poison is ignored.
        self.blobs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map_write(&self) -> std::sync::RwLockWriteGuard<'_, DigestMap<Stored>> {
        self.blobs.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        if digest.is_empty_blob() {
            return Ok(Bytes::new());
        }
        self.map_read()
            .get(digest)
            .filter(|s| visible(ctx.viewer(), &s.owners))
            .map(|s| s.data.clone())
            .ok_or_else(|| Error::NotFound(format!("blob {digest}")))
    }

    /// Stores `data` (unless held already) and makes the viewer, if any,
    /// an owner.
    fn insert(&self, viewer: Option<&Viewer>, digest: Digest, data: Bytes) {
        let owner = viewer.map(|v| v.owner);
        let mut map = self.map_write();
        let stored = map.entry(digest).or_insert_with(|| Stored {
            data,
            owners: Owners::default(),
        });
        if let Some(owner) = owner {
            stored.owners.insert(owner);
        }
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    fn keeps_owners(&self) -> bool {
        true
    }

    fn restore_owners(&self, owner: OwnerId, digests: &[Digest]) {
        let mut map = self.map_write();
        for digest in digests {
            if let Some(stored) = map.get_mut(digest) {
                stored.owners.insert(owner);
            }
        }
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let map = self.map_read();
        let viewer = ctx.viewer();
        Ok(digests
            .iter()
            .filter(|d| {
                !d.is_empty_blob() && !map.get(d).is_some_and(|s| visible(viewer, &s.owners))
            })
            .copied()
            .collect())
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.lookup(ctx, digest)
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        if digest.is_empty_blob() {
            return Ok(());
        }
        self.insert(ctx.viewer(), *digest, data);
        Ok(())
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let data = self.lookup(ctx, digest)?;
        let (start, end) = read_range(digest, offset, limit)?;
        if data.len() as u64 != digest.size() {
            // Only an unverified put could store this; never slice past it.
            return Err(Error::Internal(format!(
                "memory store holds {} bytes for {digest}",
                data.len()
            )));
        }
        let mut rest = data.slice(start as usize..end as usize);
        let mut chunks = Vec::new();
        while !rest.is_empty() {
            let n = rest.len().min(READ_CHUNK);
            chunks.push(Ok(rest.split_to(n)));
        }
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            ctx: ctx.clone(),
            digest: *digest,
            buf: Vec::new(),
        }))
    }
}

struct MemoryWriter {
    store: MemoryStore,
    /// The upload's call, whose viewer becomes an owner on commit.
    ctx: RequestContext,
    digest: Digest,
    buf: Vec<u8>,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn committed(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        if !self.digest.is_empty_blob() {
            self.store
                .insert(self.ctx.viewer(), self.digest, Bytes::from(self.buf));
        }
        Ok(())
    }
}
