//! Output capture through a real overlayfs (mounted here as the runner
//! would), uploads to a real CAS on loopback. Needs root to mount.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_cas::{BlobStore, Digest, DigestFunction};
use corral_proto::reapi;
use corral_worker::capture::{capture, Captured};
use corral_worker::stage::StagerOptions;
use corral_worker::testkit::{ctx, upload, upload_wide_tree, DirBuilder, LoopbackCas};
use corral_worker::validate::SymlinkPolicy;
use corral_worker::{LocalCas, LocalCasOptions, RemoteCas, StagedInput, Stager};
use prost::Message;

const SHA: DigestFunction = DigestFunction::Sha256;

/// An overlay over a staged tree, unmounted on drop.
struct Overlay {
    merged: PathBuf,
    upper: PathBuf,
}

impl Overlay {
    fn mount(lower: &Path, scratch: &Path) -> Overlay {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts overlayfs and needs root (CI runs as root)"
        );
        let (upper, work, merged) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mounting overlayfs");
        Overlay { merged, upper }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.merged);
    }
}

struct Setup {
    cas: LoopbackCas,
    remote: RemoteCas,
    stager: Stager,
    _work: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

async fn setup() -> Setup {
    let cas = LoopbackCas::start(Some(256 << 10)).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let remote = RemoteCas::connect(&cas.url, "").await.unwrap();
    let options = LocalCasOptions {
        max_bytes: 1 << 30,
        max_exec_bytes: 1 << 30,
        parallel_fetches: 4,
    };
    let local = LocalCas::open(&work.path().join("cas"), &options, remote.clone()).unwrap();
    let stager = Stager::open(
        local,
        work.path().join("trees"),
        StagerOptions {
            policy: SymlinkPolicy::default(),
            max_files: 1_000_000,
            owner: None,
        },
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    Setup {
        cas,
        remote,
        stager,
        _work: work,
        scratch,
    }
}

fn command(paths: &[&str]) -> reapi::Command {
    reapi::Command {
        arguments: vec!["true".into()],
        output_paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn fetch<M: Message + Default>(cas: &LoopbackCas, d: &reapi::Digest) -> M {
    let d = Digest::from_proto(SHA, d).unwrap();
    M::decode(cas.store.get(&ctx(), &d).await.unwrap()).unwrap()
}

async fn capture_and_upload(
    s: &Setup,
    cmd: &reapi::Command,
    staged: &StagedInput,
    upper: &Path,
) -> Captured {
    let captured = capture(cmd, &staged.tree, Some(upper.to_path_buf())).unwrap();
    upload(&s.remote, &ctx(), &captured.blobs, 4).await.unwrap();
    // Everything the result names is now in the remote CAS.
    let missing = s
        .cas
        .store
        .find_missing(&ctx(), &captured.blobs.keys().copied().collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(missing.is_empty());
    captured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_of_every_kind_through_an_overlay() {
    let s = setup().await;
    let a = s.cas.put(&b"int a;\n"[..]).await.unwrap();
    let b = s.cas.put(&b"int b;\n"[..]).await.unwrap();
    let old = s.cas.put(&b"old\n"[..]).await.unwrap();
    let src = DirBuilder::new()
        .file("a.c", &a, false)
        .file("b.c", &b, false)
        .upload(&s.cas)
        .await
        .unwrap();
    let lib = DirBuilder::new()
        .file("old.a", &old, false)
        .upload(&s.cas)
        .await
        .unwrap();
    let empty = DirBuilder::new().upload(&s.cas).await.unwrap();
    let root = DirBuilder::new()
        .dir("src", &src)
        .dir("lib", &lib)
        .dir("out", &empty)
        .upload(&s.cas)
        .await
        .unwrap();
    let staged = s.stager.stage(SHA, root).await.unwrap();

    let ov = Overlay::mount(&staged.path, s.scratch.path());
    let m = &ov.merged;
    fs::write(m.join("src/a.c"), b"int a = 1;\n").unwrap();
    fs::remove_file(m.join("src/b.c")).unwrap();
    fs::write(m.join("out/x.o"), vec![7u8; 300 << 10]).unwrap();
    fs::set_permissions(m.join("out/x.o"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("x.o", m.join("out/l")).unwrap();
    fs::remove_dir_all(m.join("lib")).unwrap();
    fs::create_dir(m.join("lib")).unwrap();
    fs::write(m.join("lib/new.a"), b"new\n").unwrap();
    drop(ov.merged.clone());

    let mut cmd = command(&["out/x.o", "out/l", "src", "lib", "missing", "out/../out"]);
    cmd.output_directory_format = reapi::command::OutputDirectoryFormat::TreeAndDirectory as i32;
    let captured = capture_and_upload(&s, &cmd, &staged, &ov.upper).await;
    let r = &captured.result;
    assert_eq!(r.output_files.len(), 1);
    assert_eq!(r.output_files[0].path, "out/x.o");
    assert!(r.output_files[0].is_executable);
    assert_eq!(r.output_symlinks.len(), 1);
    assert_eq!(
        (
            r.output_symlinks[0].path.as_str(),
            r.output_symlinks[0].target.as_str()
        ),
        ("out/l", "x.o")
    );
    let dirs: HashMap<&str, &reapi::OutputDirectory> = r
        .output_directories
        .iter()
        .map(|d| (d.path.as_str(), d))
        .collect();
    assert_eq!(dirs.len(), 3, "{dirs:?}");

    // src: b.c deleted (whiteout), a.c changed.
    let tree: reapi::Tree = fetch(&s.cas, dirs["src"].tree_digest.as_ref().unwrap()).await;
    let src_root = tree.root.unwrap();
    let names: Vec<&str> = src_root.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["a.c"]);
    let a_new = Digest::of_bytes(SHA, b"int a = 1;\n");
    assert_eq!(src_root.files[0].digest, Some(a_new.to_proto()));
    assert_eq!(
        s.cas.store.get(&ctx(), &a_new).await.unwrap().as_ref(),
        b"int a = 1;\n"
    );
    // lib: replaced by a new (opaque) directory: old.a gone.
    let lib_dir: reapi::Directory =
        fetch(&s.cas, dirs["lib"].root_directory_digest.as_ref().unwrap()).await;
    let names: Vec<&str> = lib_dir.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["new.a"]);
    // out/../out: the directory with x.o and the symlink, found through `..`.
    let out_dir: reapi::Directory = fetch(
        &s.cas,
        dirs["out/../out"].root_directory_digest.as_ref().unwrap(),
    )
    .await;
    assert_eq!(out_dir.files[0].name, "x.o");
    assert_eq!(out_dir.symlinks[0].target, "x.o");
    // The 300 KiB file is over the 256 KiB batch limit: it went by ByteStream.
    let x = Digest::from_proto(SHA, r.output_files[0].digest.as_ref().unwrap()).unwrap();
    assert_eq!(s.cas.store.get(&ctx(), &x).await.unwrap().len(), 300 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_input_root_with_one_change_hashes_only_that_file() {
    let s = setup().await;
    let big = upload_wide_tree(&s.cas, 20, 100, 64, 9).await.unwrap();
    let root = DirBuilder::new()
        .dir("src", &big)
        .dir("build", &DirBuilder::new().upload(&s.cas).await.unwrap())
        .upload(&s.cas)
        .await
        .unwrap();
    let staged = s.stager.stage(SHA, root).await.unwrap();
    let ov = Overlay::mount(&staged.path, s.scratch.path());
    fs::write(ov.merged.join("build/result"), b"done\n").unwrap();

    // BuildStream's form: the whole input root, from a working directory,
    // as a Directory only.
    let mut cmd = command(&["../."]);
    cmd.working_directory = "build".into();
    cmd.output_directory_format = reapi::command::OutputDirectoryFormat::DirectoryOnly as i32;
    let captured = capture_and_upload(&s, &cmd, &staged, &ov.upper).await;
    assert_eq!(
        captured.hashed_bytes, 5,
        "capture hashed unchanged input files"
    );
    let r = &captured.result;
    assert!(r.output_files.is_empty() && r.output_symlinks.is_empty());
    assert_eq!(r.output_directories.len(), 1);
    let out = &r.output_directories[0];
    assert!(out.tree_digest.is_none());
    let top: reapi::Directory = fetch(&s.cas, out.root_directory_digest.as_ref().unwrap()).await;
    let names: Vec<&str> = top.directories.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["build", "src"]);
    // The unchanged src subtree has the very digest the client sent.
    assert_eq!(top.directories[1].digest, Some(big.to_proto()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn reapi_2_0_fields_return_exactly_the_kinds_asked() {
    let s = setup().await;
    let root = DirBuilder::new()
        .dir("out", &DirBuilder::new().upload(&s.cas).await.unwrap())
        .upload(&s.cas)
        .await
        .unwrap();
    let staged = s.stager.stage(SHA, root).await.unwrap();
    let ov = Overlay::mount(&staged.path, s.scratch.path());
    fs::write(ov.merged.join("out/f"), b"f\n").unwrap();
    fs::create_dir(ov.merged.join("out/d")).unwrap();
    fs::write(ov.merged.join("out/d/g"), b"g\n").unwrap();
    std::os::unix::fs::symlink("d", ov.merged.join("out/ld")).unwrap();

    let mut cmd = command(&[]);
    cmd.output_files = vec!["out/f".into(), "out/nothing".into()];
    cmd.output_directories = vec!["out/d".into(), "out/ld".into()];
    cmd.output_node_properties = vec!["unix_mode".into()];
    let captured = capture_and_upload(&s, &cmd, &staged, &ov.upper).await;
    let r = &captured.result;
    assert_eq!(r.output_files.len(), 1);
    assert_eq!(
        r.output_files[0]
            .node_properties
            .as_ref()
            .unwrap()
            .unix_mode
            .unwrap()
            .value,
        0o644
    );
    assert_eq!(r.output_directories.len(), 1);
    assert!(
        r.output_directories[0].root_directory_digest.is_none(),
        "TREE_ONLY is the default"
    );
    assert_eq!(r.output_directory_symlinks.len(), 1);
    assert!(r.output_file_symlinks.is_empty());

    // Only directories asked for: no output_files come back (BuildStream).
    let mut cmd = command(&[]);
    cmd.output_directories = vec!["out".into()];
    let r = capture_and_upload(&s, &cmd, &staged, &ov.upper)
        .await
        .result;
    assert!(r.output_files.is_empty());
    assert_eq!(r.output_directories.len(), 1);

    // A directory where a file was asked for is FAILED_PRECONDITION.
    let mut cmd = command(&[]);
    cmd.output_files = vec!["out/d".into()];
    let e = capture(&cmd, &staged.tree, Some(ov.upper.clone())).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    // An output path out of the input root is refused.
    let e = capture(&command(&["../.."]), &staged.tree, Some(ov.upper.clone())).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.to_string().contains("output_paths"), "{e}");
    // A path through a symlink is not followed.
    let r = capture(
        &command(&["out/ld/g"]),
        &staged.tree,
        Some(ov.upper.clone()),
    )
    .unwrap()
    .result;
    assert!(r.output_files.is_empty());
}
