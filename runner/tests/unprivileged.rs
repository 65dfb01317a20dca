//! The sandbox made by an unprivileged runner: the test (root in CI) forks,
//! drops to uid/gid 65534 with no supplementary groups, and runs the same
//! code path a runner started by a plain user would.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use corral_runner::{Host, RunnerConfig};

const NOBODY: u32 = 65534;

/// Runs `f` in a child that has dropped to uid/gid 65534; returns what it
/// printed to the pipe and whether it exited 0.
fn as_nobody(f: impl FnOnce() -> Result<String, String>) -> (bool, String) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to drop to uid 65534 (CI runs as root)"
    );
    let (r, w) = nix::unistd::pipe().unwrap();
    // SAFETY: the test is the only thread that does work in this process
    // (nextest runs one test per process); the child only drops privileges
    // and runs the sandbox code, which forks again.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let gid = nix::unistd::Gid::from_raw(NOBODY);
            let uid = nix::unistd::Uid::from_raw(NOBODY);
            let result = nix::unistd::setgroups(&[])
                .and_then(|_| nix::unistd::setresgid(gid, gid, gid))
                .and_then(|_| nix::unistd::setresuid(uid, uid, uid))
                .map_err(|e| format!("drop to 65534: {e}"))
                .and_then(|_| f());
            let (code, text) = match result {
                Ok(t) => (0, t),
                Err(t) => (1, t),
            };
            let _ = nix::unistd::write(&w, text.as_bytes());
            // SAFETY: leave the forked test process without running the
            // test harness's exit handlers.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut text = String::new();
            std::fs::File::from(r).read_to_string(&mut text).unwrap();
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            (
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                text,
            )
        }
    }
}

fn open_dir(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unprivileged_runner_makes_a_confined_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    open_dir(tmp.path());
    let root = tmp.path().join("root");
    common::busybox_root(&root);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    nix::unistd::chown(&scratch, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let out = scratch.join("out");
    let req = common::request(
        &root,
        &scratch,
        &out,
        "id -u; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; echo hi > /written",
    );
    let (ok, text) = as_nobody(|| {
        let host = Host::probe(&RunnerConfig::default()).map_err(|e| e.to_string())?;
        // SAFETY: this runs in `as_nobody`'s forked child, which has a
        // single thread.
        let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "{outcome:?}\n{}",
            host.enforced_limits().join("\n")
        ))
    });
    assert!(ok, "unprivileged run failed: {text}");
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        stdout, "0\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n",
        "{text}"
    );
    assert!(text.contains("exit_code: Some(0)"), "{text}");
    // Written through the overlay, owned by the unprivileged user.
    let written = scratch.join("upper/written");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "hi\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), NOBODY);
    assert!(!root.join("written").exists());
}
