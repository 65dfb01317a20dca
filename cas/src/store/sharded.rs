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

use super::routed::{Routed, Router};
use super::BlobStore;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// The child stores.
pub struct Shards {
    shards: Vec<Arc<dyn BlobStore>>,
}

/// Blobs spread over child stores by hash.
pub type ShardedStore = Routed<Shards>;

impl ShardedStore {
    /// At least one shard is needed.
    pub fn new(shards: Vec<Arc<dyn BlobStore>>) -> Result<Self> {
        if shards.is_empty() {
            return Err(Error::invalid(
                "shards",
                "a sharded store needs at least one shard",
            ));
        }
        Ok(Routed(Shards { shards }))
    }

    /// The index of the shard that holds `digest`.
    pub fn shard_of(&self, digest: &Digest) -> usize {
        self.0.shard_of(digest)
    }
}

impl Shards {
    fn shard_of(&self, digest: &Digest) -> usize {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.hash()[..8]);
        (u64::from_be_bytes(first) % self.shards.len() as u64) as usize
    }
}

#[async_trait]
impl Router for Shards {
    fn route(&self, _: &RequestContext, digest: &Digest) -> &dyn BlobStore {
        self.shards[self.shard_of(digest)].as_ref()
    }

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

    fn children(&self) -> Vec<&dyn BlobStore> {
        self.shards.iter().map(|s| s.as_ref()).collect()
    }
}
