//! What only the disk store promises, beyond the shared contract
//! (tests/contract): restart, eviction, concurrent writers leaving no
//! debris, no wrong blob after an interrupted or refused upload, read-only
//! plain files, hardlinks.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::write_all;
use corral_cas::{BlobStore, Digest, DigestFunction, DiskStore, RequestContext, VerifyingStore};

fn ctx() -> RequestContext {
    RequestContext::internal("", DigestFunction::Sha256)
}

/// The disk store under the layer that verifies what is written to it.
fn verified(store: &DiskStore) -> VerifyingStore {
    VerifyingStore::new(Arc::new(store.clone()))
}

fn blob(seed: u32, len: usize) -> (Bytes, Digest, Digest) {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect();
    let s = Digest::of_bytes(DigestFunction::Sha256, &data);
    let b = Digest::of_bytes(DigestFunction::Blake3, &data);
    (Bytes::from(data), s, b)
}

#[tokio::test]
async fn disk_store_files_and_refusals_leave_no_debris() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    let stack = verified(&store);
    let (data, sha, b3) = blob(1, 300_000);
    stack.put(&ctx(), &sha, data.clone()).await.unwrap();
    write_all(&stack, &ctx(), &b3, data.clone()).await.unwrap();
    // Refused uploads: a lie put whole, and one streamed.
    let lie = Digest::new(DigestFunction::Sha256, *sha.hash(), 1000);
    assert!(stack.put(&ctx(), &lie, data.slice(..1000)).await.is_err());
    let mut w = stack.write(&ctx(), &lie).await.unwrap();
    w.write(data.slice(..1000)).await.unwrap();
    assert!(w.commit().await.is_err());
    assert!(!store.path(&lie).exists());
    for d in [sha, b3] {
        let path = store.path(&d);
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o444,
            "{}",
            path.display()
        );
        assert!(path.to_str().unwrap().contains(d.function().name()));
    }
    // Nothing left in tmp by the refused uploads.
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    // Hardlinking a stored blob works and survives eviction of the name.
    let link = dir.path().join("linked");
    std::fs::hard_link(store.file_for_link(&sha).await.unwrap(), &link).unwrap();
    assert_eq!(std::fs::read(&link).unwrap(), data);
    let empty = Digest::of_bytes(DigestFunction::Blake3, b"");
    let empty_path = store.file_for_link(&empty).await.unwrap();
    assert_eq!(std::fs::metadata(empty_path).unwrap().len(), 0);
}

#[tokio::test]
async fn disk_store_survives_restart_and_drops_debris() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sha, b3) = blob(7, 50_000);
    {
        let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
        let stack = verified(&store);
        stack.put(&ctx(), &sha, data.clone()).await.unwrap();
        stack.put(&ctx(), &b3, data.clone()).await.unwrap();
        // An upload in flight when the process dies.
        let mut w = stack
            .write(&ctx(), &Digest::of_bytes(DigestFunction::Sha256, b"x"))
            .await
            .unwrap();
        w.write(Bytes::from_static(b"x")).await.unwrap();
        std::mem::forget(w);
    }
    // A truncated blob file (as a crash mid-copy could leave) and junk.
    let (small, small_digest, _) = blob(8, 100);
    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    let bad = store.path(&small_digest);
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, &small[..50]).unwrap();
    std::fs::write(bad.parent().unwrap().join("junk"), b"junk").unwrap();
    drop(store);

    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(store.len(), 2);
    assert_eq!(store.get(&ctx(), &sha).await.unwrap(), data);
    assert_eq!(store.get(&ctx(), &b3).await.unwrap(), data);
    assert_eq!(
        store.find_missing(&ctx(), &[small_digest]).await.unwrap(),
        vec![small_digest]
    );
    assert!(!bad.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn disk_store_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 10_000).unwrap();
    let blobs: Vec<_> = (0..5).map(|i| blob(100 + i, 3000)).collect();
    for (data, d, _) in &blobs[..3] {
        store.put(&ctx(), d, data.clone()).await.unwrap();
    }
    // Use blob 0 so blob 1 becomes the oldest.
    store.get(&ctx(), &blobs[0].1).await.unwrap();
    store
        .put(&ctx(), &blobs[3].1, blobs[3].0.clone())
        .await
        .unwrap();
    let all: Vec<Digest> = blobs[..4].iter().map(|b| b.1).collect();
    assert_eq!(
        store.find_missing(&ctx(), &all).await.unwrap(),
        vec![blobs[1].1]
    );
    assert!(store.total_bytes() <= 10_000);
    assert!(!store.path(&blobs[1].1).exists());
    // Larger than the whole store: refused, nothing evicted.
    let (huge, huge_d, _) = blob(9, 10_001);
    let e = store.put(&ctx(), &huge_d, huge).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert_eq!(store.len(), 3);
    // Reopening with a smaller bound evicts down to it.
    drop(store);
    let store = DiskStore::open(dir.path(), 6000).unwrap();
    assert_eq!(store.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    let stack = Arc::new(verified(&store));
    let (data, d, _) = blob(3, 2_000_000);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let stack = stack.clone();
            let data = data.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    stack.put(&ctx(), &d, data).await
                } else {
                    write_all(&*stack, &ctx(), &d, data).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.len(), 1);
    assert_eq!(store.total_bytes(), 2_000_000);
    assert_eq!(store.get(&ctx(), &d).await.unwrap(), data);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
