//! `corral runner exec`: the sandbox a worker uses, run by hand. Runs in
//! the calling process's forked child, so the caller must not have started
//! any thread.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::host::{Host, RunnerConfig};
use crate::profile::Profile;
use crate::request::{Limits, Rootfs, SandboxRequest, Stdio};

/// The PATH given when the person sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
    pub root: ExecRoot,
    /// Input root for Host/Lower (default: an empty directory).
    pub input: Option<PathBuf>,
    pub cwd: String,
    /// "K=V" strings.
    pub env: Vec<String>,
    pub network: bool,
    pub profile: String,
    pub limits: Limits,
    pub uid: u32,
    pub gid: u32,
    /// Interactive shell on this terminal.
    pub shell: bool,
    /// Keep the scratch directory and say where it is.
    pub keep: bool,
    /// Print the outcome as JSON on stderr.
    pub stats: bool,
    /// Subdirectories of the input root mounted read-only.
    pub read_only: Vec<String>,
    pub command: Vec<String>,
}

/// Runs the command; returns the status a shell would report.
pub fn run(config: &RunnerConfig, o: ExecOptions) -> Result<i32> {
    let host = Host::probe(config)?;
    let profile = Profile::load(&o.profile, host.profile_dir.as_deref())?;
    let mut env = Vec::new();
    for kv in &o.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::InvalidRequest(format!("--env {kv:?}: expected K=V")))?;
        env.push((k.to_string(), v.to_string()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if o.shell && !env.iter().any(|(k, _)| k == "TERM") {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let args = match (o.shell, o.command.is_empty()) {
        (true, true) => vec!["/bin/sh".to_string()],
        (false, true) => {
            return Err(Error::InvalidRequest(
                "no command: give one after `--`, or use --shell".into(),
            ))
        }
        _ => o.command.clone(),
    };
    let scratch = tempfile::Builder::new()
        .prefix("corral-exec-")
        .tempdir()
        .map_err(|e| Error::io("create a scratch directory", e))?;
    let empty = scratch.path().join("empty-input");
    let (rootfs, input) = match &o.root {
        ExecRoot::Dir(dir) => (Rootfs::InputRoot, dir.clone()),
        ExecRoot::Host => (Rootfs::Host, o.input.clone().unwrap_or(empty.clone())),
        ExecRoot::Lower(dirs) => (
            Rootfs::Lower(dirs.clone()),
            o.input.clone().unwrap_or(empty.clone()),
        ),
    };
    if input == empty {
        std::fs::create_dir(&empty).map_err(|e| Error::io("create an empty input root", e))?;
    }
    if let (Rootfs::InputRoot, false) = (&rootfs, input.is_dir()) {
        return Err(Error::MissingRootfs(input));
    }
    let input_root = std::path::absolute(&input)
        .map_err(|e| Error::io(format!("input root {}", input.display()), e))?;
    let work = scratch.path().join("run");
    std::fs::create_dir(&work).map_err(|e| Error::io("create the scratch directory", e))?;
    if host.is_root {
        // The sandbox's uid must be able to reach its scratch directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod the scratch directory", e))?;
    }
    let req = SandboxRequest {
        rootfs,
        input_root,
        scratch_dir: work,
        args,
        env,
        cwd: o.cwd.clone(),
        stdin: Stdio::Inherit,
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
        controlling_tty: false,
        profile,
        network: o.network,
        limits: o.limits.clone(),
        uid: o.uid,
        gid: o.gid,
        read_only_subtrees: o.read_only.clone(),
        writable_subtrees: Vec::new(),
    };
    // Mistakes are reported here, before the fork, with their own message.
    let layout = crate::spec::Layout::new(&host, &req)?;
    crate::sandbox::check(&host, &req, &layout)?;
    let interactive = o.shell && nix::unistd::isatty(0).unwrap_or(false);
    let outcome = if interactive {
        let mut pty = crate::tty::Pty::open()?;
        let slave = pty
            .take_slave()
            .ok_or_else(|| Error::InvalidRequest("pty already handed out".into()))?;
        let fd = slave.as_raw_fd();
        let req = SandboxRequest {
            stdin: Stdio::Fd(fd),
            stdout: Stdio::Fd(fd),
            stderr: Stdio::Fd(fd),
            controlling_tty: true,
            ..req
        };
        // Fork first (no thread may exist yet), then copy the terminal.
        let running = crate::isolate::spawn(&host, &req)?;
        drop(slave);
        pty.start_copying()?;
        let outcome = running.wait();
        drop(pty);
        outcome
    } else {
        crate::isolate::run_forked(&host, &req)
    }?;
    if o.stats {
        let json = serde_json::to_string(&outcome).unwrap_or_default();
        eprintln!("{json}");
    }
    if let Some(limit) = outcome.limit_hit {
        eprintln!("corral: stopped by a limit: {limit:?}");
    }
    if o.keep {
        let kept = scratch.keep();
        eprintln!("corral: scratch directory kept at {}", kept.display());
    }
    Ok(outcome.shell_status())
}
