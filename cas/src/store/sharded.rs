//! N child stores, each blob in exactly one, chosen by its hash.
//!
//! The mapping is fixed: the first eight bytes of the hash, as a number,
//! modulo the number of shards. Hashes are uniform, so the shards fill
//! evenly; the mapping needs no state, so every process configured with the
//! same shard list agrees on where a blob lives. Changing the list moves
//! most blobs to another shard, where they are missing until uploaded
//! again (a CAS may lose blobs; clients upload what FindMissingBlobs
//! reports): the price of keeping this simple.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Blobs spread over child stores by hash.
pub struct ShardedStore {
    shards: Vec<Arc<dyn BlobStore>>,
}

impl ShardedStore {
    /// At least one shard is needed.
    pub fn new(shards: Vec<Arc<dyn BlobStore>>) -> Result<Self> {
        if shards.is_empty() {
            return Err(Error::invalid(
                "shards",
                "a sharded store needs at least one shard",
            ));
        }
        Ok(ShardedStore { shards })
    }

    /// The index of the shard that holds `digest`.
    pub fn shard_of(&self, digest: &Digest) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.hash()[..8]);
        (u64::from_be_bytes(first) % self.shards.len() as u64) as usize
    }

    fn shard(&self, digest: &Digest) -> &dyn BlobStore {
        self.shards[self.shard_of(digest)].as_ref()
    }
}

#[async_trait]
impl BlobStore for ShardedStore {
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut per_shard: Vec<Vec<Digest>> = vec![Vec::new(); self.shards.len()];
        for d in digests {
            per_shard[self.shard_of(d)].push(*d);
        }
        let asked = per_shard
            .iter()
            .zip(&self.shards)
            .filter(|(ds, _)| !ds.is_empty())
            .map(|(ds, shard)| shard.find_missing(ctx, ds));
        let answers = futures::future::try_join_all(asked).await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.shard(digest).get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        self.shard(digest).put(ctx, digest, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        self.shard(digest).read(ctx, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.shard(digest).write(ctx, digest).await
    }
}
