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
//! The tenant of a call is the one its instance name belongs to
//! ([`TenantOf`]), whoever the caller is: a worker acting for an action is
//! confined to that action's tenant. Ownership is kept by an
//! [`OwnershipIndex`], in memory or appended to a file per tenant.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, DigestFunction, HASH_LEN};
use crate::error::{Error, Result};

/// Which tenant an instance name belongs to, and which tenants everyone
/// may read. Implemented by the authorization policy.
pub trait TenantOf: Send + Sync + 'static {
    /// The tenant owning `instance`; `None` when no tenant claims it (such
    /// names share one unclaimed space).
    fn tenant_of(&self, instance: &str) -> Option<Arc<str>>;
    /// Whether every tenant may read what `tenant` owns.
    fn is_shared_readable(&self, tenant: &str) -> bool;
}

/// Who owns which blobs.
pub struct OwnershipIndex {
    owned: Mutex<HashMap<Arc<str>, HashSet<Digest>>>,
    /// Where each tenant's ownership is appended; none: memory only.
    dir: Option<PathBuf>,
}

/// Bytes of one record in a tenant's file: function, hash, size.
const RECORD: usize = 1 + HASH_LEN + 8;

impl OwnershipIndex {
    /// An index kept in memory only (lost at restart: tenants upload again).
    pub fn in_memory() -> Self {
        OwnershipIndex {
            owned: Mutex::new(HashMap::new()),
            dir: None,
        }
    }

    /// An index kept in `dir`, one append-only file per tenant, loaded now.
    /// A torn last record (a crash mid-append) is cut off.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut owned = HashMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
                .path();
            let Some(tenant) = tenant_of_file(&path) else {
                continue;
            };
            owned.insert(tenant, load(&path)?);
        }
        Ok(OwnershipIndex {
            owned: Mutex::new(owned),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Whether `tenant` owns `digest`.
    pub fn owns(&self, tenant: &str, digest: &Digest) -> bool {
        self.lock()
            .get(tenant)
            .is_some_and(|set| set.contains(digest))
    }

    /// Records that `tenant` owns `digest` (appended to its file first, so
    /// a grant that was answered is never lost).
    pub fn grant(&self, tenant: &Arc<str>, digest: &Digest) -> Result<()> {
        let mut owned = self.lock();
        let set = owned.entry(tenant.clone()).or_default();
        if set.contains(digest) {
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            append(&dir.join(file_name(tenant)), digest)?;
        }
        set.insert(*digest);
        Ok(())
    }

    /// Digests `tenant` owns (for tests and accounting).
    pub fn count(&self, tenant: &str) -> usize {
        self.lock().get(tenant).map_or(0, HashSet::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashSet<Digest>>> {
        // Each update is one insert: a panic leaves the map consistent.
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tenant's file name: its name hex-encoded, so any tenant name is a
/// safe file name.
fn file_name(tenant: &str) -> String {
    format!("{}.owned", hex::encode(tenant.as_bytes()))
}

fn tenant_of_file(path: &Path) -> Option<Arc<str>> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".owned")?;
    let bytes = hex::decode(stem).ok()?;
    String::from_utf8(bytes).ok().map(Arc::from)
}

fn load(path: &Path) -> Result<HashSet<Digest>> {
    let mut data = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let torn = data.len() % RECORD;
    if torn != 0 {
        // Cut the partial record so later appends stay aligned.
        let whole = (data.len() - torn) as u64;
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole))
            .map_err(|e| Error::io(format!("truncating {}", path.display()), e))?;
        tracing::warn!(file = %path.display(), bytes = torn, "dropped a torn ownership record");
    }
    let mut set = HashSet::new();
    for record in data.chunks_exact(RECORD) {
        let function = match record[0] {
            0 => DigestFunction::Sha256,
            1 => DigestFunction::Blake3,
            other => {
                tracing::warn!(file = %path.display(), function = other, "skipping an ownership record of an unknown digest function");
                continue;
            }
        };
        let mut hash = [0u8; HASH_LEN];
        hash.copy_from_slice(&record[1..1 + HASH_LEN]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&record[1 + HASH_LEN..]);
        set.insert(Digest::new(function, hash, u64::from_le_bytes(size)));
    }
    Ok(set)
}

fn append(path: &Path, digest: &Digest) -> Result<()> {
    let mut record = Vec::with_capacity(RECORD);
    record.push(match digest.function() {
        DigestFunction::Sha256 => 0,
        DigestFunction::Blake3 => 1,
    });
    record.extend_from_slice(digest.hash());
    record.extend_from_slice(&digest.size().to_le_bytes());
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&record))
        .map_err(|e| Error::io(format!("appending to {}", path.display()), e))
}

/// The layer; see the module documentation.
pub struct TenantVisibility {
    inner: Arc<dyn BlobStore>,
    tenants: Arc<dyn TenantOf>,
    index: Arc<OwnershipIndex>,
}

impl TenantVisibility {
    /// Confines calls to `inner` to what their tenant may see.
    pub fn new(
        inner: Arc<dyn BlobStore>,
        tenants: Arc<dyn TenantOf>,
        index: Arc<OwnershipIndex>,
    ) -> Self {
        TenantVisibility {
            inner,
            tenants,
            index,
        }
    }

    fn tenant(&self, ctx: &RequestContext) -> Arc<str> {
        self.tenants
            .tenant_of(ctx.instance_name())
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Whether `tenant` may see `digest` (the empty blob always exists).
    fn visible(&self, tenant: &str, digest: &Digest) -> bool {
        if digest.is_empty_blob() || self.index.owns(tenant, digest) {
            return true;
        }
        let owned = self.index.lock();
        owned
            .iter()
            .any(|(owner, set)| self.tenants.is_shared_readable(owner) && set.contains(digest))
    }

    fn not_found(digest: &Digest) -> Error {
        Error::NotFound(format!("blob {digest}"))
    }
}

#[async_trait]
impl BlobStore for TenantVisibility {
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let tenant = self.tenant(ctx);
        let mut missing = self.inner.find_missing(ctx, digests).await?;
        let already: HashSet<Digest> = missing.iter().copied().collect();
        missing.extend(
            digests
                .iter()
                .filter(|d| !already.contains(d) && !self.visible(&tenant, d))
                .copied(),
        );
        Ok(missing)
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        if !self.visible(&self.tenant(ctx), digest) {
            return Err(Self::not_found(digest));
        }
        self.inner.get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        self.inner.put(ctx, digest, data).await?;
        self.index.grant(&self.tenant(ctx), digest)
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        if !self.visible(&self.tenant(ctx), digest) {
            return Err(Self::not_found(digest));
        }
        self.inner.read(ctx, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        let inner = self.inner.write(ctx, digest).await?;
        Ok(Box::new(OwningWriter {
            inner,
            tenant: self.tenant(ctx),
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
