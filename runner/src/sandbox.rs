//! One run, start to finish: check the request, lay out the scratch
//! directory, write the OCI bundle, make the run's cgroup with its limits
//! (through the host's `LimitEnforcer`), let libcontainer create the
//! container, start it, watch the clock and the bytes written, collect
//! status and usage, delete the container and its cgroup.
//!
//! [`run`] must be called in a single-threaded process it may disturb:
//! libcontainer clones the caller, `chdir`s it and makes it non-dumpable.
//! The zygote and `runner exec` call it in a freshly forked child.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups::LimitEnforcer;
use crate::error::{Error, Result};
use crate::executor::{decode_status, SandboxExecutor, STATUS_FD};
use crate::host::Host;
use crate::request::{LimitHit, Outcome, Rootfs, SandboxRequest, Stdio};
use crate::seccomp::Filters;
use crate::spec::{self, Layout};

mod cleanup;

pub use cleanup::Cleanup;

/// How often the runner measures the upper directory against the bound.
const DISK_POLL: Duration = Duration::from_millis(200);
/// Longest wait between two looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Checks everything a person could have got wrong, before any container
/// exists, so the error names the real problem.
pub fn check(host: &Host, req: &SandboxRequest, layout: &Layout) -> Result<()> {
    if req.args.is_empty() {
        return Err(Error::InvalidRequest("the command is empty".into()));
    }
    if req.network && !host.allow_network {
        return Err(Error::NetworkForbidden);
    }
    if !req.input_root.is_absolute() || !req.input_root.is_dir() {
        return Err(Error::MissingInputRoot(req.input_root.clone()));
    }
    if !req.scratch_dir.is_absolute() || !req.scratch_dir.is_dir() {
        return Err(Error::InvalidRequest(format!(
            "scratch directory {} must be an existing absolute directory",
            req.scratch_dir.display()
        )));
    }
    if let Rootfs::Lower(dirs) = &req.rootfs {
        if dirs.is_empty() {
            return Err(Error::InvalidRequest("no lower directories given".into()));
        }
        for d in dirs {
            if !d.is_dir() {
                return Err(Error::MissingRootfs(d.clone()));
            }
        }
    }
    let subtrees = (req
        .read_only_subtrees
        .iter()
        .map(|s| ("read-only subtree", s)))
    .chain(
        req.writable_subtrees
            .iter()
            .map(|s| ("writable subtree", s)),
    );
    for (what, sub) in subtrees {
        spec::check_relative(what, sub)?;
        // Every component must be a real directory: the mount's source is
        // resolved on the host, so a symlink could point anywhere.
        let mut path = req.input_root.clone();
        for component in sub.split('/').filter(|c| !c.is_empty() && *c != ".") {
            path.push(component);
            if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(Error::InvalidRequest(format!(
                    "{what} {sub:?} is not a directory of the input root (at {component:?})"
                )));
            }
        }
    }
    // The caller may have made a working directory the input root lacks in
    // the overlay's upper directory (REAPI: the worker creates it).
    let is_dir =
        |base: &Path| std::fs::symlink_metadata(base.join(&req.cwd)).is_ok_and(|m| m.is_dir());
    if !is_dir(&req.input_root) && !is_dir(&layout.upper) {
        return Err(Error::BadWorkingDirectory(req.cwd.clone()));
    }
    resolve_command(req, layout).map(|_| ())
}

/// Maps a path as the sandbox sees it to the host paths that may hold it,
/// top layer first.
fn host_candidates(req: &SandboxRequest, layout: &Layout, inside: &Path) -> Vec<PathBuf> {
    if let Ok(rel) = inside.strip_prefix(&layout.input_mount) {
        return vec![req.input_root.join(rel)];
    }
    match &req.rootfs {
        Rootfs::InputRoot => vec![],
        Rootfs::Host => {
            if req.profile.host_dirs.iter().any(|d| inside.starts_with(d)) {
                vec![inside.to_path_buf()]
            } else {
                vec![]
            }
        }
        Rootfs::Lower(dirs) => {
            let rel = inside.strip_prefix("/").unwrap_or(inside);
            dirs.iter().rev().map(|d| d.join(rel)).collect()
        }
    }
}

/// Finds the command the way execvp will inside: as a path if it has a
/// `/`, else along the request's PATH.
pub fn resolve_command(req: &SandboxRequest, layout: &Layout) -> Result<PathBuf> {
    let cmd = &req.args[0];
    let exists = |inside: &Path| {
        host_candidates(req, layout, inside)
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok())
    };
    let mut searched = Vec::new();
    if cmd.contains('/') {
        let inside = layout.cwd.join(cmd);
        if exists(&inside) {
            return Ok(inside);
        }
        searched.push(inside.display().to_string());
    } else {
        let path = req
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let inside = layout.cwd.join(dir).join(cmd);
            if exists(&inside) {
                return Ok(inside);
            }
            searched.push(inside.display().to_string());
        }
    }
    Err(Error::CommandNotFound {
        command: cmd.clone(),
        searched: if searched.is_empty() {
            "nothing: PATH is empty".into()
        } else {
            searched.join(", ")
        },
    })
}

fn open_stdio(which: &Stdio, fd: i32) -> Result<OwnedFd> {
    match which {
        Stdio::Null => File::options()
            .read(fd == 0)
            .write(fd != 0)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| Error::io("open /dev/null", e)),
        Stdio::File(path) => File::create(path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(format!("create {}", path.display()), e)),
        Stdio::Inherit | Stdio::Fd(_) => nix::unistd::dup(match which {
            Stdio::Fd(own) => *own,
            _ => fd,
        })
        // SAFETY: dup returned a new descriptor that nothing else owns.
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        .map_err(|e| Error::sys(format!("dup fd {fd}"), e)),
    }
}

fn make_dir(path: &Path, host: &Host) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    if host.is_root {
        // The sandbox's root is host uid map_uid: it must own what the
        // overlay writes into and where mount points are created.
        nix::unistd::chown(path, Some(host.map_uid.into()), Some(host.map_gid.into()))
            .map_err(|e| Error::sys(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

/// Bytes in a directory tree (file sizes; directories and links count 0).
pub fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("corral-{}-{nanos:09}", std::process::id())
}

/// Runs the request in a new container and waits for it. See the module
/// comment for the constraints on the calling process.
///
/// # Safety
///
/// The calling process must be single-threaded: libcontainer clones it,
/// and a clone of a multi-threaded process may inherit a lock (e.g. the
/// allocator's) held by a thread that does not exist in the clone. Call it
/// in a freshly forked child (as [`crate::isolate`] and [`crate::zygote`]
/// do), since it also `chdir`s the caller and makes it non-dumpable.
pub unsafe fn run(host: &Host, req: &SandboxRequest) -> Result<Outcome> {
    // SAFETY: our caller upholds the same contract (single-threaded).
    let (outcome, cleanup) = unsafe { run_deferred(host, req) }?;
    cleanup.finish();
    Ok(outcome)
}

/// Like [`run`], but returns as soon as the command has ended and leaves
/// the clean-up to the caller.
///
/// # Safety
///
/// As for [`run`]: the calling process must be single-threaded, because
/// libcontainer clones it.
pub unsafe fn run_deferred(host: &Host, req: &SandboxRequest) -> Result<(Outcome, Cleanup)> {
    let t0 = Instant::now();
    let layout = Layout::new(host, req)?;
    check(host, req, &layout)?;

    let limits = host.with_defaults(&req.limits);
    make_dir(&layout.rootfs, host)?;
    make_dir(&layout.upper, host)?;
    make_dir(&layout.work, host)?;
    if let Rootfs::Lower(_) = req.rootfs {
        make_dir(&req.scratch_dir.join("sys-upper"), host)?;
        make_dir(&req.scratch_dir.join("sys-work"), host)?;
    }
    let id = unique_id();
    let enforcer = host.limit_enforcer();
    // Never empty: an empty path means the caller's own cgroup.
    let cgroups_path = enforcer.cgroups_path(&id);
    let nested;
    let host = if host.covers_cgroupfs() {
        crate::nocgroup::enter(&cgroups_path)?;
        // The container's ids now map to this namespace's 0, the runner.
        nested = Host {
            map_uid: 0,
            map_gid: 0,
            ..host.clone()
        };
        &nested
    } else {
        host
    };
    let bundle = host.state_dir.join(format!("{id}.bundle"));
    let mut cleanup = Cleanup {
        container: None,
        state_dir: host.state_dir.join(&id),
        bundle: bundle.clone(),
        enforcer,
        id,
    };
    let result = prepare_bundle(host, req, &layout, &limits, &bundle, &cgroups_path)
        .and_then(|()| {
            tracing::debug!(ms = ms(t0), "prepared scratch directory and bundle");
            cleanup.enforcer.create(&cleanup.id, &limits)
        })
        .and_then(|()| create_and_wait(host, req, &layout, &limits, &mut cleanup));
    match result {
        Ok(outcome) => Ok((outcome, cleanup)),
        Err(e) => {
            cleanup.finish();
            Err(e)
        }
    }
}

/// Writes the OCI bundle (`config.json`) of one run.
fn prepare_bundle(
    host: &Host,
    req: &SandboxRequest,
    layout: &Layout,
    limits: &crate::request::Limits,
    bundle: &Path,
    cgroups_path: &str,
) -> Result<()> {
    std::fs::create_dir_all(bundle)
        .map_err(|e| Error::io(format!("create {}", bundle.display()), e))?;
    let config = spec::build(host, req, layout, limits, cgroups_path);
    std::fs::write(bundle.join("config.json"), config.to_string())
        .map_err(|e| Error::io("write config.json", e))
}

/// Creates the container, runs it to its end and hands the container to
/// `cleanup` (unless under nocgroup, where libcontainer must not delete it).
fn create_and_wait(
    host: &Host,
    req: &SandboxRequest,
    layout: &Layout,
    limits: &crate::request::Limits,
    cleanup: &mut Cleanup,
) -> Result<Outcome> {
    let executor = SandboxExecutor {
        filters: Filters::build(&req.profile)?,
        landlock: req.profile.landlock,
        writable: layout.writable.clone(),
        env: req.env.clone(),
        args: req.args.clone(),
        controlling_tty: req.controlling_tty,
        loopback_up: !req.network,
        identity: (req.uid, req.gid),
    };
    // The status pipe's write end must be fd 3 in the container.
    let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| Error::sys("status pipe", e))?;
    // Move both ends above STATUS_FD first: the read end may have been
    // given fd 3 itself, and dup2 would silently close it.
    let (status_r, status_w) = {
        let (low_r, low_w) = (status_r, status_w);
        (dup_high(&low_r)?, dup_high(&low_w)?)
    };
    nix::unistd::dup2(status_w.as_raw_fd(), STATUS_FD)
        .map_err(|e| Error::sys("dup2 status pipe", e))?;
    drop(status_w);
    // SAFETY: dup2 just made STATUS_FD a descriptor that this function owns.
    let status_w = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };

    let t0 = Instant::now();
    let mut container = ContainerBuilder::new(cleanup.id.clone(), SyscallType::default())
        .with_root_path(&host.state_dir)
        .map_err(|e| Error::Container(e.to_string()))?
        .with_executor(executor)
        .with_stdin(open_stdio(&req.stdin, 0)?)
        .with_stdout(open_stdio(&req.stdout, 1)?)
        .with_stderr(open_stdio(&req.stderr, 2)?)
        .with_preserved_fds(1)
        .as_init(&cleanup.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| Error::Container(format!("create: {e}")))?;
    tracing::debug!(ms = ms(t0), "libcontainer create");
    drop(status_w);
    let t0 = Instant::now();
    let outcome = start_and_wait(
        &mut container,
        layout,
        limits,
        (cleanup.enforcer.as_ref(), &cleanup.id),
        status_r,
    );
    tracing::debug!(ms = ms(t0), "start, run and wait");
    if !host.covers_cgroupfs() {
        cleanup.container = Some(container);
    }
    outcome
}

/// Milliseconds since `t0`, for the phase timings logged at debug level.
fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn start_and_wait(
    container: &mut libcontainer::container::Container,
    layout: &Layout,
    limits: &crate::request::Limits,
    (enforcer, id): (&dyn LimitEnforcer, &str),
    status_r: OwnedFd,
) -> Result<Outcome> {
    let pid = container
        .pid()
        .ok_or_else(|| Error::Container("created container has no pid".into()))?;
    let started = Instant::now();
    container
        .start()
        .map_err(|e| Error::Container(format!("start: {e}")))?;
    let pidfd = pidfd_open(pid)?;
    let pid_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let mut timed_out = false;
    let mut cancelled = false;
    let mut over_written = false;
    let mut next_disk_check = started + DISK_POLL;
    loop {
        let now = Instant::now();
        let deadline = limits.timeout.map(|t| started + t);
        if deadline.is_some_and(|d| now >= d) && !timed_out {
            timed_out = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
        if crate::cancel::requested() && !cancelled {
            cancelled = true;
            tracing::info!("run cancelled by its caller; killing the container");
        }
        // Once the run must end, kill every process of its PID namespace on
        // each wake-up until PID 1 is gone. Killing PID 1 alone should take
        // the namespace with it, but a SIGKILL that lands while the init is
        // forking the command has been seen to leave that child running,
        // with the init stuck waiting for it.
        if timed_out || cancelled || over_written {
            kill_namespace(pid, pid_ns.as_deref());
        }
        if let Some(max) = limits.max_written_bytes {
            if now >= next_disk_check && !over_written {
                next_disk_check = now + DISK_POLL;
                if tree_bytes(&layout.upper) > max {
                    over_written = true;
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
        // Never sleep long: a cancel that lands between the check above and
        // the poll below must still be seen promptly.
        let mut wait = CANCEL_POLL;
        if let Some(d) = deadline.filter(|_| !timed_out) {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if limits.max_written_bytes.is_some() && !over_written {
            wait = wait.min(next_disk_check.saturating_duration_since(now));
        }
        if poll_readable(&pidfd, wait)? {
            break;
        }
    }
    let ending = timed_out || cancelled || over_written;
    let (status, rusage) = wait4(pid, ending.then_some(pid_ns.as_deref()))?;
    let wall_time = started.elapsed();
    let mut buf = [0u8; 8];
    let n = nix::unistd::read(status_r.as_raw_fd(), &mut buf).unwrap_or(0);
    let (mut exit_code, mut signal) = decode_status(&buf[..n]).unwrap_or((None, None));
    if exit_code.is_none() && signal.is_none() {
        // PID 1 itself was killed (timeout, limits): report its end.
        if libc::WIFSIGNALED(status) {
            signal = Some(libc::WTERMSIG(status));
        } else if libc::WIFEXITED(status) {
            exit_code = Some(libc::WEXITSTATUS(status));
        }
    }
    let usage = enforcer.usage(id);
    if limits
        .max_written_bytes
        .is_some_and(|max| tree_bytes(&layout.upper) > max)
    {
        over_written = true;
    }
    let limit_hit = if usage.oom_killed {
        Some(LimitHit::Memory)
    } else if usage.pids_limit_hit {
        Some(LimitHit::Pids)
    } else if over_written || signal == Some(libc::SIGXFSZ) {
        Some(LimitHit::WrittenBytes)
    } else if signal == Some(libc::SIGXCPU) {
        Some(LimitHit::CpuTime)
    } else if timed_out {
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
        timed_out,
        limit_hit,
        user_cpu,
        system_cpu,
        // At least the largest process's RSS; more when the cgroup saw the
        // whole tree's charge (or, on v2 before Linux 5.19, only the charge
        // left at the end, which may be less).
        peak_memory_bytes: usage.peak_memory_bytes.max(rusage.ru_maxrss as u64 * 1024),
        wall_time,
        upper_dir: layout.upper.clone(),
    })
}

/// A close-on-exec copy of `fd` numbered 10 or higher.
fn dup_high(fd: &OwnedFd) -> Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|e| Error::sys("fcntl F_DUPFD_CLOEXEC", e))?;
    // SAFETY: fcntl just returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// SIGKILL to `init` and to every process whose PID namespace is `ns`
/// (the `pid:[…]` link of `init`'s `/proc/PID/ns/pid`).
fn kill_namespace(init: Pid, ns: Option<&Path>) {
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

fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::sys("pidfd_open", nix::errno::Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `fd` is readable (the process exited) or `timeout` passes.
fn poll_readable(fd: &OwnedFd, timeout: Duration) -> Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: pfd is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let err = nix::errno::Errno::last();
        if err == nix::errno::Errno::EINTR {
            return Ok(false);
        }
        return Err(Error::sys("poll", err));
    }
    Ok(n > 0)
}

/// Reaps `pid`. With `kill_ns`, the run was stopped: until the init is
/// reaped, every process of its namespace is killed again every 50 ms (see
/// [`kill_namespace`]), so an init waiting for a straggler cannot hang us.
fn wait4(pid: Pid, kill_ns: Option<Option<&Path>>) -> Result<(i32, libc::rusage)> {
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
