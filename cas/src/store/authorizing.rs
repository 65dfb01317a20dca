//! The storage layer that asks [`Authorization`] before every call:
//! reads (`find_missing`, `get`, `read`) need `cas.read` on the call's
//! instance, writes (`put`, `write`) need `cas.write`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use corral_auth::Permission;

use super::{BlobStore, BlobWriter, ChunkStream};
use crate::authorization::Authorization;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

/// See the module documentation.
pub struct AuthorizingStore {
    inner: Arc<dyn BlobStore>,
    authorization: Authorization,
}

impl AuthorizingStore {
    /// Checks every call to `inner` with `authorization`.
    pub fn new(inner: Arc<dyn BlobStore>, authorization: Authorization) -> Self {
        AuthorizingStore {
            inner,
            authorization,
        }
    }
}

#[async_trait]
impl BlobStore for AuthorizingStore {
    fn keeps_owners(&self) -> bool {
        self.inner.keeps_owners()
    }

    fn restore_owners(&self, owner: super::owners::OwnerId, digests: &[Digest]) {
        self.inner.restore_owners(owner, digests)
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.authorization.check(ctx, Permission::CasRead)?;
        self.inner.find_missing(ctx, digests).await
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.authorization.check(ctx, Permission::CasRead)?;
        self.inner.get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        self.authorization.check(ctx, Permission::CasWrite)?;
        self.inner.put(ctx, digest, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        self.authorization.check(ctx, Permission::CasRead)?;
        self.inner.read(ctx, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        self.authorization.check(ctx, Permission::CasWrite)?;
        self.inner.write(ctx, digest).await
    }
}
