//! Attempts to learn or read another tenant's blobs through one shared
//! store: existence, reads, uploads of wrong bytes, and what survives a
//! restart.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::namespaced::longest_prefix;
use corral_cas::store::{write_all, OwnershipIndex, TenantOf, TenantVisibility};
use corral_cas::{
    BlobStore, Digest, DigestFunction, Error, MemoryStore, RequestContext, VerifyingStore,
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

fn stack(
    index: Arc<OwnershipIndex>,
    shared: Vec<&'static str>,
) -> (TenantVisibility, Arc<MemoryStore>) {
    let backend = Arc::new(MemoryStore::new());
    let verified: Arc<dyn BlobStore> = Arc::new(VerifyingStore::new(backend.clone()));
    (
        TenantVisibility::new(verified, tenants(shared), index),
        backend,
    )
}

fn ctx(instance: &str) -> RequestContext {
    // The caller's identity does not matter: the instance name decides.
    RequestContext::new(corral_cas::Identity::Anonymous, None, instance, F)
}

#[tokio::test]
async fn another_tenants_blob_looks_missing_until_uploaded_in_full() {
    let (store, _) = stack(Arc::new(OwnershipIndex::in_memory()), vec![]);
    let secret = Bytes::from_static(b"team a's private source");
    let d = Digest::of_bytes(F, &secret);
    store.put(&ctx("team-a"), &d, secret.clone()).await.unwrap();

    // Team B probes by digest: no existence oracle, no read.
    assert_eq!(
        store.find_missing(&ctx("team-b"), &[d]).await.unwrap(),
        vec![d]
    );
    assert!(matches!(
        store.get(&ctx("team-b/x"), &d).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.read(&ctx("team-b"), &d, 0, None).await,
        Err(Error::NotFound(_))
    ));
    // Team A, under any instance name it owns, sees it.
    assert!(store
        .find_missing(&ctx("team-a/ci"), &[d])
        .await
        .unwrap()
        .is_empty());
    // A name that merely starts with "team-a" is not team A's.
    assert_eq!(
        store.find_missing(&ctx("team-ab"), &[d]).await.unwrap(),
        vec![d]
    );

    // Wrong bytes under A's digest do not make B an owner.
    let mut writer = store.write(&ctx("team-b"), &d).await.unwrap();
    writer
        .write(Bytes::from(vec![b'x'; secret.len()]))
        .await
        .unwrap();
    assert!(writer.commit().await.is_err());
    assert_eq!(
        store.find_missing(&ctx("team-b"), &[d]).await.unwrap(),
        vec![d]
    );

    // The real bytes, streamed, do; the store still keeps one copy.
    write_all(&store, &ctx("team-b"), &d, secret.clone())
        .await
        .unwrap();
    assert_eq!(store.get(&ctx("team-b"), &d).await.unwrap(), secret);
}

#[tokio::test]
async fn shared_readable_tenants_and_the_empty_blob_are_seen_by_all() {
    let (store, _) = stack(Arc::new(OwnershipIndex::in_memory()), vec!["tools"]);
    let tool = Bytes::from_static(b"a compiler everyone uses");
    let d = Digest::of_bytes(F, &tool);
    store.put(&ctx("tools"), &d, tool.clone()).await.unwrap();
    assert!(store
        .find_missing(&ctx("team-b"), &[d])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get(&ctx("team-a"), &d).await.unwrap(), tool);
    let empty = Digest::of_bytes(F, b"");
    assert!(store
        .find_missing(&ctx("team-b"), &[empty])
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn ownership_survives_a_restart_and_a_torn_record_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let blob = Bytes::from_static(b"kept");
    let d = Digest::of_bytes(F, &blob);
    {
        let index = Arc::new(OwnershipIndex::open(dir.path()).unwrap());
        let (store, _) = stack(index, vec![]);
        store.put(&ctx("team-a"), &d, blob.clone()).await.unwrap();
    }
    // A crash mid-append leaves a partial record behind.
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0u8; 7]);
    std::fs::write(&file, bytes).unwrap();

    let index = OwnershipIndex::open(dir.path()).unwrap();
    assert!(index.owns("a", &d));
    assert!(!index.owns("b", &d));
    assert_eq!(index.count("a"), 1);
    // Records appended after the cut stay whole.
    let more = Digest::of_bytes(F, b"more");
    index.grant(&Arc::from("a"), &more).unwrap();
    drop(index);
    let index = OwnershipIndex::open(dir.path()).unwrap();
    assert!(index.owns("a", &d) && index.owns("a", &more));
    assert_eq!(index.count("a"), 2);
}

#[tokio::test]
async fn uploads_past_the_cas_bytes_quota_are_refused_until_blobs_are_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(OwnershipIndex::open(dir.path()).unwrap());
    let backend = Arc::new(MemoryStore::new());
    let verified: Arc<dyn BlobStore> = Arc::new(VerifyingStore::new(backend.clone()));
    let store = TenantVisibility::new(verified, tenants(vec![]), index.clone())
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
    assert_eq!(index.bytes("a"), 100);

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
    assert_eq!(backend.len(), 2);
    // What a tenant owns already costs nothing again; other tenants have
    // quotas of their own.
    store.put(&ctx("team-a"), &d60, b60.clone()).await.unwrap();
    store.put(&ctx("team-b"), &d10, b10.clone()).await.unwrap();

    // The store evicts the 60-byte blob: at the quota, the tenant's count
    // is checked against the store, and the upload passes.
    assert!(backend.remove(&d60));
    store.put(&ctx("team-a"), &d10, b10).await.unwrap();
    assert_eq!(index.bytes("a"), 50);
    assert!(!index.owns("a", &d60));
    // The tenant's file was rewritten: a restart agrees.
    drop(store);
    drop(index);
    let index = OwnershipIndex::open(dir.path()).unwrap();
    assert_eq!(index.bytes("a"), 50);
    assert_eq!(index.count("a"), 2);
}
