//! The store implementations against the same expectations, plus what only
//! the disk store promises: restart, eviction, concurrent writers, no wrong
//! blob after an interrupted upload, read-only plain files.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::{collect, write_all};
use corral_cas::{BlobStore, Digest, DigestFunction, DiskStore, Error, MemoryStore};

fn blob(seed: u32, len: usize) -> (Bytes, Digest, Digest) {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect();
    let s = Digest::of_bytes(DigestFunction::Sha256, &data);
    let b = Digest::of_bytes(DigestFunction::Blake3, &data);
    (Bytes::from(data), s, b)
}

/// What every BlobStore must do.
async fn contract(store: &dyn BlobStore) {
    let (data, sha, b3) = blob(1, 300_000);
    let empty = Digest::of_bytes(DigestFunction::Sha256, b"");
    assert_eq!(
        store.find_missing(&[sha, b3, empty]).await.unwrap().len(),
        2
    );
    assert!(matches!(store.get(&sha).await, Err(Error::NotFound(_))));
    assert!(store.get(&empty).await.unwrap().is_empty());

    store.put(&sha, data.clone()).await.unwrap();
    assert_eq!(store.find_missing(&[sha, b3]).await.unwrap(), vec![b3]);
    write_all(store, &b3, data.clone()).await.unwrap();
    assert!(store.find_missing(&[sha, b3]).await.unwrap().is_empty());
    assert_eq!(store.get(&b3).await.unwrap(), data);

    // Ranged reads.
    let part = collect(store.read(&sha, 1000, Some(5000)).await.unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(part, data.slice(1000..6000));
    let tail = collect(store.read(&sha, 299_999, None).await.unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(tail, data.slice(299_999..));
    let end = collect(store.read(&sha, 300_000, None).await.unwrap(), 0)
        .await
        .unwrap();
    assert!(end.is_empty());
    let past = store.read(&sha, 300_001, None).await.err().unwrap();
    assert_eq!(past.code(), tonic::Code::OutOfRange);
    assert!(past.to_string().contains("read_offset"));

    // Wrong data is refused and leaves nothing behind.
    let (other, other_digest, _) = blob(2, 1000);
    let wrong = Digest::new(DigestFunction::Sha256, *other_digest.hash(), 999);
    let e = store.put(&wrong, other.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let lie = Digest::new(DigestFunction::Sha256, *sha.hash(), 1000);
    let e = store.put(&lie, other.clone()).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(store.find_missing(&[lie]).await.unwrap(), vec![lie]);

    // Streaming: over-long, short and wrong uploads.
    let mut w = store.write(&other_digest).await.unwrap();
    w.write(other.slice(..600)).await.unwrap();
    let e = w.write(other.slice(..600)).await.unwrap_err();
    assert!(e.to_string().starts_with("data"), "{e}");
    assert_eq!(w.committed(), 600);
    let e = w.commit().await.unwrap_err();
    assert!(e.to_string().starts_with("finish_write"), "{e}");
    let mut w = store.write(&lie).await.unwrap();
    w.write(other.clone()).await.unwrap();
    assert!(matches!(
        w.commit().await,
        Err(Error::DigestMismatch { .. })
    ));
    assert_eq!(
        store
            .find_missing(&[lie, other_digest])
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn memory_store_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn disk_store_contract_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    contract(&store).await;
    let (_, sha, b3) = blob(1, 300_000);
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
        store.put(&sha, data.clone()).await.unwrap();
        store.put(&b3, data.clone()).await.unwrap();
        // An upload in flight when the process dies.
        let mut w = store
            .write(&Digest::of_bytes(DigestFunction::Sha256, b"x"))
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
    assert_eq!(store.get(&sha).await.unwrap(), data);
    assert_eq!(store.get(&b3).await.unwrap(), data);
    assert_eq!(
        store.find_missing(&[small_digest]).await.unwrap(),
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
        store.put(d, data.clone()).await.unwrap();
    }
    // Use blob 0 so blob 1 becomes the oldest.
    store.get(&blobs[0].1).await.unwrap();
    store.put(&blobs[3].1, blobs[3].0.clone()).await.unwrap();
    let all: Vec<Digest> = blobs[..4].iter().map(|b| b.1).collect();
    assert_eq!(store.find_missing(&all).await.unwrap(), vec![blobs[1].1]);
    assert!(store.total_bytes() <= 10_000);
    assert!(!store.path(&blobs[1].1).exists());
    // Larger than the whole store: refused, nothing evicted.
    let (huge, huge_d, _) = blob(9, 10_001);
    let e = store.put(&huge_d, huge).await.unwrap_err();
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
    let store = Arc::new(DiskStore::open(dir.path(), 1 << 30).unwrap());
    let (data, d, _) = blob(3, 2_000_000);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let data = data.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.put(&d, data).await
                } else {
                    write_all(&*store, &d, data).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.len(), 1);
    assert_eq!(store.total_bytes(), 2_000_000);
    assert_eq!(store.get(&d).await.unwrap(), data);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
