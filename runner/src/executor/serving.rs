//! The init of a container that serves run after run (`sandbox::reuse`).
//!
//! Making a container is most of a short action's cost: libcontainer's
//! two clones of the runner's process, a user and a PID namespace,
//! `/proc`, `/dev`, the cgroup. A serving init pays that once and gives
//! each run a process of its own, started ahead of the run's request in
//! PID 1's memory (`suspending`), in
//! namespaces of its own: the run's process unshares mount, UTS and IPC
//! namespaces, enters the last run's network namespace if that run left
//! no trace in it or else makes one with `lo` up (`inside::network`),
//! makes a fresh `/dev` (`inside::dev`) and detaches its copy of the view
//! of the host (as a single run's init does, `inside::rootfs`) while
//! nothing waits for it.
//! With the plan it builds the request's root and confines itself exactly
//! as a single run's init does, starts the command and leaves. What the
//! runs of one container share is what nothing of a run can change: the
//! user namespace (no run holds a capability in it), the PID namespace
//! (emptied by PID 1 after every run), the container's `/proc` and its
//! cgroup (limits written and usage counted afresh for each run).
//!
//! The run's process tells PID 1 over a socket of their own how the run
//! started ([`Note`]: the command's PID, or why there is none), and hands
//! it a network namespace it made. The command is PID 1's child from the
//! start (`sibling`). PID 1 reaps it, kills and reaps everything else,
//! reports the end on the control socket and, when the outside asks
//! ([`NextRun`]), starts the next run's process. The run's mount namespace and its copy of the
//! host's mounts go to the outside ([`Report::Hold`]), so that their
//! release, which waits for an RCU grace period, comes after the answer.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::sibling::spawn_sibling;
use super::stack::Stack;
use super::suspending::{self, run_suspended};
use super::{cannot_execute, close_all_but, kill_the_rest, reap_run, report, take_plan, Command};
use crate::control::{self, InitPhases, NextRun, Report, CONTROL_FD};
use crate::error::{Error, Result};
use crate::inside::network::{self, Entered, Fingerprint, Network};
use crate::plan::Plan;
use crate::spec::FRESH_DEV;

/// What a run's process tells PID 1: the network namespace it made, if
/// it made one, then how it leaves.
#[derive(Serialize, Deserialize)]
enum Note {
    /// It made a new network namespace (sent with it), which read thus
    /// when new: the next run's process keeps it if it still does.
    Network(Fingerprint),
    /// The command runs as this PID, a child of PID 1 (`sibling`). The
    /// steps' times, when the plan asked.
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
    let mut network: Option<Network> = None;
    let stack = Stack::new(suspending::STACK_SIZE)
        .map_err(|e| Error::sys("map the stack of the runs' processes", e))?;
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
        let (notes_in, notes_out) = control::pair()?;
        let theirs = notes_out.as_raw_fd();
        let ours = notes_in.as_raw_fd();
        let last = network.as_ref();
        let mut body = || {
            // SAFETY: closes the child's copy of PID 1's end (its own
            // descriptor table), not PID 1's.
            unsafe { libc::close(ours) };
            run_process(theirs, loopback_up, last)
        };
        // SAFETY: libcontainer's container init is single-threaded, and
        // `run_process` borrows and frees as `suspending` asks.
        unsafe { run_suspended(&stack, &mut body) }
            .map_err(|e| Error::sys("start a run's process", e))?;
        drop(notes_out);
        serve_one(notes_in, &mut network);
    }
}

/// The note that ends the run's process's part; a new network namespace
/// it announced before is kept in `network`.
fn last_note(notes: &OwnedFd, network: &mut Option<Network>) -> Option<Note> {
    loop {
        match control::recv::<Note>(notes.as_raw_fd()) {
            Ok(Some((Note::Network(fresh), mut fds))) => {
                // The one before goes when its handle does.
                *network = fds.pop().map(|handle| Network { handle, fresh });
            }
            Ok(Some((note, _))) => return Some(note),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// PID 1's side of one run: the note, the command's end, the report.
/// Exits when the container is done or its run's process died without a
/// note (the plan it was sent may be unread: no later run may take it).
fn serve_one(notes: OwnedFd, network: &mut Option<Network>) {
    match last_note(&notes, network) {
        Some(Note::Started { command, phases }) => {
            let ended = reap_run(Pid::from_raw(command));
            if let Some(mut p) = phases {
                p.reaped = control::monotonic_ns();
                report(&Report::Phases(p));
            }
            report(&ended);
        }
        Some(Note::Unstartable) => {
            kill_the_rest();
            report(&Report::Exited(127));
        }
        Some(Note::Failed(message)) => {
            kill_the_rest();
            report(&Report::Failed(message));
        }
        Some(Note::Closed) => {
            kill_the_rest();
            // SAFETY: _exit is always safe; the container is done.
            unsafe { libc::_exit(0) }
        }
        Some(Note::Network(_)) | None => {
            kill_the_rest();
            report(&Report::Failed(
                "the run's process in the container died before its command started".into(),
            ));
            // SAFETY: as above.
            unsafe { libc::_exit(125) }
        }
    }
}

/// The run's process, in PID 1's memory (`suspending`): namespaces and
/// `/dev` of its own, then the plan, then the command, started as PID 1's
/// child (`sibling`). Returns its exit status once everything it made is
/// dropped.
fn run_process(notes: RawFd, loopback_up: bool, last: Option<&Network>) -> i32 {
    let note = match apply(notes, loopback_up, last).and_then(undumpable) {
        Ok(Some((plan, command, mut phases))) => {
            match spawn_sibling(&command.program, &command.argv, &command.env) {
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
    tell(notes, &note, &[]);
    0
}

/// Makes the memory this process shares with PID 1 undumpable, just
/// before the command starts. The command runs as this process's user
/// (set by the plan, which may keep uid 0) with no capability, and this
/// process lives a little longer: were its memory dumpable, the command
/// could open `/proc/<this process>/mem` meanwhile and write into PID 1's
/// memory, and so into every later run of the container. Undumpable
/// memory takes CAP_SYS_PTRACE, which no run holds. It is set here, after
/// the plan's change of user, which resets it to `fs.suid_dumpable`.
fn undumpable<T>(applied: Option<T>) -> Result<Option<T>> {
    // SAFETY: prctl with PR_SET_DUMPABLE and an integer.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) } != 0 {
        return Err(Error::sys(
            "make the run's memory undumpable",
            nix::errno::Errno::last(),
        ));
    }
    Ok(applied)
}

/// Sends `note` (and `fds`) to PID 1.
fn tell(notes: RawFd, note: &Note, fds: &[i32]) {
    let _ = control::send(notes, note, fds);
}

/// Everything up to the command's start: `None` when the outside closed
/// the control socket instead of sending a plan.
fn apply(
    notes: RawFd,
    loopback_up: bool,
    last: Option<&Network>,
) -> Result<Option<(Plan, Command, InitPhases)>> {
    // Death with PID 1 (this process's parent).
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
    )
    .map_err(|e| Error::sys("unshare the run's namespaces", e))?;
    if let Entered::Made(made) = network::enter(last, loopback_up)? {
        let note = Note::Network(made.fresh);
        control::send(notes, &note, &[made.handle.as_raw_fd()])?;
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
        notes,
    )
}
