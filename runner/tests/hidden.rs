//! Host paths the runner hides (`hidden_paths`, which `corral worker`
//! fills with its key, token and data directory) cannot be read by an
//! action whose root binds the host's directories, even when the files'
//! modes would let anyone read them; their neighbours stay readable.
//!
//! As root (CI runs as root): the secrets are placed under `/etc`, which
//! the default profile binds into a host root.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_runner::{Host, Rootfs, RunnerConfig};

/// A directory under `/etc`, removed when dropped.
struct EtcDir(PathBuf);

impl Drop for EtcDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn hidden_host_paths_cannot_be_read_from_a_host_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let etc = EtcDir(PathBuf::from(format!(
        "/etc/corral-test-hidden-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(etc.0.join("keys")).unwrap();
    std::fs::set_permissions(&etc.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(etc.0.join("keys"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // World-readable on purpose: only the hiding protects them.
    write(&etc.0.join("worker.key"), "SECRET-KEY", 0o644);
    write(&etc.0.join("keys/other.key"), "SECRET-IN-DIR", 0o644);
    write(&etc.0.join("public.txt"), "PUBLIC", 0o644);

    let hidden = vec![etc.0.join("worker.key"), etc.0.join("keys")];
    let d = etc.0.display();
    let script = format!(
        "cat {d}/worker.key; echo \"key:$?\"; \
         cat {d}/keys/other.key; echo \"dir-file:$?\"; \
         ls -A {d}/keys; echo \"dir:$?\"; \
         cat {d}/public.txt; echo; \
         ls -A / | grep -c corral-hidden"
    );

    // Without hiding, the modes let the action read them: the test would
    // notice if the hiding stopped working.
    let (_, stdout, stderr) = run(None, &script);
    assert!(
        stdout.contains("SECRET-KEY") && stdout.contains("SECRET-IN-DIR"),
        "{stdout}{stderr}"
    );

    let (outcome, stdout, stderr) = run(Some(hidden), &script);
    assert!(!stdout.contains("SECRET"), "{stdout}{stderr}");
    for refused in ["key:1", "dir-file:1", "dir:"] {
        assert!(stdout.contains(refused), "{refused}: {stdout}{stderr}");
    }
    assert!(
        !stdout.contains("dir:0"),
        "the hidden directory listed: {stdout}"
    );
    assert!(
        stdout.contains("PUBLIC"),
        "a neighbour was hidden: {stdout}"
    );
    // The cover file left nothing in `/`.
    assert!(stdout.ends_with("0\n"), "{stdout}");
    assert_eq!(
        outcome.exit_code,
        Some(1),
        "grep -c found none: {stdout}{stderr}"
    );
}

/// Runs `script` in a host root with `hidden_paths`; returns the outcome,
/// stdout and stderr.
fn run(hidden: Option<Vec<PathBuf>>, script: &str) -> (corral_runner::Outcome, String, String) {
    let config = RunnerConfig {
        hidden_paths: hidden,
        ..RunnerConfig::default()
    };
    let host = Host::probe(&config).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let input = tmp.path().join("input");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&input).unwrap();
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.path().join("out");
    let mut req = common::request(&input, &scratch, &out, script);
    req.rootfs = Rootfs::Host;
    req.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    (outcome, stdout, stderr)
}
