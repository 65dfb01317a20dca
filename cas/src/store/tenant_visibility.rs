//! Confidentiality of blobs between tenants over one physical store.
//!
//! Tenants share the store, so a blob two tenants upload is kept once. What
//! they must not share is *knowledge*: if `FindMissingBlobs` told tenant B
//! that a blob exists because tenant A uploaded it, B could test whether A
//! holds a given file (a source, a key) by its digest. So each tenant owns
//! the blobs it uploaded with verified bytes, or that its own executions
//! produced (workers upload outputs under the action's instance name), and
//! [`TenantVisibility`] answers every call as if the store held only the
//! blobs of the call's tenant and of the tenants marked shared-readable:
//!
//! * `find_missing` reports a blob another tenant owns as missing, so the
//!   client uploads it in full;
//! * `get` and `read` of such a blob are NOT_FOUND;
//! * a finished upload (`put`, or a writer's `commit`: below this layer
//!   the bytes are verified against the digest) makes the tenant an owner.
//!
//! * an upload that would take the tenant past its `cas_bytes` quota is
//!   refused (RESOURCE_EXHAUSTED with a retry delay) before any byte is
//!   stored; a blob it owns already costs nothing more.
//!
//! The tenant of a call is the one its instance name belongs to
//! ([`TenantOf`]), whoever the caller is: a worker acting for an action is
//! confined to that action's tenant. Ownership is recorded by an
//! [`OwnershipIndex`], in memory or appended to a file per tenant, which
//! counts each tenant's bytes for its quota.
//!
//! Where the store below [keeps owners](BlobStore::keeps_owners) beside
//! each blob (disk and memory backends), this layer numbers the tenant,
//! passes the call down with a [`Viewer`](super::owners::Viewer) in its
//! context, and the store's own lookup answers for it: a FindMissingBlobs
//! of ten thousand digests then costs one index lookup per digest, as on
//! a farm without tenants. At start the recorded ownership is given back
//! to the store. Over other stores (remote ones) the layer looks each
//! present digest up in the ownership index itself.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use super::ownership_index::OwnershipIndex;
use super::tenant_numbers::TenantNumbers;
use super::{BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, DigestSet};
use crate::error::{Error, Result};

/// Which tenant an instance name belongs to, and which tenants everyone
/// may read. Implemented by the authorization policy.
pub trait TenantOf: Send + Sync + 'static {
    /// The tenant owning `instance`; `None` when no tenant claims it (such
    /// names share one unclaimed space).
    fn tenant_of(&self, instance: &str) -> Option<Arc<str>>;
    /// Whether every tenant may read what `tenant` owns.
    fn is_shared_readable(&self, tenant: &str) -> bool;
    /// Every tenant whose blobs everyone may read (usually none or a
    /// few): asked on every call, so it should not scan all tenants.
    fn shared_readable(&self) -> Vec<Arc<str>>;
    /// Whether `tenant`, owning `owned` bytes, may own `adding` more (its
    /// `cas_bytes` quota); over it, [`Error::QuotaExceeded`]. Default: no
    /// quota.
    fn check_cas_bytes(&self, tenant: &str, owned: u64, adding: u64) -> Result<()> {
        let _ = (tenant, owned, adding);
        Ok(())
    }
}

/// How often, by default, a tenant at its `cas_bytes` quota has what it
/// owns checked against the store (blobs evicted since they were owned
/// stop counting).
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Digests per `find_missing` call when checking what a tenant owns.
const RECHECK_BATCH: usize = 10_000;

/// The layer; see the module documentation.
pub struct TenantVisibility {
    inner: Arc<dyn BlobStore>,
    tenants: Arc<dyn TenantOf>,
    index: Arc<OwnershipIndex>,
    recheck_interval: std::time::Duration,
    /// Tenants' numbers, when `inner` keeps owners itself.
    numbers: Option<TenantNumbers>,
}

impl TenantVisibility {
    /// Confines calls to `inner` to what their tenant may see. A store
    /// that keeps owners is given what `index` records.
    pub fn new(
        inner: Arc<dyn BlobStore>,
        tenants: Arc<dyn TenantOf>,
        index: Arc<OwnershipIndex>,
    ) -> Result<Self> {
        let numbers = inner.keeps_owners().then(TenantNumbers::default);
        if let Some(numbers) = &numbers {
            for (tenant, digests) in index.snapshot() {
                inner.restore_owners(numbers.number(&tenant)?, &digests);
            }
        }
        Ok(TenantVisibility {
            inner,
            tenants,
            index,
            recheck_interval: RECHECK_INTERVAL,
            numbers,
        })
    }

    /// The call as the store below answers it for `tenant`, when that
    /// store keeps owners; `None` when this layer must check itself.
    fn viewed(&self, ctx: &RequestContext, tenant: &Arc<str>) -> Result<Option<RequestContext>> {
        let Some(numbers) = &self.numbers else {
            return Ok(None);
        };
        let viewer = numbers.viewer(tenant, &self.tenants.shared_readable())?;
        Ok(Some(ctx.viewed_by(Arc::new(viewer))))
    }

    /// The context to read `digest` with: the tenant's view where the
    /// store below keeps owners, else the call's own once this layer has
    /// found the blob visible (NOT_FOUND when it is not).
    fn reading(&self, ctx: &RequestContext, digest: &Digest) -> Result<RequestContext> {
        let tenant = self.tenant(ctx);
        match self.viewed(ctx, &tenant)? {
            Some(viewed) => Ok(viewed),
            None if self.visible(&tenant, digest) => Ok(ctx.clone()),
            None => Err(Self::not_found(digest)),
        }
    }

    /// The context to upload with, once `tenant`'s quota allows the blob:
    /// the tenant's view where the store below keeps owners (it then adds
    /// the tenant to the blob's owners), else the call's own.
    async fn uploading(
        &self,
        ctx: &RequestContext,
        tenant: &Arc<str>,
        digest: &Digest,
    ) -> Result<RequestContext> {
        self.charge(ctx, tenant, digest).await?;
        Ok(self.viewed(ctx, tenant)?.unwrap_or_else(|| ctx.clone()))
    }

    /// Sets how often a tenant at its `cas_bytes` quota has what it owns
    /// checked against the store ([`RECHECK_INTERVAL`] by default).
    pub fn with_recheck_interval(mut self, interval: std::time::Duration) -> Self {
        self.recheck_interval = interval;
        self
    }

    fn tenant(&self, ctx: &RequestContext) -> Arc<str> {
        self.tenants
            .tenant_of(ctx.instance_name())
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Whether `tenant` may see `digest` (the empty blob always exists).
    fn visible(&self, tenant: &str, digest: &Digest) -> bool {
        self.hidden_from(tenant, &[digest]).is_empty()
    }

    /// Those of `digests` that `tenant` may not see, found under one lock
    /// of the ownership index (a `FindMissingBlobs` may name thousands).
    fn hidden_from<'a>(&self, tenant: &str, digests: &[&'a Digest]) -> Vec<&'a Digest> {
        let owned = self.index.lock();
        let own = owned.get(tenant);
        // The shared-readable tenants' records, looked for only once a
        // digest is not the caller's own (the usual read is).
        let mut shared: Option<Vec<&super::ownership_index::Owned>> = None;
        let mut hidden = Vec::new();
        for digest in digests {
            if digest.is_empty_blob() || own.is_some_and(|o| o.digests.contains(*digest)) {
                continue;
            }
            let shared = shared.get_or_insert_with(|| {
                owned
                    .iter()
                    .filter(|(owner, _)| self.tenants.is_shared_readable(owner))
                    .map(|(_, record)| record)
                    .collect()
            });
            if !shared.iter().any(|record| record.digests.contains(*digest)) {
                hidden.push(*digest);
            }
        }
        hidden
    }

    /// Refuses an upload that would take `tenant` past its `cas_bytes`
    /// quota. A blob it owns already costs nothing; at the quota, blobs
    /// the store has evicted since are dropped from its count first.
    async fn charge(&self, ctx: &RequestContext, tenant: &str, digest: &Digest) -> Result<()> {
        if digest.is_empty_blob() || self.index.owns(tenant, digest) {
            return Ok(());
        }
        let adding = digest.size();
        let first = self
            .tenants
            .check_cas_bytes(tenant, self.index.bytes(tenant), adding);
        if first.is_ok() {
            return Ok(());
        }
        let Some(owned) = self.index.due_for_check(tenant, self.recheck_interval) else {
            return first;
        };
        for batch in owned.chunks(RECHECK_BATCH) {
            let gone = self.inner.find_missing(ctx, batch).await?;
            self.index.forget(tenant, &gone)?;
        }
        self.tenants
            .check_cas_bytes(tenant, self.index.bytes(tenant), adding)
    }

    fn not_found(digest: &Digest) -> Error {
        Error::NotFound(format!("blob {digest}"))
    }
}

/// The digests of `asked` that are not in `missing`. Stores answer in the
/// order they were asked, so one walk side by side finds them without
/// hashing; an answer in another order falls back to a set.
fn present_among<'a>(asked: &'a [Digest], missing: &[Digest]) -> Vec<&'a Digest> {
    let mut next_missing = missing.iter().peekable();
    let mut present = Vec::with_capacity(asked.len().saturating_sub(missing.len()));
    for digest in asked {
        if next_missing.peek() == Some(&digest) {
            next_missing.next();
        } else {
            present.push(digest);
        }
    }
    if next_missing.peek().is_none() {
        return present;
    }
    let missing: DigestSet = missing.iter().copied().collect();
    asked.iter().filter(|d| !missing.contains(d)).collect()
}

#[async_trait]
impl BlobStore for TenantVisibility {
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let tenant = self.tenant(ctx);
        if let Some(viewed) = self.viewed(ctx, &tenant)? {
            return self.inner.find_missing(&viewed, digests).await;
        }
        let mut missing = self.inner.find_missing(ctx, digests).await?;
        if missing.len() >= digests.len() {
            return Ok(missing);
        }
        let present = present_among(digests, &missing);
        let hidden = self.hidden_from(&tenant, &present);
        missing.extend(hidden.into_iter().copied());
        Ok(missing)
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        self.inner.get(&self.reading(ctx, digest)?, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        let tenant = self.tenant(ctx);
        let call = self.uploading(ctx, &tenant, digest).await?;
        self.inner.put(&call, digest, data).await?;
        self.index.grant(&tenant, digest)
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let call = self.reading(ctx, digest)?;
        self.inner.read(&call, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        let tenant = self.tenant(ctx);
        let call = self.uploading(ctx, &tenant, digest).await?;
        let inner = self.inner.write(&call, digest).await?;
        Ok(Box::new(OwningWriter {
            inner,
            tenant,
            digest: *digest,
            index: self.index.clone(),
        }))
    }
}

/// A writer that makes its tenant an owner once the (verified) upload is
/// committed.
struct OwningWriter {
    inner: Box<dyn BlobWriter>,
    tenant: Arc<str>,
    digest: Digest,
    index: Arc<OwnershipIndex>,
}

#[async_trait]
impl BlobWriter for OwningWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.inner.write(data).await
    }

    fn committed(&self) -> u64 {
        self.inner.committed()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let OwningWriter {
            inner,
            tenant,
            digest,
            index,
        } = *self;
        inner.commit().await?;
        index.grant(&tenant, &digest)
    }
}

#[cfg(test)]
mod tests {
    use super::present_among;
    use crate::digest::{Digest, DigestFunction};

    fn digests(n: u8) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest::of_bytes(DigestFunction::Sha256, &[i]))
            .collect()
    }

    #[test]
    fn present_blobs_are_found_in_an_answer_in_order() {
        let asked = digests(5);
        let missing = vec![asked[1], asked[4]];
        let present = present_among(&asked, &missing);
        assert_eq!(present, vec![&asked[0], &asked[2], &asked[3]]);
    }

    #[test]
    fn present_blobs_are_found_in_an_answer_out_of_order() {
        let asked = digests(5);
        let missing = vec![asked[4], asked[1]];
        let present = present_among(&asked, &missing);
        assert_eq!(present, vec![&asked[0], &asked[2], &asked[3]]);
    }
}
