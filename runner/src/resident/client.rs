//! The caller's side: reach the service, starting it when none answers,
//! hand it the call with the caller's streams, and wait for the answer.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

use super::{Answer, Call, Place, Scratch};
use crate::error::{Error, Result};
use crate::packet;
use crate::request::{Outcome, SandboxRequest};

/// How long a new service may take to answer (it probes the host, removes
/// what dead runs left and forks its helper first).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// The largest answer read (an outcome is a few hundred bytes; an error
/// message a few more).
const MAX_ANSWER: usize = 64 << 10;

fn connect(path: &Path) -> nix::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// A connection to the service at `place`, which is started (its program's
/// `runner resident`, with `config`) if none answers there.
pub fn connect_or_start(place: &Place, config: Option<&Path>) -> Result<OwnedFd> {
    if let Ok(conn) = connect(&place.socket) {
        return Ok(conn);
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&place.lock)
        .map_err(|e| Error::io(format!("open {}", place.lock.display()), e))?;
    // SAFETY: flock on a descriptor this function owns; the lock goes
    // with the descriptor when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::sys(
            format!("lock {}", place.lock.display()),
            Errno::last(),
        ));
    }
    // Another caller may have started it while this one waited.
    if let Ok(conn) = connect(&place.socket) {
        return Ok(conn);
    }
    start(place, config)
}

/// Starts the service in a session of its own (the terminal's signals are
/// not for it), its stderr to the place's log, and connects once it
/// listens.
fn start(place: &Place, config: Option<&Path>) -> Result<OwnedFd> {
    let log = std::fs::File::create(&place.log)
        .map_err(|e| Error::io(format!("create {}", place.log.display()), e))?;
    let mut cmd = Command::new(&place.program);
    cmd.args(["runner", "resident", "--socket"])
        .arg(&place.socket);
    match config {
        Some(path) => {
            cmd.arg("--config").arg(path);
        }
        // Its working directory matters only to a configuration's
        // relative paths; without one it holds on to none.
        None => {
            cmd.current_dir("/");
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe and touches no memory of the
    // forked child.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        })
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("start the exec service", e))?;
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        if let Ok(conn) = connect(&place.socket) {
            return Ok(conn);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Service(format!(
                "the exec service stopped as it started ({status}): {}",
                log_tail(&place.log)
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Service(format!(
                "the exec service did not listen on {} within {} s (its log: {})",
                place.socket.display(),
                START_PATIENCE.as_secs(),
                place.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// Sends `request` on `conn` with `streams` (which its
/// [`crate::Stdio::Passed`] streams index) and waits for the outcome;
/// `scratch` says where the run's scratch directory comes from.
pub fn call(
    conn: &OwnedFd,
    request: SandboxRequest,
    streams: &[RawFd],
    scratch: Scratch,
) -> Result<Outcome> {
    let bytes = serde_json::to_vec(&Call { request, scratch })
        .map_err(|e| Error::InvalidRequest(format!("encode the call: {e}")))?;
    // A service killed as this caller connected may still hold its
    // listening socket while its threads exit: it accepts, then closes
    // with the call unread, which the kernel reports as a reset.
    let not_taken = |e: Errno, what: &str| match e {
        Errno::ECONNRESET | Errno::EPIPE => Error::NotTaken(format!("{what}: {e}")),
        _ => Error::sys(what.to_string(), e),
    };
    packet::send(conn.as_raw_fd(), &bytes, streams, MsgFlags::empty())
        .map_err(|e| not_taken(e, "send the call to the exec service"))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let (n, _) = packet::recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty())
        .map_err(|e| not_taken(e, "read the exec service's answer"))?;
    if n == 0 {
        return Err(Error::Service(
            "the exec service went away without answering".into(),
        ));
    }
    let answer: Answer = serde_json::from_slice(&buf[..n])
        .map_err(|e| Error::Service(format!("undecodable answer from the exec service: {e}")))?;
    answer.map_err(Error::Service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Host, RunnerConfig};

    /// A request as the service would get one (only its encoding matters).
    fn request(tmp: &Path) -> SandboxRequest {
        let (root, scratch) = (tmp.join("root"), tmp.join("scratch"));
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        let host = Host::probe(&RunnerConfig::default()).unwrap();
        let pb = crate::service::tests::run_request(&root, &scratch, &tmp.join("out"), "true");
        crate::service::to_sandbox_request(&host, pb).unwrap()
    }

    /// A service that accepts one connection, waits for the call, and
    /// then reads it or not before closing.
    fn service(socket: &Path, reads: bool) -> std::thread::JoinHandle<()> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(socket).unwrap()).unwrap();
        socket::listen(&fd, socket::Backlog::new(1).unwrap()).unwrap();
        std::thread::spawn(move || {
            let raw = socket::accept(fd.as_raw_fd()).unwrap();
            // SAFETY: accept returned a new descriptor owned here alone.
            let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
            // Until the call is there, read or not.
            let mut peek = [0u8; 1];
            socket::recv(conn.as_raw_fd(), &mut peek, MsgFlags::MSG_PEEK).unwrap();
            if reads {
                let mut buf = vec![0u8; MAX_ANSWER];
                packet::recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            }
        })
    }

    #[test]
    fn a_call_closed_unread_was_not_taken_and_one_read_was() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request(tmp.path());
        for (reads, taken) in [(false, false), (true, true)] {
            let socket = tmp.path().join(format!("{reads}.sock"));
            let served = service(&socket, reads);
            let conn = connect(&socket).unwrap();
            let e = call(&conn, req.clone(), &[], Scratch::Given).unwrap_err();
            served.join().unwrap();
            assert_eq!(!matches!(e, Error::NotTaken(_)), taken, "{e}");
            if taken {
                assert!(e.to_string().contains("went away without answering"), "{e}");
            }
        }
    }
}
