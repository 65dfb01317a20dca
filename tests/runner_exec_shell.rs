//! `corral runner exec --shell` through a real pseudo-terminal: the shell's
//! terminal is made in the container's own devpts, so the shell can name
//! it (`tty` prints a `/dev/pts` path instead of "not a tty") and holds it
//! as its controlling terminal (`/dev/tty` opens).
//!
//! Runs as root (CI does) with Debian's busybox-static.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_integration::bench::sandbox::busybox_root;

/// Everything the master side reads until `done` appears or the time is up.
fn read_until(master: &mut std::fs::File, done: &str, patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            // EIO once the slave side is closed everywhere.
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&seen).contains(done) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn the_shell_names_its_terminal_in_the_containers_devpts() {
    assert!(nix::unistd::geteuid().is_root(), "runs as root, as CI does");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root).unwrap();

    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut master = std::fs::File::from(pty.master);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args(["runner", "exec", "--shell", "--root"])
        .arg(&root)
        .env("RUST_LOG", "error")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; the closure runs in
    // the forked child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);

    // Shell, prompt or not: ask, then leave.
    master
        .write_all(b"tty; echo ctty > /dev/tty && echo ctty-ok; echo END-OF-TEST; exit 7\n")
        .unwrap();
    let seen = read_until(&mut master, "END-OF-TEST\r\n", Duration::from_secs(30));
    let status = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "runner exec did not end:\n{seen}"
            );
            // Keep draining, so that the shell never blocks on a full pty.
            let _ = read_until(&mut master, "\u{0}", Duration::from_millis(50));
        }
    };
    assert!(
        seen.lines().any(|l| l.trim_end().starts_with("/dev/pts/")),
        "tty did not name a /dev/pts terminal:\n{seen}"
    );
    assert!(!seen.contains("not a tty"), "{seen}");
    assert!(seen.contains("ctty-ok"), "/dev/tty did not open:\n{seen}");
    assert_eq!(status.code(), Some(7), "{seen}");
}
