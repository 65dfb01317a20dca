//! Watching a started container until its command ends: the clock, the
//! bytes written, the cancel flag; then its status and what it used.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::written::Written;
use crate::cgroups::LimitEnforcer;
use crate::control::{self, InitPhases, Report};
use crate::error::{Error, Result};
use crate::request::{LimitHit, Limits, Outcome};

/// How often the runner measures the upper directory against the bound.
const DISK_POLL: Duration = Duration::from_millis(200);
/// Longest wait between two looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// The started container of one run.
pub(crate) struct Watched<'a> {
    /// The container's init (PID 1 inside).
    pub init: Pid,
    /// A pidfd of it.
    pub pidfd: &'a OwnedFd,
    /// The outside end of the control socket, for the init's report.
    pub control: RawFd,
    /// Where the run's changes go, and how they are measured.
    pub written: Written<'a>,
    /// Its limits, defaults filled in.
    pub limits: &'a Limits,
    /// The enforcer and the run's id in it.
    pub enforcer: (&'a dyn LimitEnforcer, &'a str),
    /// When the command was started.
    pub started: Instant,
    /// When the plan was sent, in `CLOCK_MONOTONIC` nanoseconds.
    pub plan_sent: u64,
}

/// Whether [`log_phases`] would log: only then does the plan ask the init
/// for its step times.
pub(crate) fn phases_wanted() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// Logs (at debug) where the request's part of a run went, in
/// microseconds: the plan's way in, the init's steps, the report's way
/// out (up to now).
fn log_phases(plan_sent: u64, p: &InitPhases) {
    let us = |from: u64, to: u64| to.saturating_sub(from) / 1000;
    tracing::debug!(
        plan_in = us(plan_sent, p.plan),
        root = us(p.plan, p.root),
        settings = us(p.root, p.settings),
        capabilities = us(p.settings, p.capabilities),
        landlock = us(p.capabilities, p.landlock),
        seccomp = us(p.landlock, p.seccomp),
        spawn = us(p.seccomp, p.spawned),
        command = us(p.spawned, p.reaped),
        report_out = us(p.reaped, control::monotonic_ns()),
        "init phases (µs)"
    );
}

/// What ended the run, as far as the watch knows.
#[derive(Default)]
struct Stops {
    timed_out: bool,
    cancelled: bool,
    over_written: bool,
}

impl Stops {
    fn any(&self) -> bool {
        self.timed_out || self.cancelled || self.over_written
    }
}

/// How a watch ended: the outcome, and whether the init was reaped (if
/// not, it is exiting, and the clean-up reaps it).
pub(crate) struct Watch {
    /// How the run ended.
    pub outcome: Outcome,
    /// The init has been reaped: its pid may belong to another process.
    pub init_reaped: bool,
    /// Descriptors the init handed out to be released after the answer
    /// ([`Report::Hold`]).
    pub held: Vec<OwnedFd>,
}

/// Waits for the command to end, enforcing the timeout, the written-bytes
/// bound and cancellation, and returns how it ended.
///
/// The init reports the command's end once its namespace holds nothing
/// else. Where a cgroup measures the run, that report is the end: the
/// init's own exit (releasing the container's namespaces) is left to the
/// clean-up. With rlimits only, the usage comes from `wait4` of the init,
/// so the watch waits for its exit.
pub(crate) fn watch(mut w: Watched<'_>) -> Result<Watch> {
    let early = w.enforcer.0.moves_processes();
    let mut listen = early;
    let pid_ns = std::fs::read_link(format!("/proc/{}/ns/pid", w.init)).ok();
    let mut stops = Stops::default();
    let mut next_disk_check = w.started + DISK_POLL;
    let deadline = w.limits.timeout.map(|t| w.started + t);
    let mut held = Vec::new();
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) && !stops.timed_out {
            stops.timed_out = true;
            let _ = kill(w.init, Signal::SIGKILL);
        }
        if crate::cancel::requested() && !stops.cancelled {
            stops.cancelled = true;
            tracing::info!("run cancelled by its caller; killing the container");
        }
        // Once the run must end, kill every process of its PID namespace on
        // each wake-up until PID 1 is gone. Killing PID 1 alone should take
        // the namespace with it, but a SIGKILL that lands while the init is
        // forking the command has been seen to leave that child running,
        // with the init stuck waiting for it.
        if stops.any() {
            kill_namespace(w.init, pid_ns.as_deref());
        }
        if let Some(max) = w.limits.max_written_bytes {
            if now >= next_disk_check && !stops.over_written {
                next_disk_check = now + DISK_POLL;
                if w.written.bytes() > max {
                    stops.over_written = true;
                    let _ = kill(w.init, Signal::SIGKILL);
                }
            }
        }
        // Never sleep long: a cancel that lands between the check above and
        // the poll below must still be seen promptly.
        let mut wait = CANCEL_POLL;
        if let Some(d) = deadline.filter(|_| !stops.timed_out) {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if w.limits.max_written_bytes.is_some() && !stops.over_written {
            wait = wait.min(next_disk_check.saturating_duration_since(now));
        }
        let control = listen.then_some(w.control);
        match poll_readable(w.pidfd, control, wait)? {
            Woke::Exited => break,
            Woke::Reported if stops.any() => listen = false,
            Woke::Reported => {
                // Written whole by the init; a blocking read takes it all.
                let Some((report, fds)) = control::recv::<Report>(w.control)? else {
                    // Closed without a report: the init's exit tells.
                    listen = false;
                    continue;
                };
                match report {
                    Report::Hold => {
                        held.extend(fds);
                        continue;
                    }
                    Report::Phases(p) => {
                        log_phases(w.plan_sent, &p);
                        continue;
                    }
                    Report::Waiting => continue,
                    _ => {}
                }
                let wall_time = w.started.elapsed();
                // SAFETY: rusage is plain data; zeroed is a valid value.
                let rusage: libc::rusage = unsafe { std::mem::zeroed() };
                let outcome = outcome(&mut w, stops, Some(report), 0, rusage, wall_time)?;
                return Ok(Watch {
                    outcome,
                    init_reaped: false,
                    held,
                });
            }
            Woke::Timeout => {}
        }
    }
    let (status, rusage) = wait4(w.init, stops.any().then_some(pid_ns.as_deref()))?;
    let wall_time = w.started.elapsed();
    // The init wrote its report whole before it exited, if it wrote one.
    set_nonblocking(w.control)?;
    let report = loop {
        match control::recv::<Report>(w.control) {
            Ok(Some((Report::Hold, fds))) => held.extend(fds),
            Ok(Some((Report::Phases(p), _))) => log_phases(w.plan_sent, &p),
            Ok(Some((Report::Waiting, _))) => {}
            Ok(Some((report, _))) => break Some(report),
            _ => break None,
        }
    };
    Ok(Watch {
        outcome: outcome(&mut w, stops, report, status, rusage, wall_time)?,
        init_reaped: true,
        held,
    })
}

/// The outcome from the init's report, its wait status and the cgroup.
fn outcome(
    w: &mut Watched<'_>,
    mut stops: Stops,
    report: Option<Report>,
    status: i32,
    rusage: libc::rusage,
    wall_time: Duration,
) -> Result<Outcome> {
    let (mut exit_code, mut signal) = (None, None);
    match report {
        Some(Report::Exited(code)) => exit_code = Some(code),
        Some(Report::Signaled(sig)) => signal = Some(sig),
        Some(Report::Failed(message)) => return Err(Error::Container(message)),
        // Never passed here: the watch keeps it apart.
        Some(Report::Hold | Report::Phases(_) | Report::Waiting) => {}
        // PID 1 itself was killed (timeout, limits): report its end.
        None if libc::WIFSIGNALED(status) => signal = Some(libc::WTERMSIG(status)),
        None if libc::WIFEXITED(status) => exit_code = Some(libc::WEXITSTATUS(status)),
        None => {}
    }
    let (enforcer, id) = w.enforcer;
    let usage = enforcer.usage(id);
    if w.limits
        .max_written_bytes
        .is_some_and(|max| w.written.bytes() > max)
    {
        stops.over_written = true;
    }
    let limit_hit = if usage.oom_killed {
        Some(LimitHit::Memory)
    } else if usage.pids_limit_hit {
        Some(LimitHit::Pids)
    } else if stops.over_written || signal == Some(libc::SIGXFSZ) {
        Some(LimitHit::WrittenBytes)
    } else if signal == Some(libc::SIGXCPU) {
        Some(LimitHit::CpuTime)
    } else if stops.timed_out {
        Some(LimitHit::Timeout)
    } else {
        None
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    // The cgroup counts every process of the run; wait4 only those PID 1
    // reaped.
    let (user_cpu, system_cpu) = match usage.cpu {
        Some(cpu) => (cpu.user, cpu.system),
        None => (tv(rusage.ru_utime), tv(rusage.ru_stime)),
    };
    Ok(Outcome {
        exit_code,
        signal,
        timed_out: stops.timed_out,
        limit_hit,
        user_cpu,
        system_cpu,
        // At least the largest process's RSS; more when the cgroup saw the
        // whole tree's charge (or, on v2 before Linux 5.19, only the charge
        // left at the end, which may be less).
        peak_memory_bytes: usage.peak_memory_bytes.max(rusage.ru_maxrss as u64 * 1024),
        wall_time,
        upper_dir: PathBuf::from(w.written.upper()),
    })
}

fn set_nonblocking(fd: RawFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::sys("F_GETFL", e))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| Error::sys("F_SETFL", e))
}

/// SIGKILL to `init` and to every process whose PID namespace is `ns`
/// (the `pid:[…]` link of `init`'s `/proc/PID/ns/pid`).
pub(crate) fn kill_namespace(init: Pid, ns: Option<&Path>) {
    let _ = kill(init, Signal::SIGKILL);
    let Some(ns) = ns else { return };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|l| l == ns) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// What woke the watch.
pub(super) enum Woke {
    /// The init exited (its pidfd is readable).
    Exited,
    /// The control socket has the init's report (or was closed).
    Reported,
    /// Time to look at the clock, the disk and the cancel flag.
    Timeout,
}

/// Waits until the init exits, its report arrives on `control` (when
/// given), or `timeout` passes.
pub(super) fn poll_readable(
    pidfd: &OwnedFd,
    control: Option<RawFd>,
    timeout: Duration,
) -> Result<Woke> {
    let mut fds =
        [pidfd.as_raw_fd(), control.unwrap_or(pidfd.as_raw_fd())].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
    let count = if control.is_some() { 2 } else { 1 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` holds `count` valid pollfds for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), count, ms) };
    if n < 0 {
        let err = nix::errno::Errno::last();
        if err == nix::errno::Errno::EINTR {
            return Ok(Woke::Timeout);
        }
        return Err(Error::sys("poll", err));
    }
    Ok(if fds[0].revents != 0 {
        Woke::Exited
    } else if count == 2 && fds[1].revents != 0 {
        Woke::Reported
    } else {
        Woke::Timeout
    })
}

/// Reaps `pid`. With `kill_ns`, the run was stopped: until the init is
/// reaped, every process of its namespace is killed again every 50 ms (see
/// [`kill_namespace`]), so an init waiting for a straggler cannot hang us.
pub(crate) fn wait4(pid: Pid, kill_ns: Option<Option<&Path>>) -> Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if kill_ns.is_some() { libc::WNOHANG } else { 0 };
    loop {
        if let Some(ns) = kill_ns {
            kill_namespace(pid, ns);
        }
        // SAFETY: status and rusage are valid for writes during the call.
        let r = unsafe { libc::wait4(pid.as_raw(), &mut status, flags, &mut rusage) };
        if r > 0 || (r == 0 && kill_ns.is_none()) {
            return Ok((status, rusage));
        }
        if r == 0 {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let err = nix::errno::Errno::last();
        if err != nix::errno::Errno::EINTR {
            return Err(Error::sys("wait4 for the container", err));
        }
    }
}
