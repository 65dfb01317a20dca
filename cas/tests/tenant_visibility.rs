//! Attempts to learn or read another tenant's blobs through one shared
//! store: existence, reads, uploads of wrong bytes, and what survives a
//! restart. Each runs over the disk and memory backends, which keep owners
//! beside each blob, and over a store that does not (the layer's own
//! lookups).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use corral_cas::store::namespaced::longest_prefix;
use corral_cas::store::{write_all, BlobWriter, ChunkStream};
use corral_cas::store::{OwnershipIndex, TenantOf, TenantVisibility};
use corral_cas::{
    BlobStore, Digest, DigestFunction, DiskStore, Error, MemoryStore, RequestContext,
    VerifyingStore,
};

const F: DigestFunction = DigestFunction::Sha256;

/// Tenants by instance-name prefix, as a policy gives them.
struct Prefixes {
    by_prefix: BTreeMap<String, Arc<str>>,
    shared: Vec<&'static str>,
}

impl TenantOf for Prefixes {
    fn tenant_of(&self, instance: &str) -> Option<Arc<str>> {
        longest_prefix(&self.by_prefix, instance).cloned()
    }
    fn is_shared_readable(&self, tenant: &str) -> bool {
        self.shared.contains(&tenant)
    }
    fn shared_readable(&self) -> Vec<Arc<str>> {
        self.shared.iter().map(|t| Arc::from(*t)).collect()
    }
    fn check_cas_bytes(&self, tenant: &str, owned: u64, adding: u64) -> corral_cas::Result<()> {
        // Tenant a may own 100 bytes.
        if tenant == "a" && owned + adding > 100 {
            return Err(Error::QuotaExceeded {
                message: format!("tenant a owns {owned} bytes; {adding} more is over 100"),
                retry_after: std::time::Duration::from_secs(60),
            });
        }
        Ok(())
    }
}

fn tenants(shared: Vec<&'static str>) -> Arc<dyn TenantOf> {
    let by_prefix = [("team-a", "a"), ("team-b", "b"), ("tools", "tools")]
        .into_iter()
        .map(|(p, t)| (p.to_string(), Arc::from(t)))
        .collect();
    Arc::new(Prefixes { by_prefix, shared })
}

/// A store that keeps no owners (as a remote one): passes every call to
/// the memory store inside.
struct Plain(MemoryStore);

#[async_trait]
impl BlobStore for Plain {
    async fn find_missing(
        &self,
        ctx: &RequestContext,
        digests: &[Digest],
    ) -> corral_cas::Result<Vec<Digest>> {
        self.0.find_missing(ctx, digests).await
    }
    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> corral_cas::Result<Bytes> {
        self.0.get(ctx, digest).await
    }
    async fn put(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        data: Bytes,
    ) -> corral_cas::Result<()> {
        self.0.put(ctx, digest, data).await
    }
    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> corral_cas::Result<ChunkStream> {
        self.0.read(ctx, digest, offset, limit).await
    }
    async fn write(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
    ) -> corral_cas::Result<Box<dyn BlobWriter>> {
        self.0.write(ctx, digest).await
    }
}

/// The backends each test runs over.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Disk,
    Plain,
}

const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Disk, Backend::Plain];

/// A backend, and a way to drop a blob from it as eviction would.
struct Built {
    store: Arc<dyn BlobStore>,
    evict: Box<dyn Fn(&Digest) -> bool>,
}

fn backend(kind: Backend, dir: &std::path::Path) -> Built {
    match kind {
        Backend::Memory | Backend::Plain => {
            let memory = MemoryStore::new();
            let handle = memory.clone();
            let store: Arc<dyn BlobStore> = match kind {
                Backend::Plain => Arc::new(Plain(memory)),
                _ => Arc::new(memory),
            };
            Built {
                store,
                evict: Box::new(move |d| handle.remove(d)),
            }
        }
        Backend::Disk => {
            let disk = DiskStore::open(dir.join("cas"), 1 << 30).unwrap();
            let handle = disk.clone();
            Built {
                store: Arc::new(disk),
                evict: Box::new(move |d| handle.remove(d)),
            }
        }
    }
}

fn stack(
    kind: Backend,
    dir: &std::path::Path,
    index: Arc<OwnershipIndex>,
    shared: Vec<&'static str>,
) -> (TenantVisibility, Built) {
    let built = backend(kind, dir);
    let verified: Arc<dyn BlobStore> = Arc::new(VerifyingStore::new(built.store.clone()));
    let store = TenantVisibility::new(verified, tenants(shared), index).unwrap();
    (store, built)
}

fn ctx(instance: &str) -> RequestContext {
    // The caller's identity does not matter: the instance name decides.
    RequestContext::new(corral_cas::Identity::Anonymous, None, instance, F)
}

#[tokio::test]
async fn another_tenants_blob_looks_missing_until_uploaded_in_full() {
    for kind in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(OwnershipIndex::in_memory());
        let (store, _) = stack(kind, dir.path(), index, vec![]);
        probes_find_nothing_of_another_tenant(&store)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

async fn probes_find_nothing_of_another_tenant(store: &TenantVisibility) -> Result<(), String> {
    let secret = Bytes::from_static(b"team a's private source");
    let d = Digest::of_bytes(F, &secret);
    store.put(&ctx("team-a"), &d, secret.clone()).await.unwrap();

    // Team B probes by digest: no existence oracle, no read.
    check(
        store.find_missing(&ctx("team-b"), &[d]).await.unwrap() == vec![d],
        "B finds A's blob",
    )?;
    check(
        matches!(
            store.get(&ctx("team-b/x"), &d).await,
            Err(Error::NotFound(_))
        ),
        "B gets A's blob",
    )?;
    check(
        matches!(
            store.read(&ctx("team-b"), &d, 0, None).await,
            Err(Error::NotFound(_))
        ),
        "B reads A's blob",
    )?;
    // Team A, under any instance name it owns, sees it.
    let seen = store.find_missing(&ctx("team-a/ci"), &[d]).await.unwrap();
    check(seen.is_empty(), "A does not find its own blob")?;
    // A name that merely starts with "team-a" is not team A's.
    let ab = store.find_missing(&ctx("team-ab"), &[d]).await.unwrap();
    check(ab == vec![d], "team-ab finds team-a's blob")?;

    // Wrong bytes under A's digest do not make B an owner.
    let mut writer = store.write(&ctx("team-b"), &d).await.unwrap();
    writer
        .write(Bytes::from(vec![b'x'; secret.len()]))
        .await
        .unwrap();
    check(writer.commit().await.is_err(), "wrong bytes were committed")?;
    let after = store.find_missing(&ctx("team-b"), &[d]).await.unwrap();
    check(after == vec![d], "wrong bytes made B an owner")?;

    // The real bytes, streamed, do; the store still keeps one copy.
    write_all(store, &ctx("team-b"), &d, secret.clone())
        .await
        .unwrap();
    check(
        store.get(&ctx("team-b"), &d).await.unwrap() == secret,
        "B cannot read what it uploaded",
    )
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

#[tokio::test]
async fn shared_readable_tenants_and_the_empty_blob_are_seen_by_all() {
    for kind in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(OwnershipIndex::in_memory());
        let (store, _) = stack(kind, dir.path(), index, vec!["tools"]);
        let tool = Bytes::from_static(b"a compiler everyone uses");
        let d = Digest::of_bytes(F, &tool);
        // Team A has asked before the tools tenant had any number.
        assert_eq!(
            store.find_missing(&ctx("team-a"), &[d]).await.unwrap(),
            vec![d],
            "{kind:?}"
        );
        store.put(&ctx("tools"), &d, tool.clone()).await.unwrap();
        assert!(
            store
                .find_missing(&ctx("team-b"), &[d])
                .await
                .unwrap()
                .is_empty(),
            "{kind:?}"
        );
        assert_eq!(
            store.get(&ctx("team-a"), &d).await.unwrap(),
            tool,
            "{kind:?}"
        );
        let empty = Digest::of_bytes(F, b"");
        assert!(
            store
                .find_missing(&ctx("team-b"), &[empty])
                .await
                .unwrap()
                .is_empty(),
            "{kind:?}"
        );
        assert_eq!(
            store.get(&ctx("team-b"), &empty).await.unwrap(),
            Bytes::new()
        );
    }
}

#[tokio::test]
async fn ownership_survives_a_restart_and_a_torn_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let blob = Bytes::from_static(b"kept");
    let d = Digest::of_bytes(F, &blob);
    let owned = dir.path().join("owned");
    {
        let index = Arc::new(OwnershipIndex::open(&owned).unwrap());
        let (store, _) = stack(Backend::Disk, dir.path(), index, vec![]);
        store.put(&ctx("team-a"), &d, blob.clone()).await.unwrap();
    }
    // A crash mid-append leaves a partial record behind.
    let file = std::fs::read_dir(&owned)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0u8; 7]);
    std::fs::write(&file, bytes).unwrap();

    let index = OwnershipIndex::open(&owned).unwrap();
    assert!(index.owns("a", &d));
    assert!(!index.owns("b", &d));
    assert_eq!(index.count("a"), 1);
    // Records appended after the cut stay whole.
    let more = Digest::of_bytes(F, b"more");
    index.grant(&Arc::from("a"), &more).unwrap();
    drop(index);
    let index = Arc::new(OwnershipIndex::open(&owned).unwrap());
    assert!(index.owns("a", &d) && index.owns("a", &more));
    assert_eq!(index.count("a"), 2);

    // The disk store, reopened, rebuilt its index from its files with no
    // owners: the recorded ownership is given back to it.
    let (store, _) = stack(Backend::Disk, dir.path(), index, vec![]);
    assert!(store
        .find_missing(&ctx("team-a"), &[d])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get(&ctx("team-a"), &d).await.unwrap(), blob);
    assert_eq!(
        store.find_missing(&ctx("team-b"), &[d]).await.unwrap(),
        vec![d]
    );
}

#[tokio::test]
async fn an_evicted_blob_uploaded_again_by_another_tenant_is_not_seen_by_its_first_owner() {
    // Only where the store keeps owners: they go with the evicted blob. (A
    // store without owners answers from the ownership index, which learns
    // of evictions only when a quota makes it look.)
    for kind in [Backend::Memory, Backend::Disk] {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(OwnershipIndex::in_memory());
        let (store, built) = stack(kind, dir.path(), index, vec![]);
        let data = Bytes::from_static(b"a header both teams use");
        let d = Digest::of_bytes(F, &data);
        store.put(&ctx("team-a"), &d, data.clone()).await.unwrap();
        assert!((built.evict)(&d), "{kind:?}");
        store.put(&ctx("team-b"), &d, data.clone()).await.unwrap();
        // A must not learn that someone holds the blob again.
        assert_eq!(
            store.find_missing(&ctx("team-a"), &[d]).await.unwrap(),
            vec![d],
            "{kind:?}"
        );
        store.put(&ctx("team-a"), &d, data.clone()).await.unwrap();
        assert!(
            store
                .find_missing(&ctx("team-a"), &[d])
                .await
                .unwrap()
                .is_empty(),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn uploads_past_the_cas_bytes_quota_are_refused_until_blobs_are_evicted() {
    for kind in BACKENDS {
        quota_holds(kind).await;
    }
}

async fn quota_holds(kind: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let owned = dir.path().join("owned");
    let index = Arc::new(OwnershipIndex::open(&owned).unwrap());
    let built = backend(kind, dir.path());
    let verified: Arc<dyn BlobStore> = Arc::new(VerifyingStore::new(built.store.clone()));
    let store = TenantVisibility::new(verified.clone(), tenants(vec![]), index.clone())
        .unwrap()
        .with_recheck_interval(std::time::Duration::ZERO);
    let blob = |n: usize, fill: u8| {
        let data = Bytes::from(vec![fill; n]);
        (Digest::of_bytes(F, &data), data)
    };
    let (d60, b60) = blob(60, b'a');
    let (d40, b40) = blob(40, b'b');
    let (d10, b10) = blob(10, b'c');
    store.put(&ctx("team-a"), &d60, b60.clone()).await.unwrap();
    write_all(&store, &ctx("team-a/ci"), &d40, b40)
        .await
        .unwrap();
    assert_eq!(index.bytes("a"), 100, "{kind:?}");

    // One byte more is refused, by put and by a streamed write, before
    // anything is stored; nothing of it is owned.
    let over = store
        .put(&ctx("team-a"), &d10, b10.clone())
        .await
        .unwrap_err();
    assert!(matches!(over, Error::QuotaExceeded { .. }), "{over:?}");
    assert_eq!(over.code(), tonic::Code::ResourceExhausted);
    assert!(over.to_string().contains("over 100"), "{over}");
    assert!(store.write(&ctx("team-a"), &d10).await.is_err());
    assert!(!index.owns("a", &d10));
    let internal = RequestContext::internal("", F);
    assert_eq!(
        verified.find_missing(&internal, &[d10]).await.unwrap(),
        vec![d10],
        "{kind:?}: the refused blob was stored"
    );
    // What a tenant owns already costs nothing again; other tenants have
    // quotas of their own.
    store.put(&ctx("team-a"), &d60, b60.clone()).await.unwrap();
    store.put(&ctx("team-b"), &d10, b10.clone()).await.unwrap();

    // The store evicts the 60-byte blob: at the quota, the tenant's count
    // is checked against the store, and the upload passes.
    assert!((built.evict)(&d60), "{kind:?}");
    store.put(&ctx("team-a"), &d10, b10).await.unwrap();
    assert_eq!(index.bytes("a"), 50, "{kind:?}");
    assert!(!index.owns("a", &d60));
    // The tenant's file was rewritten: a restart agrees.
    drop(store);
    drop(index);
    let index = OwnershipIndex::open(&owned).unwrap();
    assert_eq!(index.bytes("a"), 50, "{kind:?}");
    assert_eq!(index.count("a"), 2, "{kind:?}");
}
