//! The init of a container that serves run after run (`sandbox::reuse`).
//!
//! Making a container is most of a short action's cost: libcontainer's
//! two clones of the runner's process, a user and a PID namespace,
//! `/proc`, `/dev`, the cgroup. A serving init pays that once and gives
//! each run a process of its own, forked ahead of the run's request, in
//! namespaces of its own: the run's process unshares mount, UTS, IPC and
//! network namespaces, brings `lo` up, makes a fresh `/dev`
//! (`inside::dev`) and detaches its copy of the view of the host (as a
//! single run's init does, `inside::rootfs`) while nothing waits for it.
//! With the plan it builds the request's root and confines itself exactly
//! as a single run's init does, starts the command and leaves. What the
//! runs of one container share is what nothing of a run can change: the
//! user namespace (no run holds a capability in it), the PID namespace
//! (emptied by PID 1 after every run), the container's `/proc` and its
//! cgroup (limits written and usage counted afresh for each run).
//!
//! The run's process tells PID 1 over a close-on-exec pipe how the run
//! started ([`Note`]: the command's PID, or why there is none). PID 1
//! reaps the command, kills and reaps everything else, reports the end on
//! the control socket and, when the outside asks ([`NextRun`]), forks the
//! next run's process. The run's mount namespace and its copy of the
//! host's mounts go to the outside ([`Report::Hold`]), so that their
//! release, which waits for an RCU grace period, comes after the answer.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::{
    cannot_execute, close_all_but, kill_the_rest, reap_run, report, spawn_command, take_plan,
    Command,
};
use crate::control::{self, InitPhases, NextRun, Report, CONTROL_FD};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::spec::FRESH_DEV;

/// What a run's process tells PID 1 as it leaves.
#[derive(Serialize, Deserialize)]
enum Note {
    /// The command runs as this PID; it becomes PID 1's child when the
    /// run's process has exited. The steps' times, when the plan asked.
    Started {
        command: i32,
        phases: Option<InitPhases>,
    },
    /// The command could not be executed (reported as a shell would:
    /// exit 127, the reason on its stderr).
    Unstartable,
    /// The plan could not be applied; the command never started.
    Failed(String),
    /// The outside closed the control socket: the container is done.
    Closed,
}

/// PID 1 of a serving container: forks each run's process, waits for its
/// command, reports. Returns only with an error of its own; exits when
/// the outside closes the control socket.
pub(super) fn serve(loopback_up: bool) -> Result<Infallible> {
    // See `super::run`: death with the run's process, armed again.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The view of the host stays mounted here: the kernel lets a process
    // copy mounts out of a detached tree only in the mount namespace that
    // tree came from, so each run's process detaches its own, in its own
    // namespace (see `apply`).
    crate::inside::rootfs::make_private()?;
    close_all_but(CONTROL_FD);
    loop {
        // Each run's process is made once the outside asks: the first once
        // this process is in the run's cgroup (so that everything of the
        // run is born inside), the next ones once the outside has answered
        // the last run's caller (so that making it does not compete with
        // the answer). A closed socket means no further run.
        if !matches!(control::recv::<NextRun>(CONTROL_FD), Ok(Some(_))) {
            // SAFETY: _exit is always safe; the container is done.
            unsafe { libc::_exit(0) }
        }
        let (notes_in, notes_out) = pipe()?;
        // SAFETY: libcontainer's container init is single-threaded, so the
        // child inherits no lock held by another thread.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(notes_in);
                run_process(notes_out, loopback_up)
            }
            Ok(ForkResult::Parent { .. }) => {
                drop(notes_out);
                serve_one(notes_in);
            }
            Err(e) => return Err(Error::sys("fork a run's process", e)),
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))
}

/// PID 1's side of one run: the note, the command's end, the report.
/// Exits when the container is done or its run's process died without a
/// note (the plan it was sent may be unread: no later run may take it).
fn serve_one(notes: OwnedFd) {
    let mut bytes = Vec::new();
    let _ = std::fs::File::from(notes).read_to_end(&mut bytes);
    match serde_json::from_slice::<Note>(&bytes) {
        Ok(Note::Started { command, phases }) => {
            let ended = reap_run(Pid::from_raw(command));
            if let Some(mut p) = phases {
                p.reaped = control::monotonic_ns();
                report(&Report::Phases(p));
            }
            report(&ended);
        }
        Ok(Note::Unstartable) => {
            kill_the_rest();
            report(&Report::Exited(127));
        }
        Ok(Note::Failed(message)) => {
            kill_the_rest();
            report(&Report::Failed(message));
        }
        Ok(Note::Closed) => {
            kill_the_rest();
            // SAFETY: _exit is always safe; the container is done.
            unsafe { libc::_exit(0) }
        }
        Err(_) => {
            kill_the_rest();
            report(&Report::Failed(
                "the run's process in the container died before its command started".into(),
            ));
            // SAFETY: as above.
            unsafe { libc::_exit(125) }
        }
    }
}

/// The run's process: namespaces and `/dev` of its own, then the plan,
/// then the command, started with `posix_spawn` (no copy of this
/// process's address space). It leaves at once, so that the release of
/// that address space is not on the command's way to its end; the
/// command, orphaned, becomes PID 1's child. Never returns.
fn run_process(notes: OwnedFd, loopback_up: bool) -> ! {
    let note = match apply(&notes, loopback_up) {
        Ok(Some((plan, command, mut phases))) => {
            match spawn_command(&command.program, &command.argv, &command.env) {
                Ok(pid) => {
                    phases.spawned = control::monotonic_ns();
                    Note::Started {
                        command: pid.as_raw(),
                        phases: plan.report_phases.then_some(phases),
                    }
                }
                Err(errno) => {
                    cannot_execute(&plan.args[0], errno);
                    Note::Unstartable
                }
            }
        }
        Ok(None) => Note::Closed,
        Err(e) => Note::Failed(e.to_string()),
    };
    tell(&notes, &note);
    // SAFETY: _exit is always safe; nothing of this process is needed.
    unsafe { libc::_exit(0) }
}

/// Writes `note` whole on the pipe to PID 1.
fn tell(notes: &OwnedFd, note: &Note) {
    if let Ok(bytes) = serde_json::to_vec(note) {
        let _ = control::borrowed(notes.as_raw_fd()).write_all(&bytes);
    }
}

/// Everything up to the command's start: `None` when the outside closed
/// the control socket instead of sending a plan.
fn apply(notes: &OwnedFd, loopback_up: bool) -> Result<Option<(Plan, Command, InitPhases)>> {
    // Death with PID 1 (this process's parent).
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET,
    )
    .map_err(|e| Error::sys("unshare the run's namespaces", e))?;
    if loopback_up {
        crate::loopback::bring_up()?;
    }
    crate::inside::dev::make_fresh()?;
    let host = crate::inside::rootfs::detach_host()?;
    // This run's mount namespace and its detached copy of the host's
    // mounts, released after the answer (see the module's comment).
    let own = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| Error::io("open the run's mount namespace", e))?;
    control::send(CONTROL_FD, &Report::Waiting, &[])?;
    take_plan(
        CONTROL_FD,
        (host, Path::new(FRESH_DEV)),
        Some(own.into()),
        notes.as_raw_fd(),
    )
}
