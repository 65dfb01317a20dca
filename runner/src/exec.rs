//! `corral runner exec`: the sandbox a worker uses, run by hand. Runs in
//! the calling process's forked child, so the caller must not have started
//! any thread (or must have stopped every one it started).
//!
//! By default it is a convenience for people (a default `PATH`, this
//! terminal's stdin, a throwaway scratch directory). `runner exec --action`
//! turns those off ([`ExecOptions::exact_env`], [`ExecOptions::null_stdin`],
//! [`ExecOptions::scratch_dir`]) so the command sees what a worker's would.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::{Host, RunnerConfig};
use crate::profile::Profile;
use crate::request::{Limits, Outcome, Rootfs, SandboxRequest, Stdio};

/// The PATH given when the person sets none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What becomes `/`.
#[derive(Debug, Clone)]
pub enum ExecRoot {
    /// This directory (under an overlay) is `/` and the input root.
    Dir(PathBuf),
    /// The host's system directories.
    Host,
    /// These directories stacked, lowest first.
    Lower(Vec<PathBuf>),
}

/// Everything `corral runner exec` accepts.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// What becomes `/`.
    pub root: ExecRoot,
    /// Input root for Host/Lower (default: an empty directory).
    pub input: Option<PathBuf>,
    /// Working directory, relative to the input root.
    pub cwd: String,
    /// "K=V" strings.
    pub env: Vec<String>,
    /// Share the host network (the configuration must allow it).
    pub network: bool,
    /// Sandbox profile: "" for the default, a name or a path.
    pub profile: String,
    /// Limits; unset ones take the configuration's defaults.
    pub limits: Limits,
    /// uid the command runs as inside the sandbox.
    pub uid: u32,
    /// gid likewise.
    pub gid: u32,
    /// Interactive shell on this terminal.
    pub shell: bool,
    /// Keep the scratch directory and say where it is.
    pub keep: bool,
    /// Print the outcome as JSON on stderr.
    pub stats: bool,
    /// Subdirectories of the input root mounted read-only.
    pub read_only: Vec<String>,
    /// Subdirectories inside those that are writable again (REAPI
    /// `SubtreeReadOnly: false` below a read-only directory).
    pub writable: Vec<String>,
    /// The command and its arguments (empty with `shell`: `/bin/sh`).
    pub command: Vec<String>,
    /// `env` is the whole environment: no default `PATH` is added (a
    /// worker adds none).
    pub exact_env: bool,
    /// The command's stdin is `/dev/null`, as for a worker's action,
    /// instead of this process's.
    pub null_stdin: bool,
    /// Use this existing, empty directory as the scratch directory
    /// (`upper/`, `work/`, `rootfs/`) instead of a temporary one. It stays
    /// the caller's, whatever `keep` says: after the run `upper/` holds
    /// what the command changed, as it does for a worker. As root, the
    /// caller makes sure the sandbox's uid can reach it.
    pub scratch_dir: Option<PathBuf>,
    /// The sandbox's hostname (default `corral`).
    pub hostname: Option<String>,
    /// Show the input root's directories owned by the sandbox's user, as a
    /// worker stages them: each one it does not own gets an owned twin in
    /// the overlay's upper directory ([`crate::dir_owner`]). Only with a
    /// scratch directory of the run's own (`scratch_dir` unset).
    pub give_directories: bool,
}

/// The value of `key` (`Threads`, `Umask`…) in `/proc/self/status`.
pub(crate) fn own_status(key: &str) -> Result<String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("read /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| Error::InvalidRequest(format!("no {key}: line in /proc/self/status")))
}

/// The number of threads of this process (`Threads:` in
/// `/proc/self/status`).
pub(crate) fn thread_count() -> Result<usize> {
    own_status("Threads")?
        .parse()
        .map_err(|_| Error::InvalidRequest("no Threads: line in /proc/self/status".into()))
}

/// Waits up to `patience` for this process to be down to its main thread,
/// and refuses if it is not: the sandbox forks and libcontainer clones the
/// caller, which is only sound in a single-threaded process. A thread that
/// was just joined may still be counted for a moment (the kernel wakes the
/// joiner before it has released the thread), hence the wait.
pub fn wait_single_threaded(patience: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let n = thread_count()?;
        if n <= 1 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::InvalidRequest(format!(
                "this process has {n} threads, but the sandbox must be started from a \
                 single-threaded process (it forks, and libcontainer clones its caller)"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A throwaway directory of this run's own, made only when something
/// needs one: the run's scratch directory (none given), an empty input
/// root, the socket of a terminal (`interactive`). A directory made and
/// removed on the host's disk is not free (on this machine's ext4, 0.1 to
/// 0.3 ms each).
fn own_directory(o: &ExecOptions, interactive: bool) -> Result<Option<tempfile::TempDir>> {
    let needs_own = o.scratch_dir.is_none() || interactive || needs_empty_input(o);
    needs_own.then(throwaway_directory).transpose()
}

/// Whether the command's input root is an empty directory of the run's
/// own: a host or image root with no `--input`.
fn needs_empty_input(o: &ExecOptions) -> bool {
    !matches!(o.root, ExecRoot::Dir(_)) && o.input.is_none()
}

/// A new directory of this run's own in the temporary directory.
fn throwaway_directory() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("corral-exec-")
        .tempdir()
        .map_err(|e| Error::io("create a scratch directory", e))
}

/// Runs the command; returns the status a shell would report. Refuses to
/// start if this process has more than one thread.
pub fn run(config: &RunnerConfig, o: ExecOptions) -> Result<i32> {
    run_on(&Host::probe(config)?, o)
}

/// [`run`] on a host already probed (the caller needed its sandbox ids).
pub fn run_on(host: &Host, o: ExecOptions) -> Result<i32> {
    wait_single_threaded(std::time::Duration::ZERO)?;
    let interactive = o.shell && nix::unistd::isatty(0).unwrap_or(false);
    let own = own_directory(&o, interactive)?;
    let scratch = own.as_ref().map(|d| d.path());
    let req = request(
        host.profile_dir.as_deref(),
        host.is_root,
        &o,
        scratch,
        false,
    )?;
    if o.give_directories {
        give_directories(&o, &req, (host.map_uid, host.map_gid))?;
    }
    // Mistakes are reported here, before the fork, with their own message.
    let layout = crate::spec::Layout::new(host, &req)?;
    crate::sandbox::check(host, &req, &layout)?;
    // Without a terminal, a throwaway scratch directory is removed by the
    // sandbox's process once it has answered: its removal is not on this
    // process's clock.
    let remove_after = scratch.filter(|_| !o.keep && !interactive);
    let (outcome, handed_over) = if interactive {
        match scratch {
            Some(dir) => (run_interactive(host, req, dir), false),
            None => (
                Err(Error::InvalidRequest(
                    "no directory for the terminal".into(),
                )),
                false,
            ),
        }
    } else {
        // SAFETY: checked single-threaded at the top of `run_on`, and no
        // thread is started before this point.
        match unsafe { crate::isolate::spawn_removing(host, &req, remove_after) } {
            Ok(running) => (running.wait(), remove_after.is_some()),
            Err(e) => (Err(e), false),
        }
    };
    let own = match own {
        // The child removes it (or, had it died, `wait` did).
        Some(dir) if handed_over => {
            let _ = dir.keep();
            None
        }
        own => own,
    };
    let outcome = outcome?;
    let kept = match (o.keep, &o.scratch_dir, own) {
        // `upper/` is in the run's scratch directory, `run/`.
        (true, None, Some(own)) => Some(own.keep().join("run")),
        _ => None,
    };
    Ok(report(&o, &outcome, kept.as_deref()))
}

/// Makes the twins `o.give_directories` asks for in `req`'s upper
/// directory, for `owner` (host uid, gid).
fn give_directories(o: &ExecOptions, req: &SandboxRequest, owner: (u32, u32)) -> Result<()> {
    let Some(input) = given_input(o) else {
        return Ok(());
    };
    crate::dir_owner::give_directories(&input, &req.scratch_dir.join("upper"), owner)
        .map(drop)
        .map_err(|e| {
            Error::InvalidRequest(format!(
                "giving the directories of {} to the sandbox's user: {e}",
                input.display()
            ))
        })
}

/// The input directory whose directories `o.give_directories` gives, if
/// there is one.
fn given_input(o: &ExecOptions) -> Option<PathBuf> {
    let input = match &o.root {
        ExecRoot::Dir(dir) => Some(dir.clone()),
        ExecRoot::Host | ExecRoot::Lower(_) => o.input.clone(),
    };
    input
        .filter(|dir| dir.is_dir())
        .and_then(|dir| std::path::absolute(dir).ok())
}

/// Says on stderr what the person asked to hear of `outcome` (`--stats`),
/// a limit that stopped the command, and where a scratch directory of this
/// run's own was kept; returns the status a shell would report.
fn report(o: &ExecOptions, outcome: &Outcome, kept: Option<&Path>) -> i32 {
    if o.stats {
        let json = serde_json::to_string(outcome).unwrap_or_default();
        eprintln!("{json}");
    }
    if let Some(limit) = outcome.limit_hit {
        eprintln!("corral: stopped by a limit: {limit:?}");
    }
    if let Some(kept) = kept {
        eprintln!("corral: scratch directory kept at {}", kept.display());
    }
    outcome.shell_status()
}

/// Runs the command through `runner exec`'s resident service
/// ([`crate::resident`], started if none answers) unless the configuration
/// has none (`exec_service_idle_secs = 0`) or the command needs this
/// process's terminal (`--shell` on one); else, or when the service cannot
/// be reached or started (said on stderr), in a container of this
/// process's own, as [`run`]. `config_path` is the configuration's file,
/// which a started service reads; this program serves.
pub fn run_served(
    config: &RunnerConfig,
    config_path: Option<&Path>,
    o: ExecOptions,
) -> Result<i32> {
    let served = match std::env::current_exe() {
        Ok(program) => try_served(config, config_path, &program, o)?,
        Err(e) => Served::Not {
            options: Box::new(o),
            why: Some(Error::io("find this program, which serves", e)),
        },
    };
    match served {
        Served::Ran(status) => Ok(status),
        Served::Not { options, why } => {
            if let Some(e) = why {
                eprintln!(
                    "corral: runner exec's service is unavailable ({e}); \
                     the command runs in a container of this process's own"
                );
            }
            run(config, *options)
        }
    }
}

/// What [`try_served`] did with a command.
#[derive(Debug)]
pub enum Served {
    /// The service ran it; the status a shell would report.
    Ran(i32),
    /// Not handed to the service (nothing was sent): the configuration has
    /// none, the command needs this process's terminal, or, with `why`, the
    /// service could not be reached or started.
    Not {
        /// The command, given back.
        options: Box<ExecOptions>,
        /// Why the service was not reached, when it should have been.
        why: Option<Error>,
    },
}

/// [`run_served`]'s part that needs no container of this process's own, so
/// that a small front program can do it and leave the rest to the program
/// that can: the command to the service `program` runs, if it should and
/// can be reached.
pub fn try_served(
    config: &RunnerConfig,
    config_path: Option<&Path>,
    program: &Path,
    o: ExecOptions,
) -> Result<Served> {
    let terminal = o.shell && nix::unistd::isatty(0).unwrap_or(false);
    if config.exec_service_idle().is_zero() || terminal {
        return Ok(Served::Not {
            options: Box::new(o),
            why: None,
        });
    }
    let place = match crate::resident::Place::for_config(program, config_path) {
        Ok(place) => place,
        Err(e) => {
            return Ok(Served::Not {
                options: Box::new(o),
                why: Some(e),
            })
        }
    };
    let mut tries = 0;
    loop {
        let conn = match crate::resident::connect_or_start(&place, config_path) {
            Ok(conn) => conn,
            Err(e) => {
                return Ok(Served::Not {
                    options: Box::new(o),
                    why: Some(e),
                })
            }
        };
        match run_on_service(config, &conn, &o) {
            // A service going away took nothing: the next try reaches a
            // new one once its socket no longer answers.
            Err(Error::NotTaken(why)) if tries < NOT_TAKEN_TRIES => {
                tracing::debug!(why, "the exec service did not take the call; again");
                tries += 1;
                std::thread::sleep(NOT_TAKEN_PAUSE);
            }
            done => return done.map(Served::Ran),
        }
    }
}

/// How often a call the exec service did not take is sent again, and the
/// pause before each: a service's threads take milliseconds to exit.
const NOT_TAKEN_TRIES: u32 = 20;
const NOT_TAKEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// [`run_served`] once connected: the request made here, the streams
/// this process has handed over with it. The service makes the run's
/// scratch directory (ahead of the call where it can, with the twins
/// `give_directories` asks for) unless `o` gives one; a directory of this
/// process's own holds an empty input root, when one is needed.
fn run_on_service(
    config: &RunnerConfig,
    conn: &std::os::fd::OwnedFd,
    o: &ExecOptions,
) -> Result<i32> {
    let is_root = nix::unistd::geteuid().is_root();
    let own = needs_empty_input(o).then(throwaway_directory).transpose()?;
    let made = o.scratch_dir.is_none();
    let profile_dir = config.profile_dir.as_deref();
    let mut req = request(
        profile_dir,
        is_root,
        o,
        own.as_ref().map(|d| d.path()),
        made,
    )?;
    let mut streams = Vec::new();
    for (fd, stream) in [
        (0, &mut req.stdin),
        (1, &mut req.stdout),
        (2, &mut req.stderr),
    ] {
        if *stream == Stdio::Inherit {
            *stream = Stdio::Passed(streams.len());
            streams.push(fd);
        }
    }
    let scratch = if made {
        crate::resident::Scratch::Made {
            give: given_input(o).filter(|_| o.give_directories),
            keep: o.keep,
        }
    } else {
        if o.give_directories {
            give_directories(o, &req, config.sandbox_ids())?;
        }
        crate::resident::Scratch::Given
    };
    let outcome = crate::resident::call(conn, req, &streams, scratch)?;
    let kept = outcome.upper_dir.parent().filter(|_| made && o.keep);
    Ok(report(o, &outcome, kept))
}

/// The command's environment: exactly `--env`, plus a default `PATH`
/// unless `exact_env`, and `TERM` with `--shell`.
fn environment(o: &ExecOptions) -> Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for kv in &o.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::InvalidRequest(format!("--env {kv:?}: expected K=V")))?;
        env.push((k.to_string(), v.to_string()));
    }
    if !o.exact_env && !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if o.shell && !env.iter().any(|(k, _)| k == "TERM") {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    Ok(env)
}

/// The sandbox request of `o`, its throwaway directories in `scratch`
/// (given whenever `o` needs one: see `run_on`); named profiles are looked
/// up in `profile_dir`, and as root the scratch directory is opened to the
/// sandbox's user. With `made_elsewhere` and no scratch directory in `o`,
/// the request's is left empty for the exec service to name.
fn request(
    profile_dir: Option<&Path>,
    is_root: bool,
    o: &ExecOptions,
    scratch: Option<&Path>,
    made_elsewhere: bool,
) -> Result<SandboxRequest> {
    let own = |name: &str| {
        scratch
            .map(|dir| dir.join(name))
            .ok_or_else(|| Error::InvalidRequest(format!("no scratch directory for {name}")))
    };
    let profile = Profile::load(&o.profile, profile_dir)?;
    let args = match (o.shell, o.command.is_empty()) {
        (true, true) => vec!["/bin/sh".to_string()],
        (false, true) => {
            return Err(Error::InvalidRequest(
                "no command: give one after `--`, or use --shell".into(),
            ))
        }
        _ => o.command.clone(),
    };
    let given_or_empty = || -> Result<PathBuf> {
        match &o.input {
            Some(dir) => Ok(dir.clone()),
            None => {
                let empty = own("empty-input")?;
                std::fs::create_dir(&empty)
                    .map_err(|e| Error::io("create an empty input root", e))?;
                Ok(empty)
            }
        }
    };
    let (rootfs, input) = match &o.root {
        ExecRoot::Dir(dir) => (Rootfs::InputRoot, dir.clone()),
        ExecRoot::Host => (Rootfs::Host, given_or_empty()?),
        ExecRoot::Lower(dirs) => (Rootfs::Lower(dirs.clone()), given_or_empty()?),
    };
    if let (Rootfs::InputRoot, false) = (&rootfs, input.is_dir()) {
        return Err(Error::MissingRootfs(input));
    }
    let input_root = std::path::absolute(&input)
        .map_err(|e| Error::io(format!("input root {}", input.display()), e))?;
    let work = match (&o.scratch_dir, made_elsewhere) {
        (Some(dir), _) => std::path::absolute(dir)
            .map_err(|e| Error::io(format!("scratch directory {}", dir.display()), e))?,
        // The exec service names it.
        (None, true) => PathBuf::new(),
        (None, false) => {
            let work = own("run")?;
            std::fs::create_dir(&work).map_err(|e| Error::io("create the scratch directory", e))?;
            work
        }
    };
    if let (true, Some(scratch)) = (is_root, scratch) {
        // The sandbox's uid must be able to reach its scratch directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod the scratch directory", e))?;
    }
    let hostname = match &o.hostname {
        Some(name) => {
            corral_proto::hostname::check(name)
                .map_err(|reason| Error::InvalidRequest(format!("--hostname {name:?} {reason}")))?;
            name.clone()
        }
        None => corral_proto::hostname::DEFAULT.to_string(),
    };
    Ok(SandboxRequest {
        rootfs,
        input_root,
        scratch_dir: work,
        args,
        env: environment(o)?,
        cwd: o.cwd.clone(),
        stdin: if o.null_stdin {
            Stdio::Null
        } else {
            Stdio::Inherit
        },
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
        controlling_tty: false,
        profile,
        network: o.network,
        limits: o.limits.clone(),
        uid: o.uid,
        gid: o.gid,
        read_only_subtrees: o.read_only.clone(),
        writable_subtrees: o.writable.clone(),
        hostname,
        // A scratch directory of the run's own (made here, or by the exec
        // service) has in `upper/` no more than twins.
        upper_holds_only_directories: o.scratch_dir.is_none(),
        upper_watch: None,
    })
}

/// `--shell` on a terminal: a terminal made in the container's own
/// devpts, whose master libcontainer sends to a socket in `scratch`,
/// copied to and from this one. Must be called with a single thread.
fn run_interactive(host: &Host, req: SandboxRequest, scratch: &Path) -> Result<Outcome> {
    let socket = scratch.join("console.sock");
    let console = crate::tty::ConsoleSocket::bind(&socket)?;
    let req = SandboxRequest {
        stdin: Stdio::Terminal(socket),
        controlling_tty: true,
        ..req
    };
    // Fork first (no thread may exist yet), then copy the terminal.
    // SAFETY: our caller is single-threaded (checked at the top of
    // `run_on`), and no thread is started before this point.
    let running = unsafe { crate::isolate::spawn(host, &req) }?;
    match console.receive(running.answer())? {
        Some(master) => {
            let terminal = crate::tty::Terminal::attach(master)?;
            terminal.start_copying()?;
            let outcome = running.wait();
            drop(terminal);
            outcome
        }
        // The run ended before its container had a terminal.
        None => running.wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_thread_is_refused_with_the_reason() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(thread_count().unwrap() >= 2);
        let e = wait_single_threaded(std::time::Duration::from_millis(20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("single-threaded"), "{e}");
        drop(tx);
        other.join().unwrap();
    }
}
