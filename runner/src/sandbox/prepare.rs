//! A container made before its request: libcontainer creates it from a
//! spec that names nothing of the request (`spec`), in the run's private
//! mount namespace (`private_ns`); the runner moves its init into the run's
//! cgroup and starts it, and the init (our executor) waits for the run's
//! plan on the control socket. Nothing of libcontainer is left for the
//! request.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::{ms, private_ns};
use crate::cgroups::LimitEnforcer;
use crate::control::{self, CONTROL_FD};
use crate::error::{Error, Result};
use crate::executor::SandboxExecutor;
use crate::host::Host;
use crate::spec::{self, Shape, FRESH_DEV, HOST_VIEW, NEW_ROOT};

/// A started container whose init waits for its request.
pub(crate) struct Prepared {
    /// The container's init.
    pub init: Pid,
    /// A pidfd of the init: readable once it has exited.
    pub pidfd: OwnedFd,
    /// The container's mount namespace, held so that the init's exit does
    /// not unmount it all before the caller is answered (see
    /// `Cleanup::namespaces`).
    pub mount_ns: Option<OwnedFd>,
    /// The outside end of the control socket.
    pub control: OwnedFd,
    /// The enforcer, its directories pinned, and the run's id in it.
    pub enforcer: Box<dyn LimitEnforcer>,
    /// The run's id: its container's and its cgroup's name.
    pub id: String,
    /// The container serves run after run (see `super::reuse`).
    pub serves_many: bool,
}

/// `corral-PID-SECONDS-NANOS`: the run's process and when it began, which
/// a starting runner reads to tell stale cgroups (`cgroups::stale`).
fn unique_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "corral-{}-{}-{:09}",
        std::process::id(),
        now.as_secs(),
        now.subsec_nanos()
    )
}

fn dev_null() -> Result<OwnedFd> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open /dev/null", e))
}

fn make_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("create {}", path.display()), e))
}

/// Makes the container. `console` is the socket libcontainer sends the
/// terminal's master to, with a terminal shape. With `serves_many`, its
/// init serves run after run (see `super::reuse`). With `overlap_attach`
/// (a run whose request is waiting), the kernel's RCU grace period of the
/// first move into a cgroup is started at once by a throwaway child, so it
/// runs while libcontainer works (see [`attach_ahead`]).
///
/// # Safety
///
/// The calling process must be single-threaded and made for this run:
/// libcontainer clones it (a clone of a multi-threaded process may inherit
/// a lock held by a thread that does not exist in the clone), `chdir`s it
/// and makes it non-dumpable, and this function moves it into a mount
/// namespace of its own.
pub(crate) unsafe fn prepare(
    host: &Host,
    shape: Shape,
    console: Option<&Path>,
    serves_many: bool,
    overlap_attach: bool,
) -> Result<Prepared> {
    let t0 = Instant::now();
    let id = unique_id();
    let enforcer = host.pinned_enforcer()?;
    enforcer.create(&id)?;
    let helper = if overlap_attach && enforcer.moves_processes() {
        // SAFETY: our caller guarantees a single-threaded process.
        unsafe { attach_ahead(enforcer.as_ref(), &id) }
    } else {
        None
    };
    let children_before = children();
    let executor = SandboxExecutor {
        loopback_up: !shape.network,
        serves_many,
    };
    // SAFETY: our caller upholds the same contract.
    let made = unsafe { create(host, (shape, executor), console, &id, enforcer.as_ref()) };
    if made.is_err() {
        kill_new_children(&children_before);
    }
    // The container's processes are made, with the default disposition:
    // from here on this process only waits and cleans up, and must live
    // through the hang-up of a terminal whose session ends (`runner exec`
    // in a terminal of its own returns before the clean-up is done).
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    if let Some(helper) = helper {
        let _ = nix::sys::wait::waitpid(helper, None);
    }
    match made {
        Ok((init, pidfd, control)) => {
            tracing::debug!(ms = ms(t0), "container prepared");
            let mount_ns = std::fs::File::open(format!("/proc/{init}/ns/mnt"))
                .ok()
                .map(OwnedFd::from);
            Ok(Prepared {
                init,
                pidfd,
                mount_ns,
                control,
                enforcer,
                id,
                serves_many,
            })
        }
        Err(e) => {
            let _ = enforcer.remove(&id);
            Err(e)
        }
    }
}

/// This process's children (it is single-threaded: its one thread's).
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs child `pid` and reaps it.
fn kill_and_reap(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Kills and reaps what a failed create left behind. libcontainer's
/// intermediate process and the container's init are this process's
/// children (the init by `CLONE_PARENT`); when the create fails half-way
/// (a cancel signal interrupting it when the zygote dies, say), they
/// would wait forever for a parent that has given up, holding whatever
/// the runner's caller gave it as stdout and stderr.
fn kill_new_children(before: &[libc::pid_t]) {
    for pid in children().into_iter().filter(|pid| !before.contains(pid)) {
        let pid = nix::unistd::Pid::from_raw(pid);
        kill_and_reap(pid);
    }
}

/// The private namespace, the bundle, libcontainer's create, the cgroup.
///
/// # Safety
///
/// As for [`prepare`].
unsafe fn create(
    host: &Host,
    (shape, executor): (Shape, SandboxExecutor),
    console: Option<&Path>,
    id: &str,
    enforcer: &dyn LimitEnforcer,
) -> Result<(Pid, OwnedFd, OwnedFd)> {
    let serves_many = executor.serves_many;
    let cgroups_path = enforcer.cgroups_path(id);
    let host = private_ns::enter(host, &cgroups_path)?;
    let state = host.state_dir.clone();
    let root = state.join("root");
    for dir in [
        "proc",
        "dev",
        &HOST_VIEW[1..],
        &NEW_ROOT[1..],
        &FRESH_DEV[1..],
    ] {
        make_dir(&root.join(dir))?;
    }
    let bundle = state.join("bundle");
    make_dir(&bundle)?;
    let config = spec::build(&host, shape, &root, &cgroups_path);
    std::fs::write(bundle.join("config.json"), config.to_string())
        .map_err(|e| Error::io("write config.json", e))?;
    let (outside, inside) = control::pair()?;
    let t0 = Instant::now();
    let mut container = with_fd(inside, CONTROL_FD, || {
        let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&state)
            .map_err(|e| Error::Container(e.to_string()))?
            .with_executor(executor)
            .with_preserved_fds(1);
        builder = match console {
            Some(socket) => builder.with_console_socket(Some(PathBuf::from(socket))),
            None => builder
                .with_stdin(dev_null()?)
                .with_stdout(dev_null()?)
                .with_stderr(dev_null()?),
        };
        builder
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| Error::Container(format!("create: {e}")))
    })?;
    tracing::debug!(ms = ms(t0), "libcontainer create");
    let init = container
        .pid()
        .ok_or_else(|| Error::Container("created container has no pid".into()))?;
    let pidfd = pidfd_open(init)?;
    // Started at once: until then the init waits for libcontainer's start
    // signal and would outlive this process if it died (its parent-death
    // signal is lost when libcontainer sets its ids). Started, it arms that
    // signal again and waits for the plan, and nothing of the command
    // exists before the plan, which comes after the move below.
    if let Err(e) = container.start() {
        kill_and_reap(init);
        return Err(Error::Container(format!("start: {e}")));
    }
    let t0 = Instant::now();
    if let Err(e) = enforcer.attach(id, init.as_raw()) {
        kill_and_reap(init);
        return Err(e);
    }
    tracing::debug!(ms = ms(t0), "init moved into the run's cgroup");
    if serves_many {
        // Now that it is in the cgroup, the init may make the first run's
        // process (see `executor::serving`).
        if let Err(e) = super::reuse::next_run_process(&outside) {
            kill_and_reap(init);
            return Err(e);
        }
    }
    Ok((init, pidfd, outside))
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::sys("pidfd_open", nix::errno::Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Forks a child that moves itself into run `id`'s cgroup and exits.
///
/// Moving a process into a cgroup takes the kernel's cgroup threadgroup
/// lock for writing, which waits for an RCU grace period (about 10 ms
/// here) unless another move ended less than a grace period ago. The
/// child's move starts that wait now, while libcontainer makes the
/// container; the init's own move then finds the grace period passed.
///
/// # Safety
///
/// The calling process must be single-threaded (it forks).
unsafe fn attach_ahead(enforcer: &dyn LimitEnforcer, id: &str) -> Option<Pid> {
    // SAFETY: the caller is single-threaded, so the child inherits no lock
    // held by another thread.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = enforcer.attach(id, nix::unistd::getpid().as_raw());
            // SAFETY: leaves without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Some(child),
        Err(_) => None,
    }
}

/// Runs `f` with `fd` at number `at` (what libcontainer passes on as a
/// preserved descriptor), restoring whatever had that number afterwards.
fn with_fd<T>(fd: OwnedFd, at: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let saved = match fcntl(at, FcntlArg::F_GETFD) {
        Ok(flags) => {
            let high = fcntl(at, FcntlArg::F_DUPFD_CLOEXEC(10))
                .map_err(|e| Error::sys(format!("save fd {at}"), e))?;
            // SAFETY: fcntl just returned this descriptor to us alone.
            Some((unsafe { OwnedFd::from_raw_fd(high) }, flags))
        }
        Err(_) => None,
    };
    nix::unistd::dup2(fd.as_raw_fd(), at)
        .map_err(|e| Error::sys(format!("dup2 onto fd {at}"), e))?;
    drop(fd);
    let result = f();
    match saved {
        Some((high, flags)) => {
            nix::unistd::dup2(high.as_raw_fd(), at)
                .map_err(|e| Error::sys(format!("restore fd {at}"), e))?;
            fcntl(at, FcntlArg::F_SETFD(FdFlag::from_bits_truncate(flags)))
                .map_err(|e| Error::sys(format!("restore fd {at}'s flags"), e))?;
        }
        None => {
            let _ = nix::unistd::close(at);
        }
    }
    result
}
