//! Runs real containers through `isolate::run_forked`, as root (CI) in a
//! busybox root. The full escape suite lives in the root package's
//! tests/sandbox_escape.rs.

mod common;

use std::path::PathBuf;

use common::{busybox_root, request};
use corral_runner::{Host, RunnerConfig};

#[test]
fn echo_in_busybox_root() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let req = request(&root, &scratch, &out, "echo hello; id; cat /proc/self/status | grep -E 'Seccomp|NoNewPrivs|Cap'; hostname; echo x > /new; exit 3");
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap();
    eprintln!("{outcome:?}\n{stdout}\n{stderr}");
    assert_eq!(outcome.exit_code, Some(3));
    assert!(stdout.starts_with("hello\n"));
}

#[test]
fn writable_exceptions_inside_a_read_only_root() {
    // BuildStream marks the whole input root SubtreeReadOnly and the
    // directories a command must write (install root, build dir) false.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    for d in ["dev", "proc", "tmp", "install/locked"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    for d in ["", "install", "install/locked"] {
        nix::unistd::chown(
            &root.join(d),
            Some(host.map_uid.into()),
            Some(host.map_gid.into()),
        )
        .unwrap();
    }
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let mut req = request(
        &root,
        &scratch,
        &out,
        "touch /new 2>/dev/null && echo ROOT-WRITABLE; \
         touch /install/ok && echo install-ok; \
         touch /install/locked/x 2>/dev/null && echo LOCKED-WRITABLE; \
         echo t > /tmp/t && echo tmp-ok; echo > /dev/null && echo dev-ok; \
         test -r /proc/self/status && echo proc-ok",
    );
    req.rootfs = corral_runner::Rootfs::InputRoot;
    req.read_only_subtrees = vec!["".into(), "install/locked".into()];
    req.writable_subtrees = vec!["install".into()];
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(stdout, "install-ok\ntmp-ok\ndev-ok\nproc-ok\n", "{stderr}");
    // The write went to the overlay's upper directory, not the input root.
    assert!(!root.join("install/ok").exists());
    assert!(scratch.join("upper/install/ok").exists());
}

#[test]
fn subtree_paths_through_symlinks_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    std::os::unix::fs::symlink("/etc", root.join("sneaky")).unwrap();
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let mut req = request(&root, &scratch, &out, "true");
    req.writable_subtrees = vec!["sneaky".into()];
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let err = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap_err();
    assert!(err.to_string().contains("sneaky"), "{err}");
}

#[test]
fn read_only_subtree_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    std::fs::create_dir(root.join("ro")).unwrap();
    std::fs::write(root.join("ro/file"), "ro\n").unwrap();
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    nix::unistd::chown(
        &root.join("ro"),
        Some(host.map_uid.into()),
        Some(host.map_gid.into()),
    )
    .unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let mut req = request(&root, &scratch, &out, "grep ' /ro ' /proc/self/mountinfo; touch /ro/new && echo CREATED; echo x > /ro/file && echo WROTE; true");
    req.read_only_subtrees = vec!["ro".into()];
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{stderr}");
    assert!(
        !stdout.contains("CREATED") && !stdout.contains("WROTE"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("Read-only file system"),
        "{stdout}\n{stderr}"
    );
    assert!(!root.join("ro/new").exists());
}

/// BuildStream's `unixUID`/`unixGID`: the command runs as those ids, with
/// no capability and no way to make another user namespace.
#[test]
fn requested_uid_and_gid_hold_no_capability() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out: PathBuf = tmp.path().join("out");
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let mut req = request(
        &root,
        &scratch,
        &out,
        "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
         unshare -U true 2>/dev/null && echo NESTED-USERNS; true",
    );
    req.uid = 1000;
    req.gid = 1234;
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap();
    assert_eq!(outcome.exit_code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout,
        "1000\n1234\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
        "{stderr}"
    );
}
