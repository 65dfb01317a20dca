//! A disk store on a file system that fills up before the store's bound is
//! reached (the bound set too high, or other programs using the disk).
//! Before, every upload after the file system filled failed with
//! RESOURCE_EXHAUSTED until the server was restarted; now the store evicts
//! least-recently-used blobs and goes on. The file system is a 64 MiB
//! tmpfs, which needs root to mount: without root these tests say so and
//! pass.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::disk::SizeBound;
use corral_cas::store::write_all;
use corral_cas::{BlobStore, Digest, DigestFunction, DiskStore, RequestContext, VerifyingStore};

const FS_BYTES: u64 = 64 << 20;

/// A tmpfs mounted for the life of the value.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: cannot mount a small file system; skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs: {status}");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn blob(seed: u64, len: usize) -> (Bytes, Digest) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    (Bytes::from(data), d)
}

fn ctx() -> RequestContext {
    RequestContext::internal("", DigestFunction::Sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_system_evicts_and_keeps_taking_uploads() {
    let Some(fs) = Tmpfs::mount() else { return };
    // A bound far above what the file system holds.
    let store = DiskStore::open(fs.path().join("cas"), 10 << 30).unwrap();
    let stack = VerifyingStore::new(Arc::new(store.clone()));
    let blobs: Vec<(Bytes, Digest)> = (0..40).map(|i| blob(i, 4 << 20)).collect();
    // 160 MiB through a 64 MiB file system, streamed and whole.
    for (i, (data, d)) in blobs.iter().enumerate() {
        let stored = if i % 2 == 0 {
            write_all(&stack, &ctx(), d, data.clone()).await
        } else {
            stack.put(&ctx(), d, data.clone()).await
        };
        stored.unwrap_or_else(|e| panic!("upload {i} of 4 MiB refused: {e}"));
    }
    // The newest blobs are there and intact; the oldest were evicted.
    let newest: Vec<Digest> = blobs[35..].iter().map(|b| b.1).collect();
    assert!(stack
        .find_missing(&ctx(), &newest)
        .await
        .unwrap()
        .is_empty());
    for (data, d) in &blobs[35..] {
        assert_eq!(&stack.get(&ctx(), d).await.unwrap(), data);
    }
    assert!(!stack
        .find_missing(&ctx(), &[blobs[0].1])
        .await
        .unwrap()
        .is_empty());
    assert!(store.total_bytes() <= FS_BYTES);
    let leftovers = std::fs::read_dir(fs.path().join("cas/tmp"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "temp files of uploads left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_bound_follows_the_free_space() {
    let Some(fs) = Tmpfs::mount() else { return };
    let root = fs.path().join("cas");
    let store = DiskStore::open_with(&root, SizeBound::default()).unwrap();
    let ninety = FS_BYTES * 9 / 10;
    assert!(
        store.max_bytes().abs_diff(ninety) < 1 << 20,
        "{} vs {ninety}",
        store.max_bytes()
    );
    // What the store holds counts as room: reopened holding 20 MiB, the
    // bound is those 20 MiB plus 90 % of what is still free.
    let stack = VerifyingStore::new(Arc::new(store.clone()));
    for i in 0..5 {
        let (data, d) = blob(100 + i, 4 << 20);
        stack.put(&ctx(), &d, data).await.unwrap();
    }
    drop((stack, store));
    let reopened = DiskStore::open_with(&root, SizeBound::default()).unwrap();
    assert_eq!(reopened.len(), 5);
    let free = corral_cas::store::disk::free_bytes(&root).unwrap();
    let expected = (20 << 20) + free * 9 / 10;
    assert!(
        reopened.max_bytes().abs_diff(expected) < 1 << 20,
        "{} vs {expected}",
        reopened.max_bytes()
    );
}
