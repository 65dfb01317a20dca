//! The end of a run, kept apart so that the caller can be answered before
//! it is paid for.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use nix::unistd::Pid;

use super::ms;
use super::prepare::Prepared;
use crate::cgroups::LimitEnforcer;

/// What is left to do once the command has ended, or after a run that
/// failed half-way: make sure the container's init is gone and remove the
/// run's cgroup. libcontainer's state, the bundle and the first root live
/// on a tmpfs in the run's own mount namespace and go with its process;
/// nothing here touches the scratch directory.
pub(crate) struct Cleanup {
    /// The enforcer, its directories pinned.
    pub(super) enforcer: Box<dyn LimitEnforcer>,
    /// The run's id: its cgroup's name.
    pub(super) id: String,
    /// The container's init and a pidfd of it, while it may still run (a
    /// run that failed before its command ended): killed through the pidfd
    /// (never another process that took its pid) and reaped here.
    pub(super) init: Option<(Pid, OwnedFd)>,
    /// Namespaces of the container held open. A process's exit releases
    /// its namespaces before its parent learns of it, and the last release
    /// of a mount namespace unmounts everything in it (the overlay, `/proc`,
    /// `/dev` and `/tmp`, about 20 mounts), waiting for an RCU grace
    /// period. Held here, that happens at the clean-up, after the answer.
    pub(super) namespaces: Vec<OwnedFd>,
    /// Likewise, what the run handed out to be held ([`Report::Hold`]).
    ///
    /// [`Report::Hold`]: crate::control::Report::Hold
    pub(super) held: Vec<OwnedFd>,
    /// The outside end of the control socket.
    pub(super) control: Option<OwnedFd>,
    /// The container serves run after run.
    pub(super) serves_many: bool,
}

impl Cleanup {
    /// The clean-up of a prepared container whose run has not begun.
    pub(crate) fn of(prepared: Prepared) -> Cleanup {
        Cleanup {
            enforcer: prepared.enforcer,
            id: prepared.id,
            init: Some((prepared.init, prepared.pidfd)),
            namespaces: prepared.mount_ns.into_iter().collect(),
            held: Vec::new(),
            control: Some(prepared.control),
            serves_many: prepared.serves_many,
        }
    }

    /// Does the clean-up; errors are logged, never fatal.
    pub(crate) fn finish(self) {
        let t0 = Instant::now();
        if let Some((init, pidfd)) = self.init {
            // SAFETY: pidfd_send_signal on our own pidfd with no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            // Only ever reaps our own child: the init, if not reaped yet.
            let _ = nix::sys::wait::waitpid(init, Some(nix::sys::wait::WaitPidFlag::__WALL));
        }
        drop(self.held);
        drop(self.namespaces);
        if let Err(e) = self.enforcer.remove(&self.id) {
            tracing::warn!(run = self.id, error = %e, "could not remove the run's cgroup");
        }
        tracing::debug!(ms = ms(t0), "clean-up");
    }
}
