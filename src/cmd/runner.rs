//! `corral runner`: serve the runner protocol on a unix socket, or run one
//! command in the sandbox by hand (`corral runner exec`), or (as root)
//! delegate a cgroup directory to an unprivileged runner.
//!
//! No thread may exist before the sandbox forks: `exec` never starts a
//! runtime, and the server forks its container helper first.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use corral_runner::exec::{ExecOptions, ExecRoot};
use corral_runner::{Limits, RunnerConfig};

/// Options of `corral runner`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Serve the runner protocol on this unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Runner configuration (TOML); every field optional.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Run one command in the same sandbox a worker would use.
    Exec(Box<ExecArgs>),
    /// As root: create a cgroup directory under every v1 controller and give
    /// it to USER's uid, so that an unprivileged runner can enforce limits.
    Delegate(DelegateArgs),
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// DIR becomes `/` (under an overlay: DIR itself is never written).
    #[arg(long, conflicts_with_all = ["host", "lower", "input"])]
    root: Option<PathBuf>,
    /// The host's system directories, read-only, form `/`.
    #[arg(long, conflicts_with = "lower")]
    host: bool,
    /// Read-only directories stacked as `/`, lowest first (repeatable).
    #[arg(long)]
    lower: Vec<PathBuf>,
    /// Input root, mounted at the exec path with --host/--lower (default: an empty directory).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Working directory, relative to the input root.
    #[arg(long, default_value = "")]
    cwd: String,
    /// Environment variable K=V (repeatable). Only these are set, plus a
    /// default PATH when none is given (and TERM with --shell).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Share the host network (the configuration must allow it).
    #[arg(long)]
    network: bool,
    /// Sandbox profile: a name in the profile directory or a path to a TOML file.
    #[arg(long, default_value = "")]
    profile: String,
    /// Wall-clock limit in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Memory limit in bytes.
    #[arg(long)]
    memory: Option<u64>,
    /// Limit on processes and threads.
    #[arg(long)]
    pids: Option<u64>,
    /// Bound on bytes written.
    #[arg(long)]
    max_written: Option<u64>,
    /// uid inside the sandbox.
    #[arg(long, default_value_t = 0)]
    uid: u32,
    /// gid inside the sandbox.
    #[arg(long, default_value_t = 0)]
    gid: u32,
    /// Open an interactive shell (this terminal) in the sandbox instead of CMD.
    #[arg(long)]
    shell: bool,
    /// Keep the scratch directory (the overlay's upper directory holds what
    /// the command changed) and print its path.
    #[arg(long)]
    keep: bool,
    /// Print how the command ended and what it used, as JSON, on stderr.
    #[arg(long)]
    stats: bool,
    /// Runner configuration (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Subdirectory of the input root to mount read-only (repeatable), as
    /// REAPI's `SubtreeReadOnly` does.
    #[arg(long = "read-only", value_name = "SUBDIR")]
    read_only: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DelegateArgs {
    /// uid that will run `corral runner`.
    #[arg(long)]
    uid: u32,
    /// gid likewise (default: same as uid).
    #[arg(long)]
    gid: Option<u32>,
    /// Directory name under each controller (default corral-user-UID).
    #[arg(long)]
    parent: Option<String>,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<RunnerConfig> {
    Ok(match path {
        Some(p) => RunnerConfig::load(p)?,
        None => RunnerConfig::default(),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match (args.command, args.socket) {
        (Some(Sub::Exec(e)), _) => exec(*e),
        (Some(Sub::Delegate(d)), _) => {
            let parent = d.parent.unwrap_or_else(|| format!("corral-user-{}", d.uid));
            for dir in corral_runner::cgroups::delegate(&parent, d.uid, d.gid.unwrap_or(d.uid))? {
                println!("{}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(socket)) => {
            let config = load_config(args.config.as_ref())?;
            corral_runner::service::serve_blocking(&config, &socket)?;
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => {
            anyhow::bail!("give --socket PATH to serve, or a subcommand (exec, delegate)")
        }
    }
}

fn exec(a: ExecArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(a.config.as_ref())?;
    let root = match (a.root, a.host, a.lower.is_empty()) {
        (Some(root), _, _) => ExecRoot::Dir(root),
        (None, true, _) => ExecRoot::Host,
        (None, false, false) => ExecRoot::Lower(a.lower),
        (None, false, true) => anyhow::bail!("choose the root: --root DIR, --host or --lower DIR"),
    };
    let opts = ExecOptions {
        root,
        input: a.input,
        cwd: a.cwd,
        env: a.env,
        network: a.network,
        profile: a.profile,
        limits: Limits {
            timeout: a.timeout.map(Duration::from_secs_f64),
            memory_bytes: a.memory,
            max_pids: a.pids,
            cpu_millis: None,
            max_written_bytes: a.max_written,
        },
        uid: a.uid,
        gid: a.gid,
        shell: a.shell,
        keep: a.keep,
        stats: a.stats,
        read_only: a.read_only,
        command: a.command,
    };
    let status = corral_runner::exec::run(&config, opts)?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
