//! Stores that send each call to one of several child stores.
//!
//! [`super::NamespacedStore`] picks a child by the call's instance name and
//! [`super::ShardedStore`] by the blob's hash; beyond that choice they
//! forward every call unchanged. [`Router`] is the choice, and the one
//! `BlobStore` implementation for `Routed<R>` does the forwarding, so a new
//! way of spreading blobs is a `route` function, not five copied methods.

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

/// Picks the child store for one blob of one call.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// The store that holds (or will hold) `digest` for this call.
    fn route(&self, ctx: &RequestContext, digest: &Digest) -> &dyn BlobStore;

    /// FindMissingBlobs over the children; a router whose batch may span
    /// several children splits it.
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>>;

    /// Every child store.
    fn children(&self) -> Vec<&dyn BlobStore>;
}

/// A [`Router`] as a store.
pub struct Routed<R>(pub R);

#[async_trait]
impl<R: Router> BlobStore for Routed<R> {
    /// Only when every child does: a call may be routed to any of them.
    fn keeps_owners(&self) -> bool {
        self.0.children().iter().all(|c| c.keeps_owners())
    }

    /// Given to every child; each keeps the digests it holds.
    fn restore_owners(&self, owner: super::owners::OwnerId, digests: &[Digest]) {
        for child in self.0.children() {
            child.restore_owners(owner, digests);
        }
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.0.find_missing(ctx, digests).await
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.0.route(ctx, digest).get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        self.0.route(ctx, digest).put(ctx, digest, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        self.0
            .route(ctx, digest)
            .read(ctx, digest, offset, limit)
            .await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.0.route(ctx, digest).write(ctx, digest).await
    }
}
