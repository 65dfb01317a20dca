//! A blob store in a hash map: for tests and for short-lived processes that
//! need a CAS without a disk. Unbounded. It trusts what it is given: the
//! [`super::VerifyingStore`] above it checks every blob first.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{read_range, BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, DigestMap};
use crate::error::{Error, Result};

/// Chunk size of streamed reads from memory.
const READ_CHUNK: usize = 1 << 20;

/// An unbounded in-memory store.
#[derive(Default, Clone)]
pub struct MemoryStore {
    blobs: Arc<RwLock<DigestMap<Bytes>>>,
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

    fn map_read(&self) -> std::sync::RwLockReadGuard<'_, DigestMap<Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is a single insert or remove), so poison is ignored.
        self.blobs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map_write(&self) -> std::sync::RwLockWriteGuard<'_, DigestMap<Bytes>> {
        self.blobs.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lookup(&self, digest: &Digest) -> Result<Bytes> {
        if digest.is_empty_blob() {
            return Ok(Bytes::new());
        }
        self.map_read()
            .get(digest)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("blob {digest}")))
    }
}

#[async_trait]
impl BlobStore for MemoryStore {
    async fn find_missing(&self, _: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let map = self.map_read();
        Ok(digests
            .iter()
            .filter(|d| !d.is_empty_blob() && !map.contains_key(d))
            .copied()
            .collect())
    }

    async fn get(&self, _: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.lookup(digest)
    }

    async fn put(&self, _: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        if digest.is_empty_blob() {
            return Ok(());
        }
        self.map_write().insert(*digest, data);
        Ok(())
    }

    async fn read(
        &self,
        _: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let data = self.lookup(digest)?;
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

    async fn write(&self, _: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            digest: *digest,
            buf: Vec::new(),
        }))
    }
}

struct MemoryWriter {
    store: MemoryStore,
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
                .map_write()
                .insert(self.digest, Bytes::from(self.buf));
        }
        Ok(())
    }
}
