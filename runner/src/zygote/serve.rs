//! The zygote's loop: keep `warm_sandboxes` children with a container made
//! and waiting, hand each request to one of them (or to a cold child when
//! none fits), reap children and answer for those that died without
//! answering.
//!
//! A warm child whose container serves several runs says it is ready
//! again after each; the zygote counts it as one of the `warm_sandboxes`
//! while it runs, and forks a new one only for a child that ended, or for
//! requests that would otherwise wait on runs under way. A child that
//! comes back when enough are ready, or that was sent a cancel, is let go.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{recv, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::child::{self, Dispatch, Readiness};
use super::{reply, set_buffers, ToZygote, MAX_MESSAGE};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::packet;
use crate::request::SandboxRequest;

/// After a warm child failed to make its container, this long before the
/// next one is tried (requests meanwhile go to cold children, which report
/// the failure against the request).
const WARM_BACKOFF: Duration = Duration::from_secs(1);

/// How long a zygote whose service is gone waits for its children.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(10);

/// A warm child not given a request yet.
struct Warm {
    pid: Pid,
    chan: OwnedFd,
    ready: bool,
}

/// A child with a request.
struct Running {
    /// The run's id with the service.
    id: u64,
    /// A warm child's channel: it says on it when it is ready again.
    chan: Option<OwnedFd>,
    /// The run was cancelled: the child is not given another.
    cancelled: bool,
    /// The child answered its run and will soon be ready again.
    answered: bool,
}

impl Running {
    /// Run `id` just handed to a child, with the channel of a warm child
    /// that will come back.
    fn new(id: u64, chan: Option<OwnedFd>) -> Running {
        Running {
            id,
            chan,
            cancelled: false,
            answered: false,
        }
    }
}

/// A request waiting for a warm child, with the descriptors sent along.
struct Queued {
    id: u64,
    request: Box<SandboxRequest>,
    fds: Vec<OwnedFd>,
}

/// The zygote's state.
struct Pool<'a> {
    host: &'a Host,
    sock: &'a OwnedFd,
    zygote: Pid,
    size: usize,
    warm: Vec<Warm>,
    /// Requests waiting for a warm child to be ready.
    queue: VecDeque<Queued>,
    /// Children with a request, by pid.
    running: HashMap<Pid, Running>,
    /// No warm child is forked before this.
    backoff_until: Option<Instant>,
}

/// Serves until the service closes its end.
pub(super) fn serve(host: &Host, sock: &OwnedFd) -> Result<()> {
    // A child killed outright (the OOM killer, `kill -9`) while
    // libcontainer was making its container leaves that container's
    // intermediate process and init waiting forever for it. As the
    // subreaper, the zygote adopts them, and kills them (see `reap`).
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER and a flag.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(Error::sys(
            "become the containers' subreaper",
            nix::errno::Errno::last(),
        ));
    }
    let mut pool = Pool {
        host,
        sock,
        zygote: nix::unistd::getpid(),
        size: host.warm_sandboxes,
        warm: Vec::new(),
        queue: VecDeque::new(),
        running: HashMap::new(),
        backoff_until: None,
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        pool.refill();
        let (mut fds, returning) = pool.poll_set();
        // SAFETY: `fds` is a valid array of that many pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready > 0 {
            let warm_end = 1 + pool.warm.len();
            for (pfd, pid) in fds[warm_end..].iter().zip(&returning) {
                if pfd.revents != 0 {
                    pool.hear_from_running(*pid, &mut buf);
                }
            }
            for (i, pfd) in fds[..warm_end].iter().enumerate().skip(1).rev() {
                if pfd.revents != 0 {
                    pool.hear_from_warm(i - 1, &mut buf);
                }
            }
            if fds[0].revents != 0 {
                let (n, fds) = match packet::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok((0, _)) => {
                        pool.shut_down();
                        return Ok(());
                    }
                    Ok(got) => got,
                    Err(e) => return Err(Error::sys("zygote recv", e)),
                };
                match serde_json::from_slice(&buf[..n]) {
                    Ok(message) => pool.handle(message, fds),
                    Err(e) => tracing::error!(error = %e, "undecodable job"),
                }
            }
        }
        pool.reap();
    }
}

/// What a child said on its channel (which `poll` found readable); `None`
/// when it closed it or said nothing the zygote understands.
fn hear(chan: &OwnedFd, buf: &mut [u8]) -> Option<Readiness> {
    match recv(chan.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) | Err(_) => None,
        Ok(n) => serde_json::from_slice::<Readiness>(&buf[..n]).ok(),
    }
}

/// A `pollfd` waiting for `fd` to be readable.
fn readable(fd: &OwnedFd) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

impl Pool<'_> {
    /// What the loop waits on: the service's socket, then each warm
    /// child's channel in order, then those of the running children that
    /// will come back, whose pids are returned in the same order.
    fn poll_set(&self) -> (Vec<libc::pollfd>, Vec<Pid>) {
        let mut fds = vec![readable(self.sock)];
        fds.extend(self.warm.iter().map(|w| readable(&w.chan)));
        let mut returning = Vec::new();
        for (pid, run) in &self.running {
            if let Some(chan) = &run.chan {
                fds.push(readable(chan));
                returning.push(*pid);
            }
        }
        (fds, returning)
    }

    fn handle(&mut self, message: ToZygote, fds: Vec<OwnedFd>) {
        match message {
            ToZygote::Run { id, request } => {
                let queued = Queued { id, request, fds };
                if queued.request.network || self.size == 0 {
                    // Warm containers have a network namespace of their own.
                    self.cold(queued);
                } else {
                    self.queue.push_back(queued);
                    self.dispatch();
                }
            }
            ToZygote::Cancel { id } => {
                self.queue.retain(|queued| queued.id != id);
                if let Some((pid, run)) = self.running.iter_mut().find(|(_, run)| run.id == id) {
                    run.cancelled = true;
                    let _ = nix::sys::signal::kill(*pid, crate::cancel::SIGNAL);
                }
            }
        }
    }

    /// Gives queued requests to ready warm children, oldest first; with
    /// warm children failing, to cold ones.
    fn dispatch(&mut self) {
        while let Some(queued) = self.queue.pop_front() {
            if self.backoff_until.is_some() && !self.warm.iter().any(|w| w.ready) {
                self.cold(queued);
                continue;
            }
            let Some(i) = self.warm.iter().position(|w| w.ready) else {
                self.queue.push_front(queued);
                return;
            };
            let warm = self.warm.remove(i);
            if self.host.is_root {
                // Its own renice comes only once it has woken; a waiting
                // nice-19 process wakes late on a busy machine.
                // SAFETY: setpriority with PRIO_PROCESS, a pid and a value.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, warm.pid.as_raw() as libc::id_t, 0)
                };
            }
            let Queued { id, request, fds } = queued;
            let raw: Vec<_> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            let sent = serde_json::to_vec(&Dispatch { id, request })
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    packet::send(warm.chan.as_raw_fd(), &bytes, &raw, MsgFlags::empty())
                        .map_err(|e| e.to_string())
                });
            // The child has its own copies now.
            drop(fds);
            match sent {
                Ok(_) => {
                    let chan = (self.host.runs_per_container > 1).then_some(warm.chan);
                    self.running.insert(warm.pid, Running::new(id, chan));
                }
                Err(e) => reply(
                    self.sock,
                    id,
                    Err(format!("hand the run to its container: {e}")),
                ),
            }
        }
    }

    /// A warm child said it is ready (or failed, or died).
    fn hear_from_warm(&mut self, i: usize, buf: &mut [u8]) {
        let Some(warm) = self.warm.get_mut(i) else {
            return;
        };
        let heard = hear(&warm.chan, buf);
        match heard {
            Some(Readiness::Ready) => {
                warm.ready = true;
                self.dispatch();
            }
            Some(Readiness::Failed(e)) => {
                tracing::error!(error = %e, "a warm container could not be made");
                self.warm.remove(i);
                self.backoff_until = Some(Instant::now() + WARM_BACKOFF);
                self.dispatch();
            }
            // Only a running child answers a run.
            Some(Readiness::Answered) => {}
            None => {
                self.warm.remove(i);
            }
        }
    }

    /// A running warm child said it answered its run, or is ready again
    /// (or failed, or died).
    fn hear_from_running(&mut self, pid: Pid, buf: &mut [u8]) {
        let Some(run) = self.running.get_mut(&pid) else {
            return;
        };
        let Some(chan) = run.chan.as_ref() else {
            return;
        };
        let heard = hear(chan, buf);
        if matches!(heard, Some(Readiness::Answered)) {
            run.answered = true;
            return;
        }
        let cancelled = run.cancelled;
        let chan = run.chan.take();
        // Its run is answered; whatever happens next, it has no request.
        self.running.remove(&pid);
        if let (Some(Readiness::Ready), false, Some(chan)) = (heard, cancelled, chan) {
            if self.warm.len() < self.size.max(self.queue.len()) {
                self.warm.push(Warm {
                    pid,
                    chan,
                    ready: true,
                });
                self.dispatch();
            }
        }
        // Otherwise the channel closes here: the child removes its
        // container and exits, and `reap` collects it.
    }

    /// How many warm children the pool wants: `size` less the running
    /// ones that will come back, and at least one per queued request not
    /// met by a child that has answered its run and is about to be ready.
    fn wanted(&self) -> usize {
        let coming_back = self.running.values().filter(|r| r.chan.is_some());
        let answered = coming_back.clone().filter(|r| r.answered).count();
        self.size
            .saturating_sub(coming_back.count())
            .max(self.queue.len().saturating_sub(answered))
    }

    /// Forks warm children until there are as many as [`Self::wanted`].
    fn refill(&mut self) {
        if let Some(until) = self.backoff_until {
            if Instant::now() < until {
                return;
            }
            self.backoff_until = None;
        }
        while self.warm.len() < self.wanted() {
            match self.fork_warm() {
                Ok(warm) => self.warm.push(warm),
                Err(e) => {
                    tracing::error!(error = %e, "fork a warm container");
                    self.backoff_until = Some(Instant::now() + WARM_BACKOFF);
                    return;
                }
            }
        }
    }

    fn fork_warm(&self) -> Result<Warm> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("socketpair for a warm container", e))?;
        set_buffers(&ours);
        set_buffers(&theirs);
        // SAFETY: the zygote is single-threaded.
        match unsafe { fork() }.map_err(|e| Error::sys("fork a warm container", e))? {
            ForkResult::Child => {
                drop(ours);
                self.close_in_child();
                // SAFETY: a freshly forked child of the single-threaded
                // zygote.
                unsafe { child::warm(self.host, self.sock, theirs, self.zygote) }
            }
            ForkResult::Parent { child } => Ok(Warm {
                pid: child,
                chan: ours,
                ready: false,
            }),
        }
    }

    /// A child for `queued` alone. It inherits the descriptors sent with
    /// the request, at the numbers they have here.
    fn cold(&mut self, queued: Queued) {
        let Queued {
            id,
            mut request,
            fds,
        } = queued;
        if let Err(e) = request.take_passed(&fds) {
            reply(self.sock, id, Err(e.to_string()));
            return;
        }
        // SAFETY: the zygote is single-threaded.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                self.close_in_child();
                // SAFETY: a freshly forked child of the single-threaded
                // zygote.
                unsafe { child::cold(self.host, self.sock, id, &request, self.zygote) }
            }
            Ok(ForkResult::Parent { child }) => {
                self.running.insert(child, Running::new(id, None));
            }
            Err(e) => reply(self.sock, id, Err(format!("fork for the run: {e}"))),
        }
    }

    /// Reaps children; answers for a running one that died badly; kills
    /// what a child that died badly left to the zygote.
    fn reap(&mut self) {
        let mut died_badly = Vec::new();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { break };
                    let ours =
                        self.running.contains_key(&pid) || self.warm.iter().any(|w| w.pid == pid);
                    if ours && !matches!(status, WaitStatus::Exited(_, 0)) {
                        died_badly.push(pid.as_raw());
                    }
                    if let Some(run) = self.running.remove(&pid) {
                        if !matches!(status, WaitStatus::Exited(_, 0)) {
                            reply(
                                self.sock,
                                run.id,
                                Err(format!("the run's process ended badly: {status:?}")),
                            );
                        }
                    }
                    self.warm.retain(|w| w.pid != pid);
                }
            }
        }
        if !died_badly.is_empty() {
            self.kill_orphans();
            crate::cgroups::stale::remove_runs_of(self.host.limit_enforcer().as_ref(), &died_badly);
        }
    }

    /// SIGKILLs every child that is neither a warm child nor a run's: the
    /// processes of a container whose maker died, adopted by the zygote.
    fn kill_orphans(&self) {
        self.kill_children_but(&self.children());
    }

    /// The zygote's own children: running and warm.
    fn children(&self) -> Vec<Pid> {
        (self.running.keys().copied())
            .chain(self.warm.iter().map(|w| w.pid))
            .collect()
    }

    /// The service is gone. Warm children are told so (their channels
    /// close, and each removes its container and leaves); runs are
    /// cancelled, as their callers are gone. What a child killed outright
    /// left to the zygote is killed, until no child is left or the
    /// patience is spent: a container whose maker was killed just before
    /// the end was otherwise left waiting forever, adopted by the
    /// machine's init.
    fn shut_down(&mut self) {
        let mut ours = self.children();
        self.warm.clear();
        for pid in self.running.keys() {
            let _ = nix::sys::signal::kill(*pid, crate::cancel::SIGNAL);
        }
        let deadline = Instant::now() + SHUTDOWN_PATIENCE;
        while Instant::now() < deadline {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    self.kill_children_but(&ours);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(status) => ours.retain(|pid| Some(*pid) != status.pid()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// SIGKILLs every child of the zygote but `ours`. Each stays this
    /// process's child (a zombie at worst) until reaped here, so no pid
    /// read below can name another process.
    fn kill_children_but(&self, ours: &[Pid]) {
        let me = self.zygote.as_raw();
        let Ok(list) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) else {
            return;
        };
        for pid in list.split_whitespace().filter_map(|p| p.parse().ok()) {
            let pid = Pid::from_raw(pid);
            if ours.contains(&pid) {
                continue;
            }
            tracing::warn!(
                pid = pid.as_raw(),
                "killing a container process whose maker died"
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Pool<'_> {
    /// In a new child: the other children's channels and the streams of
    /// queued requests are not its own. A stream must not stay open in a
    /// child that lives on: the caller reading a pipe would wait for its
    /// end as long as that child lives.
    fn close_in_child(&self) {
        let chans = (self.warm.iter().map(|w| &w.chan))
            .chain(self.running.values().filter_map(|r| r.chan.as_ref()));
        let streams = self.queue.iter().flat_map(|q| q.fds.iter());
        for fd in chans.chain(streams) {
            let _ = nix::unistd::close(fd.as_raw_fd());
        }
    }
}
