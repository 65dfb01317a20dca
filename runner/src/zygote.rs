//! The container helper ("zygote"): a process forked before the runner
//! starts any thread, that stays single-threaded and forks one child per
//! run. libcontainer clones its caller, which is only sound in a
//! single-threaded process; the async service talks to the zygote over a
//! `SOCK_SEQPACKET` socketpair, one message per request and per reply.
//!
//! Runs are cheap because their containers are made ahead of time: the
//! zygote keeps `warm_sandboxes` children (runner configuration) each with
//! a container made and its init waiting (see `sandbox::prepare`), hands a
//! request to a ready one and forks its replacement at once (`serve`,
//! `child`).
//!
//! Protocol: the service sends `Run { id, request }` as JSON, with the
//! descriptors its [`crate::Stdio::Passed`] streams name attached to the
//! same record (`packet`), which the zygote hands on to the run's child
//! the same way; the run's child replies `Reply { id, result }`.
//! `Cancel { id }` (sent when the caller of a run goes away) makes the
//! zygote signal that run's child, which kills its container (see
//! [`crate::cancel`]). When a child dies without replying, the zygote
//! replies for it with an error. When the service end
//! closes, the zygote exits, and the kernel kills it if the service dies
//! (PR_SET_PDEATHSIG).

mod child;
mod serve;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::packet;
use crate::request::{Outcome, SandboxRequest};

/// Largest message either side sends (requests carry env and argv).
const MAX_MESSAGE: usize = 4 << 20;

/// What the service sends the zygote.
#[derive(Serialize, Deserialize)]
enum ToZygote {
    /// Run `request` in a new child; reply under `id`.
    Run {
        id: u64,
        request: Box<SandboxRequest>,
    },
    /// The caller of run `id` went away: kill its container.
    Cancel { id: u64 },
}

/// A run's answer to the service.
#[derive(Serialize, Deserialize)]
struct Reply {
    id: u64,
    result: std::result::Result<Outcome, String>,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<std::result::Result<Outcome, String>>>>>;

/// The service's handle on the zygote. Cheap to clone.
#[derive(Clone)]
pub struct Zygote {
    sock: Arc<OwnedFd>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
}

fn set_buffers(fd: &OwnedFd) {
    let size = MAX_MESSAGE as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
}

impl Zygote {
    /// Forks the zygote. Must be called while the process has one thread;
    /// afterwards the caller may start threads and a runtime.
    ///
    /// # Safety
    ///
    /// The calling process must be single-threaded: the forked zygote runs
    /// on (allocating, forking again, and libcontainer cloning it), and in a
    /// fork of a multi-threaded process a lock held by another thread at
    /// the fork stays held forever. [`crate::exec::wait_single_threaded`]
    /// checks this.
    pub unsafe fn spawn(host: Host) -> Result<Zygote> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("socketpair for the zygote", e))?;
        set_buffers(&ours);
        set_buffers(&theirs);
        // SAFETY: the caller is single-threaded (this fn's `# Safety`
        // contract), so the child inherits no lock held by another thread.
        match unsafe { fork() }.map_err(|e| Error::sys("fork the zygote", e))? {
            ForkResult::Child => {
                drop(ours);
                // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                let code = match serve::serve(&host, &theirs) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("corral runner zygote: {e}");
                        1
                    }
                };
                // SAFETY: leaves without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { .. } => {
                drop(theirs);
                let zygote = Zygote {
                    sock: Arc::new(ours),
                    pending: Arc::default(),
                    next_id: Arc::new(AtomicU64::new(1)),
                    alive: Arc::new(AtomicBool::new(true)),
                };
                zygote.start_reader()?;
                Ok(zygote)
            }
        }
    }

    /// Whether the zygote still answers.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn start_reader(&self) -> Result<()> {
        let sock = self.sock.clone();
        let pending = self.pending.clone();
        let alive = self.alive.clone();
        std::thread::Builder::new()
            .name("zygote-reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_MESSAGE];
                loop {
                    match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(0) => break,
                        Ok(n) => match serde_json::from_slice::<Reply>(&buf[..n]) {
                            Ok(reply) => {
                                let tx = pending.lock().ok().and_then(|mut p| p.remove(&reply.id));
                                if let Some(tx) = tx {
                                    let _ = tx.send(reply.result);
                                }
                            }
                            Err(e) => tracing::error!(error = %e, "bad reply from the zygote"),
                        },
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "reading from the zygote");
                            break;
                        }
                    }
                }
                alive.store(false, Ordering::SeqCst);
                if let Ok(mut p) = pending.lock() {
                    for (_, tx) in p.drain() {
                        let _ = tx.send(Err("the container helper (zygote) exited".into()));
                    }
                }
            })
            .map_err(|e| Error::io("start the zygote reader thread", e))?;
        Ok(())
    }

    /// Runs one request in a new child of the zygote and waits for it.
    pub async fn run(&self, request: SandboxRequest) -> Result<Outcome> {
        self.run_passing(request, Vec::new()).await
    }

    /// [`Zygote::run`] with `fds` sent along, for the request's
    /// [`crate::Stdio::Passed`] streams to name.
    pub(crate) async fn run_passing(
        &self,
        request: SandboxRequest,
        fds: Vec<OwnedFd>,
    ) -> Result<Outcome> {
        if !self.is_alive() {
            return Err(Error::Zygote("the container helper (zygote) exited".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let bytes = serde_json::to_vec(&ToZygote::Run {
            id,
            request: Box::new(request),
        })
        .map_err(|e| Error::Zygote(format!("encode request: {e}")))?;
        if bytes.len() > MAX_MESSAGE {
            return Err(Error::InvalidRequest(format!(
                "request is {} bytes, more than the {MAX_MESSAGE} allowed",
                bytes.len()
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Zygote("pending table poisoned".into()))?
            .insert(id, tx);
        if let Err(e) = self.send(bytes, fds).await {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
            return Err(Error::sys("send to the zygote", e));
        }
        // Dropped before the reply (the caller went away): cancel the run.
        let mut guard = CancelOnDrop {
            zygote: self,
            id,
            armed: true,
        };
        let result = rx.await;
        guard.armed = false;
        match result {
            Ok(result) => result.map_err(Error::Container),
            Err(_) => Err(Error::Zygote("the container helper (zygote) exited".into())),
        }
    }

    /// Sends one request. The socket's buffer holds several: the send
    /// almost never waits, and a hop through the blocking pool (a thread
    /// woken, then this task) costs more than the send itself.
    async fn send(&self, bytes: Vec<u8>, fds: Vec<OwnedFd>) -> nix::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        match packet::send(self.sock.as_raw_fd(), &bytes, &raw, MsgFlags::MSG_DONTWAIT) {
            Err(nix::errno::Errno::EAGAIN) => {
                let sock = self.sock.clone();
                tokio::task::spawn_blocking(move || {
                    packet::send(sock.as_raw_fd(), &bytes, &raw, MsgFlags::empty())
                        .map(|()| drop(fds))
                })
                .await
                .map_err(|_| nix::errno::Errno::EIO)?
            }
            other => other,
        }
    }
}

/// Sends `Cancel` for a run whose future was dropped while it waited.
struct CancelOnDrop<'a> {
    zygote: &'a Zygote,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(mut p) = self.zygote.pending.lock() {
            p.remove(&self.id);
        }
        if let Ok(bytes) = serde_json::to_vec(&ToZygote::Cancel { id: self.id }) {
            // A few bytes on a socket sized for 4 MiB messages: never blocks
            // in practice, and must not block a drop.
            let _ = send(
                self.zygote.sock.as_raw_fd(),
                &bytes,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            );
        }
    }
}

fn reply(sock: &OwnedFd, id: u64, result: std::result::Result<Outcome, String>) {
    if let Ok(bytes) = serde_json::to_vec(&Reply { id, result }) {
        let _ = send(sock.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL);
    }
}
