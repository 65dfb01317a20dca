//! The top of a storage stack: the store as the services, the scheduler and
//! the action cache see it, with the one way to decode a message from a
//! blob a client named.
//!
//! [`BoundedStore::get_message`] refuses a blob whose digest claims more
//! than the cap for its kind of message ([`MessageLimits`]) before anything
//! is read, so a client cannot make the server allocate a gigabyte by
//! naming one. What it does read is bounded too: every backend's `get`
//! returns at most the digest's size (disk reads exactly that many bytes,
//! the remote store refuses a longer stream), and [`message::decode`] checks
//! the length again. Every other call passes through unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;
use crate::message::{self, BoundedMessage, MessageLimits};

/// A store that decodes messages with a size cap. Cheap to clone.
#[derive(Clone)]
pub struct BoundedStore {
    inner: Arc<dyn BlobStore>,
    limits: Arc<MessageLimits>,
}

impl BoundedStore {
    pub fn new(inner: Arc<dyn BlobStore>, limits: MessageLimits) -> Self {
        BoundedStore {
            inner,
            limits: Arc::new(limits),
        }
    }

    pub fn limits(&self) -> &MessageLimits {
        &self.limits
    }

    /// The store below this layer.
    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }

    /// Fetches and decodes the message `digest`, which the request names in
    /// `field`. Over the cap: `MessageTooLarge` (INVALID_ARGUMENT naming the
    /// field and the limit) without a read; missing: `NotFound`; not an `M`:
    /// `InvalidArgument` naming the field.
    pub async fn get_message<M: BoundedMessage>(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        field: &str,
    ) -> Result<M> {
        self.limits.check::<M>(digest, field)?;
        self.fetch(ctx, digest, field).await
    }

    /// Like [`BoundedStore::get_message`] with a cap of the caller's that
    /// is lower than the configured one (GetTree: what one response can
    /// carry), named by `setting` in the error.
    pub async fn get_message_within<M: BoundedMessage>(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        field: &str,
        limit: u64,
        setting: &str,
    ) -> Result<M> {
        let configured = self.limits.limit(M::KIND);
        if limit < configured {
            message::check_size(M::KIND, digest, field, limit, setting.to_string())?;
        } else {
            self.limits.check::<M>(digest, field)?;
        }
        self.fetch(ctx, digest, field).await
    }

    async fn fetch<M: BoundedMessage>(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        field: &str,
    ) -> Result<M> {
        let data = self.inner.get(ctx, digest).await?;
        message::decode(digest, field, data)
    }
}

#[async_trait]
impl BlobStore for BoundedStore {
    fn keeps_owners(&self) -> bool {
        self.inner.keeps_owners()
    }

    fn restore_owners(&self, owner: super::owners::OwnerId, digests: &[Digest]) {
        self.inner.restore_owners(owner, digests)
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.inner.find_missing(ctx, digests).await
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.inner.get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        self.inner.put(ctx, digest, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        self.inner.read(ctx, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.inner.write(ctx, digest).await
    }
}
