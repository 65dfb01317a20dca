//! The zygote's children, one per run. A warm child makes its container
//! before any request exists and waits; a cold one is forked for a request
//! no warm container fits (the host network). Either answers the service
//! itself as soon as the command has ended, then cleans up and exits.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{send, MsgFlags};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{reply, MAX_MESSAGE};
use crate::host::Host;
use crate::packet;
use crate::request::SandboxRequest;
use crate::sandbox::{self, Cleanup, Reuse};
use crate::spec::Shape;

/// What the zygote sends a warm child.
#[derive(Serialize, Deserialize)]
pub(super) struct Dispatch {
    /// The run's id with the service.
    pub id: u64,
    /// The request.
    pub request: Box<SandboxRequest>,
}

/// What a warm child tells the zygote.
#[derive(Serialize, Deserialize)]
pub(super) enum Readiness {
    /// Its container is made; it waits for a request.
    Ready,
    /// Its container could not be made.
    Failed(String),
    /// It answered its run; `Ready` follows if its container serves
    /// another.
    Answered,
}

/// The nice value of a warm child while it makes its container (its
/// container's processes inherit it until the dispatch).
const BACKGROUND_NICE: libc::c_int = 19;

/// Sets process `pid`'s (0: this one's) nice value; a failure only costs
/// speed.
fn set_nice(pid: libc::pid_t, nice: libc::c_int) {
    // SAFETY: setpriority with PRIO_PROCESS, a pid and a value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) };
}

/// Leaves the process without running the zygote's exit handlers.
fn exit(code: i32) -> ! {
    // SAFETY: _exit skips atexit handlers and buffers, which belong to the
    // zygote.
    unsafe { libc::_exit(code) }
}

fn tell(chan: &OwnedFd, readiness: &Readiness) {
    if let Ok(bytes) = serde_json::to_vec(readiness) {
        let _ = send(chan.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL);
    }
}

/// Answers run `id` on the service socket, then cleans up.
fn finish(sock: &OwnedFd, id: u64, result: crate::Result<(crate::Outcome, Cleanup)>) -> ! {
    match result {
        Ok((outcome, cleanup)) => {
            reply(sock, id, Ok(outcome));
            cleanup.finish();
        }
        Err(e) => reply(sock, id, Err(e.to_string())),
    }
    exit(0)
}

/// Waits on `chan` for the zygote's next request, read into `buf`, and
/// the descriptors sent with it; `None` when the zygote is gone or has no
/// use for this container.
fn next_dispatch(chan: &OwnedFd, buf: &mut [u8]) -> Option<(Dispatch, Vec<OwnedFd>)> {
    loop {
        match packet::recv(chan.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok((0, _)) => return None,
            Ok((n, fds)) => match serde_json::from_slice::<Dispatch>(&buf[..n]) {
                Ok(d) => return Some((d, fds)),
                Err(e) => tracing::error!(error = %e, "undecodable dispatch"),
            },
            Err(_) => return None,
        }
    }
}

/// A warm child: makes a container for the usual shape (private network,
/// no terminal), says so on `chan`, waits for a request and runs it; with
/// `runs_per_container` above 1, says so again and serves the next, until
/// a run may not hand its container on. Exits (removing the container)
/// when the zygote closes `chan` first.
///
/// # Safety
///
/// Must be called in a freshly forked child of the single-threaded zygote.
pub(super) unsafe fn warm(host: &Host, sock: &OwnedFd, chan: OwnedFd, zygote: Pid) -> ! {
    if let Err(e) = crate::cancel::install_with_parent(zygote) {
        tell(&chan, &Readiness::Failed(e.to_string()));
        exit(0);
    }
    let shape = Shape {
        network: false,
        terminal: false,
    };
    // Making a container ahead of time must not slow the runs under way:
    // it runs at the lowest priority, which only root can undo at dispatch.
    let background = host.is_root;
    if background {
        set_nice(0, BACKGROUND_NICE);
    }
    let serves_many = host.runs_per_container > 1;
    // SAFETY: a freshly forked child of the single-threaded zygote (our
    // contract) has one thread.
    let mut prepared = match unsafe { sandbox::prepare(host, shape, None, serves_many, false) } {
        Ok(p) => p,
        Err(e) => {
            tell(&chan, &Readiness::Failed(e.to_string()));
            exit(0);
        }
    };
    // The usual profile's programs, compiled while nothing waits for them.
    let default_filters = crate::profile::Profile::default_profile()
        .ok()
        .and_then(|p| crate::seccomp::Filters::build(&p).ok().map(|f| (p, f)));
    // One buffer for every request: zeroing 4 MiB per request was 7 % of
    // the machine's CPU at back-to-back trivial runs (`perf`).
    let mut buf = vec![0u8; MAX_MESSAGE];
    for served in 1.. {
        tell(&chan, &Readiness::Ready);
        let Some((mut dispatch, streams)) = next_dispatch(&chan, &mut buf) else {
            sandbox::discard(prepared);
            exit(0);
        };
        if let Err(e) = dispatch.request.take_passed(&streams) {
            sandbox::discard(prepared);
            finish(sock, dispatch.id, Err(e));
        }
        if background {
            set_nice(0, 0);
            set_nice(prepared.init.as_raw(), 0);
        }
        let filters = default_filters
            .as_ref()
            .filter(|(profile, _)| *profile == dispatch.request.profile)
            .map(|(_, filters)| filters.clone());
        // The service checked the request before sending it.
        let result = sandbox::run_prepared(prepared, host, &dispatch.request, filters);
        // The command has ended: its streams close here, or the caller
        // reading a pipe would wait for this container's next run.
        drop(streams);
        let (outcome, cleanup) = match result {
            Ok(done) => done,
            Err(e) => finish(sock, dispatch.id, Err(e)),
        };
        if served >= host.runs_per_container || !sandbox::may_follow(&outcome) {
            finish(sock, dispatch.id, Ok((outcome, cleanup)));
        }
        // Told before the answer, so that the zygote knows this container
        // is coming back before the caller's next request can reach it.
        tell(&chan, &Readiness::Answered);
        reply(sock, dispatch.id, Ok(outcome.clone()));
        prepared = match Reuse::after(cleanup, &outcome) {
            Reuse::Again(p) => p,
            Reuse::Done(cleanup) => {
                cleanup.finish();
                exit(0)
            }
        };
        // Ready again: a cancel meant for the run just answered is spent
        // (the zygote retires a child it signalled; see `serve`).
        crate::cancel::clear();
    }
    exit(0)
}

/// A cold child: makes the container `request` needs and runs it.
///
/// # Safety
///
/// Must be called in a freshly forked child of the single-threaded zygote.
pub(super) unsafe fn cold(
    host: &Host,
    sock: &OwnedFd,
    id: u64,
    request: &SandboxRequest,
    zygote: Pid,
) -> ! {
    if let Err(e) = crate::cancel::install_with_parent(zygote) {
        reply(sock, id, Err(e.to_string()));
        exit(0);
    }
    // SAFETY: a freshly forked child of the single-threaded zygote.
    let result = unsafe { sandbox::run_deferred(host, request) };
    finish(sock, id, result)
}
