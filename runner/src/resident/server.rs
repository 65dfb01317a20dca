//! The resident service's side: listen, check each caller, run its call
//! through the zygote, answer, and leave when idle or when its socket is
//! no longer its own.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use tokio::io::unix::AsyncFd;

use super::spares::{Refill, Spares};
use super::twin_watch::Handed;
use super::{Answer, Call, Scratch, MAX_CALL};
use crate::error::{Error, Result};
use crate::host::{Host, RunnerConfig};
use crate::packet;
use crate::request::{Descriptor, SandboxRequest, Stdio};
use crate::spec::Layout;
use crate::zygote::Zygote;

/// How often the service looks at its socket and its idle time.
const TICK: Duration = Duration::from_millis(500);

/// The most streams a call sends (stdin, stdout, stderr).
const MAX_STREAMS: usize = 3;

/// What every call shares.
struct Shared {
    host: Host,
    zygote: Zygote,
    /// Scratch directories made ahead of calls.
    spares: Spares,
    /// Calls under way.
    active: AtomicUsize,
    /// When the last call ended (or the service started).
    last: Mutex<Instant>,
}

/// `corral runner resident --socket PATH`: starts the zygote (this process
/// must be single-threaded), then serves calls on `socket` until idle for
/// `idle`, until `socket` is removed or replaced, or until SIGTERM.
pub fn serve_blocking(config: &RunnerConfig, socket: &Path, idle: Duration) -> Result<()> {
    let (host, zygote) = crate::service::start(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let spares = Spares::new(&host)?;
    let shared = Arc::new(Shared {
        host,
        zygote,
        spares,
        active: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    runtime.block_on(async {
        let (listener, inode) = listen(socket)?;
        tracing::info!(socket = %socket.display(), idle_secs = idle.as_secs(), "exec service serving");
        let why = tokio::select! {
            r = accept_until_idle(&shared, listener, socket, inode, idle) => r?,
            _ = crate::service::terminated() => "terminated",
        };
        tracing::info!(why, "exec service leaving");
        remove_if_own(socket, inode);
        Ok(())
    })
}

/// The inode of the socket file at `path`, if one is there.
fn socket_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_socket().then_some(meta.ino())
}

/// A listening socket at `socket`: bound under a name of its own, then
/// renamed into place, so that a caller that finds the socket can connect
/// at once. Returns it and its file's inode.
fn listen(socket: &Path) -> Result<(AsyncFd<OwnedFd>, u64)> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(Error::InvalidRequest(format!(
                "{} exists and is not a socket; refusing to replace it",
                socket.display()
            )));
        }
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| Error::sys("make the exec service's socket", e))?;
    let fresh = socket.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let addr = UnixAddr::new(&fresh).map_err(|e| Error::sys("socket address", e))?;
    socket::bind(fd.as_raw_fd(), &addr)
        .map_err(|e| Error::sys(format!("bind {}", fresh.display()), e))?;
    socket::listen(
        &fd,
        socket::Backlog::new(64).unwrap_or(socket::Backlog::MAXCONN),
    )
    .map_err(|e| Error::sys("listen", e))?;
    std::fs::rename(&fresh, socket)
        .map_err(|e| Error::io(format!("move the socket to {}", socket.display()), e))?;
    let inode = socket_inode(socket).ok_or_else(|| {
        Error::InvalidRequest(format!("{} vanished as it was made", socket.display()))
    })?;
    Ok((watch(fd)?, inode))
}

/// `fd`, non-blocking, registered with the runtime.
fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes `fd` over and is the only one to close it,
    // once it is deregistered; nothing replaces the descriptor meanwhile.
    unsafe { AsyncFd::register(fd) }.map_err(|e| {
        Error::io(
            "register a socket with the runtime",
            std::io::Error::from(e),
        )
    })
}

/// Accepts calls, each served on a task of its own, until the service has
/// been idle for `idle` or its socket file is no longer its own; says
/// which.
async fn accept_until_idle(
    shared: &Arc<Shared>,
    listener: AsyncFd<OwnedFd>,
    socket: &Path,
    inode: u64,
    idle: Duration,
) -> Result<&'static str> {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            ready = listener.readable() => {
                let mut guard = ready.map_err(|e| Error::io("wait for callers", e))?;
                match accept(shared, &listener) {
                    Ok(()) => {}
                    Err(Errno::EAGAIN) => guard.clear_ready(),
                    Err(e) => tracing::warn!(error = %e, "accept"),
                }
            }
            _ = tick.tick() => {
                if socket_inode(socket) != Some(inode) {
                    return Ok("its socket was removed or replaced");
                }
                if !shared.zygote.is_alive() {
                    return Err(Error::Zygote("the container helper (zygote) exited".into()));
                }
                let since = shared.last.lock().map(|t| t.elapsed()).unwrap_or_default();
                if shared.active.load(Ordering::SeqCst) == 0 && since >= idle {
                    remove_if_own(socket, inode);
                    drain(shared, &listener).await;
                    return Ok("idle");
                }
            }
        }
    }
}

/// Takes one waiting caller, if there is one (else `EAGAIN`), and serves
/// its call on a task of its own.
fn accept(shared: &Arc<Shared>, listener: &AsyncFd<OwnedFd>) -> nix::Result<()> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let raw = socket::accept4(listener.as_raw_fd(), flags)?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let conn = unsafe { OwnedFd::from_raw_fd(raw) };
    shared.active.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(serve_call(shared.clone(), conn));
    Ok(())
}

/// Removes the socket file at `socket` if it is still this service's
/// (inode `inode`), never one another service put there since.
fn remove_if_own(socket: &Path, inode: u64) {
    if socket_inode(socket) == Some(inode) {
        let _ = std::fs::remove_file(socket);
    }
}

/// Serves the callers that connected before the socket's file was
/// removed, until no call is left: each was promised an answer.
async fn drain(shared: &Arc<Shared>, listener: &AsyncFd<OwnedFd>) {
    while accept(shared, listener).is_ok() {}
    while shared.active.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What is left to do once a call is answered (or its caller is gone).
#[derive(Default)]
struct After {
    /// The scratch directory to reuse or remove (none when kept).
    done_with: Option<PathBuf>,
    /// The spare to make for the next call like this one.
    refill: Option<Refill>,
    /// Whether the scratch directory may become that spare.
    reuse: bool,
}

impl After {
    /// The same, but with the scratch directory removed rather than
    /// reused: a cancelled or failed run may still be writing to it.
    fn not_reused(mut self) -> After {
        self.reuse = false;
        self
    }

    /// Does it, off the runtime's threads.
    async fn run(self, shared: &Arc<Shared>) {
        let Some(refill) = self.refill else {
            return;
        };
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || match self.done_with {
            Some(dir) if self.reuse => shared.spares.recycle(dir, refill),
            Some(dir) => shared.spares.remove(&dir, refill),
            None => shared.spares.refill(refill),
        })
        .await;
    }
}

/// One call: answered, then its scratch directory removed and a spare
/// made, as asked.
async fn serve_call(shared: Arc<Shared>, conn: OwnedFd) {
    if let Ok(conn) = watch(conn) {
        let (answer, after) = answer(&shared, &conn).await;
        if let Some(answer) = answer {
            if let Ok(bytes) = serde_json::to_vec(&answer) {
                let _ = packet::send(conn.as_raw_fd(), &bytes, &[], MsgFlags::MSG_DONTWAIT);
            }
        }
        drop(conn);
        after.run(&shared).await;
    }
    if let Ok(mut last) = shared.last.lock() {
        *last = Instant::now();
    }
    shared.active.fetch_sub(1, Ordering::SeqCst);
}

/// The answer to the call on `conn` (`None` when the caller went away: its
/// run, if it had one, is cancelled), and what is left to do after it.
async fn answer(shared: &Arc<Shared>, conn: &AsyncFd<OwnedFd>) -> (Option<Answer>, After) {
    // The call is read first even from a caller that will be refused, so
    // that it reads the refusal rather than a broken pipe.
    let received = receive(conn).await;
    let me = nix::unistd::geteuid().as_raw();
    match socket::getsockopt(conn.get_ref(), sockopt::PeerCredentials) {
        Ok(peer) if peer.uid() == me => {}
        Ok(peer) => {
            tracing::warn!(uid = peer.uid(), "refused a caller of another user");
            let refused = format!(
                "this exec service serves uid {me} only; the caller is uid {}",
                peer.uid()
            );
            return (Some(Err(refused)), After::default());
        }
        Err(e) => {
            let failed = format!("the caller's credentials: {e}");
            return (Some(Err(failed)), After::default());
        }
    }
    let (mut call, mut fds) = match received {
        Ok(Some(got)) => got,
        Ok(None) => return (None, After::default()),
        Err(e) => return (Some(Err(e.to_string())), After::default()),
    };
    let (after, watch) = match scratch_of(shared, &mut call).await {
        Ok(made) => made,
        Err(e) => return (Some(Err(e.to_string())), After::default()),
    };
    if let Err(e) = check(&shared.host, &call.request, fds.len()) {
        return (Some(Err(e.to_string())), after);
    }
    // Sent after the caller's, which alone it may name.
    if let Some((inotify, mut watch)) = watch {
        watch.inotify = Descriptor::Passed(fds.len());
        call.request.upper_watch = Some(watch);
        fds.push(inotify);
    }
    tracing::debug!(args = ?call.request.args, "exec call");
    let run = shared.zygote.run_passing(call.request, fds);
    tokio::select! {
        outcome = run => {
            // A run that failed as a run (not as a command) may have left
            // its directory in any state: it is not reused.
            let after = if outcome.is_ok() { after } else { after.not_reused() };
            (Some(outcome.map_err(|e| e.to_string())), after)
        }
        _ = gone(conn) => {
            tracing::info!("the caller went away: its run is cancelled");
            (None, after.not_reused())
        }
    }
}

/// Names the call's scratch directory where the service makes it (a
/// spare, or one made now); says what is left to do with it after the
/// answer, and gives the watch of its twins where it has one.
async fn scratch_of(shared: &Arc<Shared>, call: &mut Call) -> Result<(After, Option<Handed>)> {
    // Only a scratch directory the service made (its twins checked) is
    // known to hold no more than twins, whatever the caller says; only
    // the service's own watch is sent with it.
    call.request.upper_holds_only_directories = matches!(call.scratch, Scratch::Made { .. });
    call.request.upper_watch = None;
    match &call.scratch {
        Scratch::Given => Ok((After::default(), None)),
        Scratch::Made { give, keep } => {
            let (give, keep) = (give.clone(), *keep);
            let spares = shared.clone();
            let taken = tokio::task::spawn_blocking(move || spares.spares.take(give.as_deref()))
                .await
                .map_err(|e| Error::Container(format!("make a scratch directory: {e}")))??;
            call.request.scratch_dir = taken.dir.clone();
            let after = After {
                done_with: (!keep).then_some(taken.dir),
                refill: Some(taken.refill),
                reuse: true,
            };
            Ok((after, taken.watch))
        }
    }
}

/// Until the caller has closed its end (or broken the protocol by sending
/// more than its call).
async fn gone(conn: &AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut guard) = conn.readable().await else {
            return;
        };
        match packet::pending_len(conn.as_raw_fd()) {
            Err(Errno::EAGAIN) => guard.clear_ready(),
            _ => return,
        }
    }
}

/// Reads the call and the streams sent with it; `None` when the caller
/// closed first.
async fn receive(conn: &AsyncFd<OwnedFd>) -> Result<Option<(Call, Vec<OwnedFd>)>> {
    let mut buf = Vec::new();
    loop {
        let mut guard = conn
            .readable()
            .await
            .map_err(|e| Error::io("wait for the call", e))?;
        let len = match packet::pending_len(conn.as_raw_fd()) {
            Err(Errno::EAGAIN) => {
                guard.clear_ready();
                continue;
            }
            Err(e) => return Err(Error::sys("read the call", e)),
            Ok(0) => return Ok(None),
            Ok(len) if len > MAX_CALL => {
                return Err(Error::InvalidRequest(format!(
                    "the call is {len} bytes, more than the {MAX_CALL} allowed"
                )))
            }
            Ok(len) => len,
        };
        buf.resize(len, 0);
        let (n, fds) = packet::recv(conn.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
            .map_err(|e| Error::sys("read the call", e))?;
        if fds.len() > MAX_STREAMS {
            return Err(Error::InvalidRequest(format!(
                "{} descriptors came with the call; at most {MAX_STREAMS} streams are passed",
                fds.len()
            )));
        }
        let call = serde_json::from_slice(&buf[..n])
            .map_err(|e| Error::InvalidRequest(format!("undecodable call: {e}")))?;
        return Ok(Some((call, fds)));
    }
}

/// What the gRPC service checks, and that each stream is one a caller may
/// name: `/dev/null`, a file, or a descriptor it sent (never one of the
/// service's own).
fn check(host: &Host, req: &SandboxRequest, sent: usize) -> Result<()> {
    for (name, stream) in [
        ("stdin", &req.stdin),
        ("stdout", &req.stdout),
        ("stderr", &req.stderr),
    ] {
        match stream {
            Stdio::Null | Stdio::File(_) => {}
            Stdio::Passed(i) if *i < sent => {}
            Stdio::Passed(i) => {
                return Err(Error::InvalidRequest(format!(
                    "{name} is descriptor {i} of those sent, but {sent} were sent"
                )))
            }
            other => {
                return Err(Error::InvalidRequest(format!(
                    "{name} {other:?} cannot be given to the exec service: \
                     send the descriptor with the call"
                )))
            }
        }
    }
    let layout = Layout::new(host, req)?;
    crate::sandbox::check(host, req, &layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RunnerConfig;

    /// A checked request of the service's own shape, its stdout `stdout`.
    fn request_with_stdout(stdout: Stdio) -> (Host, SandboxRequest, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        crate::testkit::busybox_root(&root);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let host = Host::probe(&RunnerConfig::default()).unwrap();
        let out = tmp.path().join("out");
        let pb = crate::service::tests::run_request(&root, &scratch, &out, "true");
        let mut req = crate::service::to_sandbox_request(&host, pb).unwrap();
        req.stdout = stdout;
        (host, req, tmp)
    }

    #[test]
    fn a_caller_may_name_only_streams_it_sent_or_files() {
        let (host, req, _tmp) = request_with_stdout(Stdio::Passed(0));
        check(&host, &req, 1).unwrap();
        let (host, req, _tmp) = request_with_stdout(Stdio::Null);
        check(&host, &req, 0).unwrap();
        // A descriptor it did not send, and the service's own.
        for (stdout, sent, says) in [
            (
                Stdio::Passed(1),
                1,
                "descriptor 1 of those sent, but 1 were sent",
            ),
            (Stdio::Fd(3), 3, "send the descriptor with the call"),
            (Stdio::Inherit, 3, "send the descriptor with the call"),
            (
                Stdio::Terminal(PathBuf::from("/tmp/console.sock")),
                3,
                "send the descriptor with the call",
            ),
        ] {
            let (host, req, _tmp) = request_with_stdout(stdout.clone());
            let e = check(&host, &req, sent).unwrap_err().to_string();
            assert!(e.contains("stdout") && e.contains(says), "{stdout:?}: {e}");
        }
    }
}
