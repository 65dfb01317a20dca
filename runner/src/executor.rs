//! The code that runs in the container's init, in libcontainer's
//! `Executor` hooks.
//!
//! While libcontainer makes the container (`setup_envs`, before the start
//! signal): nothing of the request is known yet, so only what every run
//! needs: an empty environment, death with the run's process, `lo` up in a
//! private network namespace.
//!
//! Once started (`exec`): the init receives the run's [`Plan`] on the
//! control socket, builds the request's root and makes it `/`
//! (`inside::rootfs`), sets the hostname, rlimits, streams, environment
//! and working directory, takes the requested uid/gid (see
//! [`crate::identity`]), confines itself (capabilities dropped, Landlock,
//! then seccomp) and forks: the parent stays as PID 1 of the sandbox's PID
//! namespace and reaps every orphan, the child execs the command. When the
//! command exits, PID 1 reports its end on the control socket and exits,
//! and the kernel kills whatever the command left behind in the namespace.
//! A plan that cannot be applied is reported the same way, and the command
//! never starts.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI};
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Spec;

mod serving;
mod sibling;
mod stack;
mod suspending;

use crate::control::{self, InitPhases, Report, CONTROL_FD};
use crate::error::{Error, Result};
use crate::plan::{Plan, Rlimit};

/// The executor handed to libcontainer. Cloned into the container process.
#[derive(Clone)]
pub(crate) struct SandboxExecutor {
    /// The network namespace is private: bring `lo` up while the container
    /// is made (the init holds the capabilities of
    /// [`crate::loopback::INIT_CAPS`] for this).
    pub loopback_up: bool,
    /// The container serves run after run (see `serving`), each in
    /// namespaces of its own, instead of one.
    pub serves_many: bool,
}

/// Sends `report` to the outside; a failure to do so is reported by the
/// init's death instead.
fn report(report: &Report) {
    let _ = control::send(CONTROL_FD, report, &[]);
}

/// The report of a wait status of the command, if it ended.
fn report_of(status: WaitStatus) -> Option<Report> {
    match status {
        WaitStatus::Exited(_, code) => Some(Report::Exited(code)),
        WaitStatus::Signaled(_, sig, _) => Some(Report::Signaled(sig as i32)),
        _ => None,
    }
}

/// Landlock: read and execute everywhere, write only beneath `writable`.
fn restrict_writes(writable: &[PathBuf]) -> Result<()> {
    let abi = ABI::V5;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let fail =
        |what: &str, e: landlock::RulesetError| Error::Container(format!("landlock {what}: {e}"));
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.create())
        .map_err(|e| fail("ruleset", e))?;
    ruleset = ruleset
        .add_rules(landlock::path_beneath_rules(["/"], read))
        .map_err(|e| fail("read rule", e))?;
    let writable: Vec<&PathBuf> = writable.iter().filter(|p| p.exists()).collect();
    ruleset = ruleset
        .add_rules(landlock::path_beneath_rules(writable, all))
        .map_err(|e| fail("write rule", e))?;
    let status = ruleset
        .restrict_self()
        .map_err(|e| fail("restrict_self", e))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(Error::Container(
            "landlock is not supported by this kernel".into(),
        ));
    }
    Ok(())
}

/// Drops every capability, then applies Landlock and seccomp.
fn lock_down(plan: &Plan, phases: &mut InitPhases) -> Result<()> {
    crate::loopback::drop_all_capabilities()?;
    phases.capabilities = control::monotonic_ns();
    if let Some(writable) = &plan.writable {
        restrict_writes(writable)?;
    }
    phases.landlock = control::monotonic_ns();
    plan.seccomp.install()?;
    phases.seccomp = control::monotonic_ns();
    Ok(())
}

/// The resource number of an rlimit's OCI name.
fn resource(kind: &str) -> Result<libc::__rlimit_resource_t> {
    Ok(match kind {
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        other => return Err(Error::Container(format!("unknown rlimit {other}"))),
    })
}

fn set_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    for r in rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.value,
            rlim_max: r.value,
        };
        // SAFETY: setrlimit with a valid resource and a valid rlimit.
        if unsafe { libc::setrlimit(resource(&r.kind)?, &lim) } != 0 {
            return Err(Error::sys(
                format!("set {} to {}", r.kind, r.value),
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

/// The command's standard streams: the three descriptors sent with the
/// plan become 0, 1 and 2 (a terminal keeps libcontainer's).
fn set_streams(plan: &Plan, fds: Vec<OwnedFd>) -> Result<()> {
    if plan.terminal {
        return Ok(());
    }
    if fds.len() != 3 {
        return Err(Error::Container(format!(
            "expected 3 standard streams with the plan, got {}",
            fds.len()
        )));
    }
    for (target, fd) in fds.iter().enumerate() {
        nix::unistd::dup2(fd.as_raw_fd(), target as i32)
            .map_err(|e| Error::sys(format!("dup2 onto fd {target}"), e))?;
    }
    Ok(())
}

/// Exactly `env` as this process's environment (which `posix_spawnp`
/// searches `PATH` in), with libc's calls rather than `std::env`'s (see
/// `setup_envs`).
fn set_environment(env: &[(String, String)]) -> Result<()> {
    // Empty first: a serving container's runs share the memory `environ`
    // lives in (`suspending`), and a variable of the last run must not
    // steer this run's `PATH` search.
    // SAFETY: clearenv only empties this single-threaded process's
    // environment.
    unsafe { libc::clearenv() };
    for (key, value) in env {
        let bad = || Error::InvalidRequest(format!("environment variable {key:?}"));
        let k = CString::new(key.as_bytes()).map_err(|_| bad())?;
        let v = CString::new(value.as_bytes()).map_err(|_| bad())?;
        // SAFETY: two NUL-terminated strings; this process is
        // single-threaded.
        if unsafe { libc::setenv(k.as_ptr(), v.as_ptr(), 1) } != 0 {
            return Err(Error::sys(
                format!("set environment variable {key:?}"),
                nix::errno::Errno::last(),
            ));
        }
    }
    Ok(())
}

/// libcontainer made the container's terminal this process's controlling
/// terminal; the command takes it in a session of its own, which the
/// kernel allows only once no session holds it. Giving it up sends the
/// session (this process) SIGHUP, ignored meanwhile.
fn release_terminal() -> Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN and SIG_DFL install no handler code.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }
        .map_err(|e| Error::sys("ignore SIGHUP", e))?;
    // SAFETY: TIOCNOTTY on fd 0 takes no argument.
    let r = unsafe { libc::ioctl(0, libc::TIOCNOTTY) };
    let err = nix::errno::Errno::last();
    // SAFETY: as above.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigDfl) }
        .map_err(|e| Error::sys("restore SIGHUP", e))?;
    if r < 0 {
        return Err(Error::sys("give up the terminal", err));
    }
    Ok(())
}

/// Everything between the plan and the command's start. `host` is the
/// detached copy of the view of the host ([`rootfs::detach_host`]), `dev`
/// the `/dev` the root receives; every descriptor above the control socket
/// but `keep` is closed.
///
/// [`rootfs::detach_host`]: crate::inside::rootfs::detach_host
fn prepare(
    plan: &Plan,
    fds: Vec<OwnedFd>,
    (host, dev): (OwnedFd, &Path),
    keep: i32,
    phases: &mut InitPhases,
) -> Result<()> {
    let clones = crate::inside::rootfs::enter(plan, &host, dev)?;
    phases.root = control::monotonic_ns();
    drop(host);
    hand_out(&clones)?;
    drop(clones);
    nix::unistd::sethostname(&plan.hostname)
        .map_err(|e| Error::sys(format!("set the hostname {:?}", plan.hostname), e))?;
    // The `/dev/core` link every other Linux sandbox has (bubblewrap,
    // runc); `/proc/kcore` itself is masked.
    match std::os::unix::fs::symlink("/proc/kcore", "/dev/core") {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(Error::io("link /dev/core", e));
        }
        _ => {}
    }
    set_rlimits(&plan.rlimits)?;
    set_streams(plan, fds)?;
    set_environment(&plan.env)?;
    nix::unistd::chdir(&plan.cwd)
        .map_err(|_| Error::BadWorkingDirectory(plan.cwd.display().to_string()))?;
    if plan.terminal && plan.controlling_tty {
        release_terminal()?;
    }
    // Nothing but the streams and the control socket goes further.
    close_all_but(keep);
    let (uid, gid) = plan.identity;
    crate::identity::become_ids(uid, gid)?;
    phases.settings = control::monotonic_ns();
    lock_down(plan, phases)
}

/// Reads the plan on `plan_fd` and applies it up to the command's start
/// ([`prepare`], with `host`'s view and `dev` as `/dev`), having handed the
/// host view and `also_hold` out to be released after the answer
/// ([`Report::Hold`]). `None` when the outside closed the control socket
/// instead of sending a plan.
fn take_plan(
    plan_fd: i32,
    (host, dev): (OwnedFd, &Path),
    also_hold: Option<OwnedFd>,
    keep: i32,
) -> Result<Option<(Plan, Command, InitPhases)>> {
    let Some((plan, fds)): Option<(Plan, _)> = control::recv(plan_fd)? else {
        return Ok(None);
    };
    let mut phases = InitPhases {
        plan: control::monotonic_ns(),
        ..InitPhases::default()
    };
    let command = Command::of(&plan)?;
    let hold: Vec<i32> = std::iter::once(host.as_raw_fd())
        .chain(also_hold.as_ref().map(AsRawFd::as_raw_fd))
        .collect();
    control::send(CONTROL_FD, &Report::Hold, &hold)?;
    drop(also_hold);
    prepare(&plan, fds, (host, dev), keep, &mut phases)?;
    Ok(Some((plan, command, phases)))
}

/// Hands `held` (descriptors whose last release unmounts something) to
/// the outside to hold until after the answer, a message for every
/// [`control::MAX_FDS`].
fn hand_out(held: &[OwnedFd]) -> Result<()> {
    let raw: Vec<i32> = held.iter().map(AsRawFd::as_raw_fd).collect();
    for chunk in raw.chunks(control::MAX_FDS) {
        control::send(CONTROL_FD, &Report::Hold, chunk)?;
    }
    Ok(())
}

/// The command of a plan, as the exec calls take it.
struct Command {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Command {
    fn of(plan: &Plan) -> Result<Command> {
        let program = CString::new(plan.args.first().cloned().unwrap_or_default())
            .map_err(|_| Error::InvalidRequest("the command contains NUL".into()))?;
        let argv: Vec<CString> = plan
            .args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::InvalidRequest("an argument contains NUL".into()))?;
        let env: Vec<CString> = plan
            .env
            .iter()
            .map(|(k, v)| CString::new(format!("{k}={v}")))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::InvalidRequest("an environment variable contains NUL".into()))?;
        Ok(Command { program, argv, env })
    }
}

/// Closes every descriptor above the control socket except `keep`.
/// libcontainer leaves some open in its init; one is a handle on a procfs
/// instance of its own, detached, whose release unmounts it and waits for
/// the kernel's RCU grace period (0.5 ms and more). Done before the plan,
/// that wait is off the caller's clock.
fn close_all_but(keep: i32) {
    let first = CONTROL_FD as u32 + 1;
    let keep = keep.max(CONTROL_FD) as u32;
    // SAFETY: close_range on descriptors this process no longer uses; the
    // kept one, owned by the caller, and the control socket are outside
    // both ranges.
    unsafe {
        if keep > first {
            libc::syscall(libc::SYS_close_range, first, keep - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
    }
}

/// Receives the plan, applies it, forks the command and reaps. Returns
/// only with the reason the command could not start.
fn run(plan_fd: i32) -> Result<Infallible> {
    // Death with the run's process (the parent, by `CLONE_PARENT`), armed
    // again: libcontainer's change of ids cleared the one `setup_envs` set.
    // Had the parent died before this, the plan's socket reads as closed.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Before the plan, so that a container made ahead of its request does
    // this off the caller's clock.
    let host = crate::inside::rootfs::detach_host()?;
    close_all_but(host.as_raw_fd());
    // The last reference to the copy of the host's mounts leaves with the
    // run's process: releasing it unmounts them all, which waits for an RCU
    // grace period, after the caller is answered. Nothing of the host stays
    // in the container once `take_plan` has dropped this process's own.
    let (plan, command, phases) = take_plan(plan_fd, (host, Path::new("/dev")), None, CONTROL_FD)?
        .ok_or_else(|| Error::Container("the run's process closed the control socket".into()))?;
    let phases = plan.report_phases.then_some(phases);
    if plan.controlling_tty {
        // SAFETY: this process is libcontainer's single-threaded container
        // init, so fork cannot leave another thread's lock held in the child.
        return match unsafe { fork() } {
            Ok(ForkResult::Child) => run_command(&plan, &command.program, &command.argv),
            Ok(ForkResult::Parent { child }) => reap(child, phases),
            Err(e) => Err(Error::sys("fork of the command", e)),
        };
    }
    match spawn_command(&command.program, &command.argv, &command.env) {
        Ok(child) => reap(child, phases),
        Err(errno) => {
            // As a shell would: the reason on the command's stderr, 127.
            cannot_execute(&plan.args[0], errno);
            report(&Report::Exited(127));
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Starts the command with `posix_spawnp` along the environment's `PATH`.
/// glibc's is a vfork-style clone sharing this process's memory until the
/// exec: no page tables are copied, and none torn down at the exec (about
/// 0.35 ms of a trivial action's 1 ms here, against a fork). The child
/// closes the control socket (the command must not be able to forge a
/// report), and every signal gets its default disposition and an empty
/// mask (this process ignores SIGPIPE, as every Rust program does, and an
/// ignored signal would stay ignored across the exec). glibc's two
/// internal signals, 32 and 33, which it sets up again in every program it
/// starts, are left ignored, as in everything glibc's `posix_spawn` starts.
fn spawn_command(
    program: &CString,
    argv: &[CString],
    env: &[CString],
) -> std::result::Result<Pid, nix::errno::Errno> {
    let mut args: Vec<*mut libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .collect();
    args.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr() as *mut libc::c_char)
        .collect();
    envp.push(std::ptr::null_mut());
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed after; every pointer passed (program, argv, envp, the
    // sigsets) is valid, and argv and envp are NULL-terminated, for the
    // duration of the calls.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawn_file_actions_addclose(&mut actions, CONTROL_FD);
        libc::posix_spawnattr_init(&mut attr);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        libc::posix_spawnattr_setsigmask(&mut attr, &none);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        );
        let mut pid: libc::pid_t = 0;
        let r = libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            &actions,
            &attr,
            args.as_ptr(),
            envp.as_ptr(),
        );
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        if r != 0 {
            return Err(nix::errno::Errno::from_raw(r));
        }
        Ok(Pid::from_raw(pid))
    }
}

/// The process of a command that takes its terminal (which needs a
/// `setsid` before the exec, which `posix_spawn` cannot do portably):
/// closes the control socket, gives SIGPIPE its default disposition back
/// (see [`spawn_command`]), takes the terminal, execs. Never returns.
fn run_command(plan: &Plan, program: &CString, argv: &[CString]) -> ! {
    // SAFETY: closing our own copy of the control socket; the command must
    // not be able to forge a report.
    unsafe { libc::close(CONTROL_FD) };
    default_signals();
    if plan.controlling_tty {
        // A new session whose controlling terminal is the one on stdin: job
        // control and /dev/tty work in the shell.
        let _ = nix::unistd::setsid();
        // SAFETY: TIOCSCTTY on fd 0 with argument 0 (no stealing).
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    let err = match nix::unistd::execvp(program, argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    cannot_execute(&plan.args[0], err);
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(127) }
}

/// Says on the command's stderr (file descriptor 2 itself: a test
/// harness's capture of `eprintln!` would otherwise swallow it) why the
/// command could not be executed, as a shell would.
fn cannot_execute(program: &str, errno: nix::errno::Errno) {
    let line = format!("corral sandbox: cannot execute {program:?}: {errno}\n");
    // SAFETY: write of a buffer valid for its length to descriptor 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Every signal back to its default disposition and none blocked, as
/// [`spawn_command`] gives them (this process ignores SIGPIPE, as every
/// Rust program does, and an ignored signal stays ignored across an exec);
/// glibc's two internal signals, 32 and 33, are left as they are.
fn default_signals() {
    for sig in (1..=libc::SIGRTMAX()).filter(|s| !(32..=33).contains(s)) {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; an invalid number is
        // refused by the kernel and changes nothing.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set, initialised before use, as the new mask.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// PID 1: reap everything until the command itself is gone; then kill
/// and reap whatever it left in the namespace, report its end and exit.
/// Never returns.
///
/// The report comes only once the namespace holds nothing but PID 1, so
/// the outside may answer its caller on the report, without waiting for
/// this process's own exit (which releases the container's namespaces).
/// `phases`, when the plan asked for them, go out just before the end.
fn reap(command: Pid, mut phases: Option<InitPhases>) -> ! {
    if let Some(p) = &mut phases {
        p.spawned = control::monotonic_ns();
    }
    let ended = reap_run(command);
    if let Some(mut p) = phases {
        p.reaped = control::monotonic_ns();
        report(&Report::Phases(p));
    }
    report(&ended);
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// PID 1's part of a run's end: reaps every child until `command` has
/// ended, then kills and reaps everything else in the PID namespace.
/// Returns how the command ended; exits if waiting fails.
fn reap_run(command: Pid) -> Report {
    let ended = loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(command) => {
                if let Some(r) = report_of(status) {
                    break r;
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            // SAFETY: _exit never returns and is always safe.
            Err(_) => unsafe { libc::_exit(125) },
        }
    };
    kill_the_rest();
    ended
}

/// From PID 1: kills every other process of the namespace and reaps them
/// all.
fn kill_the_rest() {
    // From PID 1, -1 is every other process of the namespace.
    // SAFETY: kill with pid -1 and a valid signal.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    // Until ECHILD: none left.
    while let Ok(_) | Err(nix::errno::Errno::EINTR) = waitpid(None, None) {}
}

impl Executor for SandboxExecutor {
    fn exec(&self, _spec: &Spec) -> std::result::Result<(), ExecutorError> {
        let served = if self.serves_many {
            serving::serve(self.loopback_up)
        } else {
            run(CONTROL_FD)
        };
        let err = match served {
            Err(e) => e,
            Ok(never) => match never {},
        };
        report(&Report::Failed(err.to_string()));
        // SAFETY: _exit is always safe; nothing of this process is needed.
        unsafe { libc::_exit(125) }
    }

    fn validate(&self, _spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        Ok(())
    }

    /// The request-independent part, while the container is made: no
    /// environment (the plan brings exactly the request's; libcontainer
    /// would add `HOME`), death with the run's process, `lo` up.
    fn setup_envs(
        &self,
        _envs: HashMap<String, String>,
    ) -> std::result::Result<(), ExecutorSetEnvsError> {
        // libc's own, not `std::env`: std's environment lock may have been
        // held by another thread of the process libcontainer cloned (a test
        // harness's), and would then never be released in this one.
        // SAFETY: clearenv only empties this single-threaded process's
        // environment.
        unsafe { libc::clearenv() };
        // SAFETY: prctl with PR_SET_PDEATHSIG and a signal number. The
        // parent is the run's process, which waits for this one.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if self.loopback_up {
            crate::loopback::bring_up().map_err(|e| ExecutorSetEnvsError::Other(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_of_the_command_are_reported() {
        let pid = Pid::from_raw(7);
        assert_eq!(
            report_of(WaitStatus::Exited(pid, 3)),
            Some(Report::Exited(3))
        );
        assert_eq!(
            report_of(WaitStatus::Signaled(
                pid,
                nix::sys::signal::Signal::SIGKILL,
                false
            )),
            Some(Report::Signaled(9))
        );
        assert_eq!(report_of(WaitStatus::StillAlive), None);
    }
}
