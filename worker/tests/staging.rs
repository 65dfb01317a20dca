//! Input staging against a real CAS (corral-cas services on loopback).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;
use corral_worker::stage::StagerOptions;
use corral_worker::testkit::{upload_wide_tree, DirBuilder, LoopbackCas};
use corral_worker::validate::SymlinkPolicy;
use corral_worker::{LocalCas, LocalCasOptions, RemoteCas, Stager};

const SHA: DigestFunction = DigestFunction::Sha256;

async fn stager(cas: &LoopbackCas, dir: &Path, policy: SymlinkPolicy) -> Stager {
    let remote = RemoteCas::connect(&cas.url, "").await.unwrap();
    let options = LocalCasOptions {
        max_bytes: 1 << 30,
        max_exec_bytes: 1 << 30,
        parallel_fetches: 4,
    };
    let local = LocalCas::open(&dir.join("cas"), &options, remote).unwrap();
    Stager::open(
        local,
        dir.join("trees"),
        StagerOptions {
            policy,
            max_files: 1_000_000,
            owner: None,
        },
    )
    .unwrap()
}

fn mtime(secs: i64) -> reapi::NodeProperties {
    reapi::NodeProperties {
        mtime: Some(corral_proto::protobuf::Timestamp {
            seconds: secs,
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_every_kind_of_node_and_reuses_the_tree() {
    let cas = LoopbackCas::start(None).await.unwrap();
    let hello = cas.put(&b"hello\n"[..]).await.unwrap();
    let script = cas.put(&b"#!/bin/sh\necho hi\n"[..]).await.unwrap();
    let empty = cas.put(&b""[..]).await.unwrap();
    let empty_dir = DirBuilder::new().upload(&cas).await.unwrap();
    let ro = DirBuilder::new()
        .file("data", &hello, false)
        .properties(reapi::NodeProperties {
            properties: vec![reapi::NodeProperty {
                name: "SubtreeReadOnly".into(),
                value: "true".into(),
            }],
            unix_mode: Some(corral_proto::protobuf::UInt32Value { value: 0o750 }),
            ..Default::default()
        })
        .upload(&cas)
        .await
        .unwrap();
    let root = DirBuilder::new()
        .file("hello.txt", &hello, false)
        .file("run.sh", &script, true)
        .file("empty", &empty, false)
        .file_with("dated", &hello, mtime(1_000_000))
        .symlink("link", "hello.txt")
        .symlink("abs", "/etc/passwd")
        .dir("tmp", &empty_dir)
        .dir("ro", &ro)
        .upload(&cas)
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let stager = stager(&cas, work.path(), SymlinkPolicy::default()).await;
    let staged = stager.stage(SHA, root).await.unwrap();
    assert!(!staged.reused);
    let p = staged.path.clone();
    assert_eq!(fs::read(p.join("hello.txt")).unwrap(), b"hello\n");
    assert_eq!(fs::read(p.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(p.join("link")).unwrap(),
        Path::new("hello.txt")
    );
    assert_eq!(
        fs::read_link(p.join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::read_dir(p.join("tmp")).unwrap().next().is_none());
    assert_eq!(fs::read(p.join("ro/data")).unwrap(), b"hello\n");
    assert_eq!(fs::metadata(p.join("ro")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(staged.read_only_subtrees, vec!["ro".to_string()]);

    // Plain files are hardlinks of the local CAS blob (mode 0444); the
    // executable one is a separate 0555 inode; the dated one a private copy.
    let blob = stager.cas().store().path(&hello);
    let blob_meta = fs::metadata(&blob).unwrap();
    let hello_meta = fs::metadata(p.join("hello.txt")).unwrap();
    assert_eq!(hello_meta.ino(), blob_meta.ino());
    assert_eq!(hello_meta.mode() & 0o777, 0o444);
    let run = fs::metadata(p.join("run.sh")).unwrap();
    assert_eq!(run.mode() & 0o777, 0o555);
    let script_blob = fs::metadata(stager.cas().store().path(&script)).unwrap();
    assert_ne!(run.ino(), script_blob.ino());
    assert_eq!(
        script_blob.mode() & 0o777,
        0o444,
        "a shared inode was chmod'ed"
    );
    let dated = fs::metadata(p.join("dated")).unwrap();
    assert_ne!(dated.ino(), blob_meta.ino());
    assert_eq!(dated.mtime(), 1_000_000);
    assert_ne!(blob_meta.mtime(), 1_000_000);

    // The same root again: the same staged directory, nothing rebuilt.
    let again = stager.stage(SHA, root).await.unwrap();
    assert!(again.reused);
    assert_eq!(again.path, p);
    drop(staged);
    drop(again);
    assert_eq!(stager.usage().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stagings_share_fetches_and_large_blobs_stream() {
    // A 256 KiB batch limit makes the 1 MiB blob go through ByteStream.
    let cas = LoopbackCas::start(Some(256 << 10)).await.unwrap();
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let big_digest = cas.put(big.clone()).await.unwrap();
    let sub = upload_wide_tree(&cas, 4, 50, 100, 1).await.unwrap();
    let root = DirBuilder::new()
        .file("big.bin", &big_digest, false)
        .dir("src", &sub)
        .upload(&cas)
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let stager = stager(&cas, work.path(), SymlinkPolicy::default()).await;
    let (a, b) = tokio::join!(stager.stage(SHA, root), stager.stage(SHA, root));
    let (a, b) = (a.unwrap(), b.unwrap());
    // Both leases name one directory; exactly one of them built it.
    assert_eq!(a.path, b.path);
    assert!(!(a.reused && b.reused), "nobody built the tree");
    assert_eq!(fs::read(a.path.join("big.bin")).unwrap(), big);
    assert_eq!(a.files, 201);
    // 200 small files + 1 large + 6 directories, each held once locally.
    assert_eq!(stager.cas().store().len(), 201 + 6);
    let leftovers: Vec<_> = fs::read_dir(work.path().join("trees")).unwrap().collect();
    drop((a, b));
    assert!(leftovers.len() <= 2);
}

async fn stage_err(cas: &LoopbackCas, root: Digest, policy: SymlinkPolicy) -> corral_worker::Error {
    let work = tempfile::tempdir().unwrap();
    let stager = stager(cas, work.path(), policy).await;
    let err = match stager.stage(SHA, root).await {
        Ok(_) => panic!("a hostile tree was staged"),
        Err(e) => e,
    };
    // Nothing half-made is left behind.
    assert_eq!(fs::read_dir(work.path().join("trees")).unwrap().count(), 0);
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_trees_are_rejected_with_a_clear_error() {
    let cas = LoopbackCas::start(None).await.unwrap();
    let f = cas.put(&b"x"[..]).await.unwrap();
    let cases: Vec<(reapi::Directory, &str)> = vec![
        (DirBuilder::new().file("..", &f, false).build(), "`..`"),
        (DirBuilder::new().file("a/b", &f, false).build(), "`/`"),
        (DirBuilder::new().file("", &f, false).build(), "empty"),
        (DirBuilder::new().symlink("a\0b", "x").build(), "NUL"),
        (
            DirBuilder::new()
                .file("twice", &f, false)
                .symlink("twice", "x")
                .build(),
            "twice",
        ),
        (
            DirBuilder::new().symlink("l", "").build(),
            "target is empty",
        ),
    ];
    for (dir, why) in cases {
        let root = cas.put_message(&dir).await.unwrap();
        let e = stage_err(&cas, root, SymlinkPolicy::default()).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains(why), "{e} should say {why}");
    }
    // Hostile names one level down name their path.
    let bad = cas
        .put_message(&DirBuilder::new().file(".", &f, false).build())
        .await
        .unwrap();
    let root = DirBuilder::new()
        .dir("sub", &bad)
        .upload(&cas)
        .await
        .unwrap();
    let e = stage_err(&cas, root, SymlinkPolicy::default()).await;
    assert!(e.to_string().contains("input_root:sub/."), "{e}");

    // Absolute symlinks only when the policy allows them.
    let root = DirBuilder::new()
        .symlink("etc", "/etc")
        .upload(&cas)
        .await
        .unwrap();
    let e = stage_err(
        &cas,
        root,
        SymlinkPolicy {
            allow_absolute: false,
        },
    )
    .await;
    assert!(e.to_string().contains("absolute symlink"), "{e}");

    // A missing file blob and a missing root are FAILED_PRECONDITION.
    let ghost = Digest::of_bytes(SHA, b"never uploaded");
    let root = DirBuilder::new()
        .file("ghost", &ghost, false)
        .upload(&cas)
        .await
        .unwrap();
    let e = stage_err(&cas, root, SymlinkPolicy::default()).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains(&ghost.hash_hex()), "{e}");
    let e = stage_err(&cas, ghost, SymlinkPolicy::default()).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");

    // A blob that is not a Directory.
    let e = stage_err(&cas, f, SymlinkPolicy::default()).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_trees_are_removed_and_leased_ones_kept() {
    let cas = LoopbackCas::start(None).await.unwrap();
    let one = upload_wide_tree(&cas, 1, 10, 10, 1).await.unwrap();
    let two = upload_wide_tree(&cas, 1, 10, 10, 2).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let remote = RemoteCas::connect(&cas.url, "").await.unwrap();
    let options = LocalCasOptions {
        max_bytes: 1 << 30,
        max_exec_bytes: 1 << 30,
        parallel_fetches: 2,
    };
    let local = LocalCas::open(&work.path().join("cas"), &options, remote).unwrap();
    // Room for one 10-file tree only.
    let stager = Stager::open(
        local,
        work.path().join("trees"),
        StagerOptions {
            policy: SymlinkPolicy::default(),
            max_files: 10,
            owner: None,
        },
    )
    .unwrap();
    let a = stager.stage(SHA, one).await.unwrap();
    let b = stager.stage(SHA, two).await.unwrap();
    // Both leased: both kept, over budget.
    assert_eq!(stager.usage().0, 2);
    let a_path = a.path.clone();
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(stager.usage().0, 1);
    assert!(!a_path.exists(), "evicted tree still on disk");
    assert!(b.path.join("d0000/f00000.c").exists());
    // Files are read-only and directories can still be removed by the cache.
    let mode = fs::metadata(b.path.join("d0000/f00001.c"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0);
}

fn read_only(value: &str) -> reapi::NodeProperties {
    reapi::NodeProperties {
        properties: vec![reapi::NodeProperty {
            name: "SubtreeReadOnly".into(),
            value: value.into(),
        }],
        ..Default::default()
    }
}

/// BuildStream's shape: the root read-only, the directories a command
/// writes marked false, and a read-only region again below one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_subtree_read_only_regions_are_reported_where_they_change() {
    let cas = LoopbackCas::start(None).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let locked = DirBuilder::new()
        .properties(read_only("true"))
        .upload(&cas)
        .await
        .unwrap();
    let install = DirBuilder::new()
        .dir("locked", &locked)
        .properties(read_only("false"))
        .upload(&cas)
        .await
        .unwrap();
    // Says false inside a writable region: no change, nothing to mount.
    let scratch = DirBuilder::new()
        .properties(read_only("false"))
        .upload(&cas)
        .await
        .unwrap();
    let plain = DirBuilder::new().upload(&cas).await.unwrap();
    let root = DirBuilder::new()
        .dir("install", &install)
        .dir("usr", &plain)
        .properties(read_only("true"))
        .upload(&cas)
        .await
        .unwrap();
    let top = DirBuilder::new()
        .dir("sysroot", &root)
        .dir("scratch", &scratch)
        .upload(&cas)
        .await
        .unwrap();
    let stager = stager(&cas, work.path(), SymlinkPolicy::default()).await;
    let staged = stager.stage(SHA, top).await.unwrap();
    assert_eq!(
        staged.read_only_subtrees,
        vec!["sysroot".to_string(), "sysroot/install/locked".to_string()]
    );
    assert_eq!(
        staged.writable_subtrees,
        vec!["sysroot/install".to_string()]
    );
}

/// Links ext4 allows one inode (the kernel's EXT4_LINK_MAX).
const EXT4_LINK_MAX: u64 = 65_000;

/// A directory on the file system of the target directory (ext4 on the
/// build machines), not /tmp, which may be tmpfs: tmpfs has no link limit.
/// None, with a note, if that file system is not ext2/3/4 either.
fn ext4_dir() -> Option<tempfile::TempDir> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fs_type = nix::sys::statfs::statfs(base).unwrap().filesystem_type();
    if fs_type != nix::sys::statfs::EXT4_SUPER_MAGIC {
        // CI runs on ext4: there the test must never pass without running.
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is not ext4 in CI, so the link limit cannot be tested",
            base.display()
        );
        eprintln!(
            "skipped: {} is not ext4, so no link would be refused",
            base.display()
        );
        return None;
    }
    Some(tempfile::tempdir_in(base).unwrap())
}

/// The real case: one Directory holding the empty file 200,000 times, a
/// third of them executable. The kernel refuses the 65,000th link of the
/// cache file and of its executable variant (EMLINK), and the rest are
/// linked from copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_repeats_of_a_blob_than_an_inode_takes_links() {
    const FILES: usize = 200_000;
    let Some(work) = ext4_dir() else { return };
    let cas = LoopbackCas::start(None).await.unwrap();
    let empty = cas.put(&b""[..]).await.unwrap();
    let mut dir = DirBuilder::new();
    for i in 0..FILES {
        dir = dir.file(&format!("e{i:06}"), &empty, i.is_multiple_of(3));
    }
    let root = dir.upload(&cas).await.unwrap();
    let stager = stager(&cas, work.path(), SymlinkPolicy::default()).await;

    let started = Instant::now();
    let staged = stager.stage(SHA, root).await.unwrap();
    eprintln!("staged {FILES} empty files in {:?}", started.elapsed());
    assert_eq!(staged.files, FILES as u64);

    // Both cache inodes took links up to the limit, not beyond.
    let blob = fs::metadata(stager.cas().store().path(&empty)).unwrap();
    let exec = fs::read_dir(work.path().join("cas/exec"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(exec.len(), 1);
    assert_eq!(blob.nlink(), EXT4_LINK_MAX, "no link was refused");
    assert_eq!(exec[0].nlink(), EXT4_LINK_MAX, "no link was refused");

    // Every file is there, empty, read-only, the worker's, with its
    // executable bit; no inode is over the limit.
    let uid = nix::unistd::geteuid().as_raw();
    let mut per_inode: HashMap<u64, u64> = HashMap::new();
    for entry in fs::read_dir(&staged.path).unwrap() {
        let entry = entry.unwrap();
        let m = entry.metadata().unwrap();
        let name = entry.file_name().into_string().unwrap();
        let i: usize = name[1..].parse().unwrap();
        assert!(m.is_file() && m.len() == 0, "{name}");
        let mode = if i.is_multiple_of(3) { 0o555 } else { 0o444 };
        assert_eq!(m.mode() & 0o7777, mode, "{name}");
        assert_eq!(m.uid(), uid, "{name}");
        assert!(m.nlink() <= EXT4_LINK_MAX, "{name}");
        *per_inode.entry(m.ino()).or_default() += 1;
    }
    assert_eq!(per_inode.values().sum::<u64>(), FILES as u64);
    assert_eq!(per_inode[&blob.ino()], EXT4_LINK_MAX - 1);
    assert_eq!(per_inode[&exec[0].ino()], EXT4_LINK_MAX - 1);
    // 133,333 plain and 66,667 executable files: two plain copies and one
    // executable one take what the cache files could not.
    assert_eq!(per_inode.len(), 2 + 3, "{per_inode:?}");
    // The copies' own directory is gone: only the tree is left.
    assert_eq!(fs::read_dir(work.path().join("trees")).unwrap().count(), 1);

    // Another tree while the cache file is full: copies from the first file.
    let small = DirBuilder::new()
        .file("a", &empty, false)
        .file("b", &empty, false)
        .upload(&cas)
        .await
        .unwrap();
    let other = stager.stage(SHA, small).await.unwrap();
    let (a, b) = (
        fs::metadata(other.path.join("a")).unwrap(),
        fs::metadata(other.path.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_ne!(a.ino(), blob.ino());
    assert_eq!((a.mode() & 0o7777, a.len()), (0o444, 0));
    assert_eq!(
        fs::metadata(stager.cas().store().path(&empty))
            .unwrap()
            .nlink(),
        EXT4_LINK_MAX
    );
}

/// A blob the remote lacks is `MissingBlob` for every caller wanting it at
/// once, the ones waiting on another's fetch included: the waiters learn
/// it from the fetch's outcome, not from its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_blob_is_missing_for_every_concurrent_caller() {
    let cas = LoopbackCas::start(None).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let stager = stager(&cas, work.path(), SymlinkPolicy::default()).await;
    let absent = Digest::of_bytes(SHA, b"never uploaded");
    let ctx = corral_worker::testkit::ctx();
    let local = stager.cas();
    let wanted = [absent];
    let results = futures::future::join_all((0..4).map(|_| local.ensure(&ctx, &wanted))).await;
    for r in results {
        let e = r.unwrap_err();
        assert!(e.is_missing_blob(), "{e}");
    }
}
