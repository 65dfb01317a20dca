//! `corral runner`: serve the runner protocol on a unix socket, or run one
//! command in the sandbox by hand (`corral runner exec`), or reproduce a
//! remote action (`corral runner exec --action`, see [`reproduce`]), or (as
//! root) delegate a cgroup directory to an unprivileged runner.
//!
//! No thread may exist when the sandbox forks: `exec` never starts a
//! runtime, `exec --action` stops its runtime (and checks) before the
//! sandbox starts, and the server forks its container helper first.

mod farm_plan;
mod outputs;
mod recorded;
mod reproduce;
mod request;
mod scratch;

use std::path::{Path, PathBuf};
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
    /// A host path no action may see, added to the configuration's
    /// `hidden_paths` (repeatable). `corral worker` passes its key, token
    /// and data directory.
    #[arg(long, value_name = "PATH")]
    hide: Vec<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Run one command in the same sandbox a worker would use.
    ///
    /// Its scratch directory (the overlay's upper directory, where what the
    /// command writes goes) is made under $TMPDIR (else /tmp), by a
    /// service of its own for each $TMPDIR; on a tmpfs a short command runs
    /// about 1 ms faster, holding what it writes in memory
    /// (docs/sandbox.md).
    Exec(Box<ExecArgs>),
    /// As root: create a cgroup directory under every v1 controller and give
    /// it to USER's uid, so that an unprivileged runner can enforce limits.
    Delegate(DelegateArgs),
    /// Serve `runner exec` with containers made ahead of its commands, on
    /// this socket, until idle for the configuration's
    /// `exec_service_idle_secs`. `runner exec` starts it itself, in a
    /// directory only its user may enter (docs/sandbox.md).
    Resident(ResidentArgs),
}

#[derive(Debug, clap::Args)]
struct ResidentArgs {
    /// The unix socket to serve on (a socket already there is replaced;
    /// any other file is refused).
    #[arg(long)]
    socket: PathBuf,
    /// Runner configuration (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// What `/` is for a reproduced action, overriding the farm's choice.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RootfsArg {
    /// The input root is `/` (what the farm does for `buildstream` instances).
    InputRoot,
    /// The host's system directories, the input root at the exec path.
    Host,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// Reproduce the remote action with this digest (HASH/SIZE) exactly as
    /// the farm's worker ran it (as its result in the farm's action cache
    /// records; else as a farm with the default configuration would): fetch
    /// it, its input root and its image from --remote, run its command,
    /// print its stdout and stderr and exit with its exit code.
    #[arg(
        long,
        value_name = "HASH/SIZE",
        requires = "remote",
        conflicts_with_all = [
            "root", "host", "lower", "input", "cwd", "env", "network", "uid", "gid",
            "shell", "read_only", "command",
        ]
    )]
    action: Option<String>,
    /// With --action: the CAS and action cache holding it (a `corral
    /// server` or `corral up`), e.g. http://127.0.0.1:8980.
    #[arg(long, value_name = "URL", requires = "action")]
    remote: Option<String>,
    /// With --action: the REAPI instance name the action was sent with.
    /// Without a record of the farm's run, it also picks the rootfs and
    /// hostname as a default scheduler would (`buildstream…`: the input root
    /// is `/`, hostname `buildbox`; others: the host's system directories).
    #[arg(long, value_name = "NAME", requires = "action")]
    instance: Option<String>,
    /// With --action: TLS and token towards --remote (an https:// farm
    /// with a policy).
    #[command(flatten)]
    client: corral_cas::ClientFlags,
    /// With --action: override the rootfs the farm chose (an image too).
    #[arg(long, value_enum, requires = "action")]
    rootfs: Option<RootfsArg>,
    /// With --action: copy the command's outputs here (a new or empty
    /// directory standing for the input root).
    #[arg(long, value_name = "DIR", requires = "action")]
    outputs: Option<PathBuf>,
    /// With --action: where the local CAS (kept between runs), the staged
    /// input roots and the image cache live (default
    /// $XDG_CACHE_HOME/corral/exec, else ~/.cache/corral/exec; as root
    /// /var/cache/corral/exec).
    #[arg(long, value_name = "DIR", requires = "action")]
    cache: Option<PathBuf>,
    /// With --action: the digest function of the action (sha256 or blake3).
    #[arg(long, value_name = "NAME", requires = "action")]
    digest_function: Option<String>,
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
    /// Sandbox profile: a name in the profile directory or a path to a TOML
    /// file (with --action: replaces the farm's).
    #[arg(long, default_value = "")]
    profile: String,
    /// Wall-clock limit in seconds (with --action: replaces the farm's).
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
    /// Make a container for this command alone, in this process, instead
    /// of handing the command to the resident service that `runner exec`
    /// starts and leaves running with containers made ahead (see
    /// `exec_service_idle_secs` in the runner configuration).
    #[arg(long)]
    own_container: bool,
    /// The sandbox's hostname (default `corral`; with --action, the farm's).
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
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
        (Some(Sub::Resident(r)), _) => {
            let config = load_config(r.config.as_ref())?;
            let idle = config.exec_service_idle();
            corral_runner::resident::serve_blocking(&config, &r.socket, idle)?;
            Ok(ExitCode::SUCCESS)
        }
        (Some(Sub::Delegate(d)), _) => {
            let parent = d.parent.unwrap_or_else(|| format!("corral-user-{}", d.uid));
            for dir in corral_runner::cgroups::delegate(&parent, d.uid, d.gid.unwrap_or(d.uid))? {
                println!("{}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(socket)) => {
            let mut config = load_config(args.config.as_ref())?;
            config
                .hidden_paths
                .get_or_insert_with(Vec::new)
                .extend(args.hide);
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
    let limits = Limits {
        timeout: a.timeout.map(Duration::from_secs_f64),
        memory_bytes: a.memory,
        max_pids: a.pids,
        cpu_millis: None,
        max_written_bytes: a.max_written,
    };
    if let Some(action) = a.action {
        return reproduce::run(reproduce::Args {
            action,
            remote: a.remote.unwrap_or_default(),
            client: a.client.clone(),
            instance: a.instance.unwrap_or_default(),
            digest_function: a.digest_function.unwrap_or_else(|| "sha256".into()),
            outputs: a.outputs,
            cache: a.cache,
            config,
            overrides: farm_plan::Overrides {
                rootfs: a.rootfs.map(|r| match r {
                    RootfsArg::InputRoot => corral_scheduler::RootfsChoice::InputRoot,
                    RootfsArg::Host => corral_scheduler::RootfsChoice::Host,
                }),
                hostname: a.hostname,
                profile: a.profile,
                limits,
            },
            stats: a.stats,
            keep: a.keep,
        });
    }
    let action_only = [
        ("--remote", a.remote.is_some()),
        ("--instance", a.instance.is_some()),
        ("--tls-ca", a.client.tls_ca.is_some()),
        ("--tls-cert", a.client.tls_cert.is_some()),
        ("--token-file", a.client.token_file.is_some()),
        ("--rootfs", a.rootfs.is_some()),
        ("--outputs", a.outputs.is_some()),
        ("--cache", a.cache.is_some()),
        ("--digest-function", a.digest_function.is_some()),
    ];
    if let Some((flag, _)) = action_only.iter().find(|(_, given)| *given) {
        anyhow::bail!("{flag} goes with --action DIGEST");
    }
    let root = match (a.root, a.host, a.lower.is_empty()) {
        (Some(root), _, _) => ExecRoot::Dir(root),
        (None, true, _) => ExecRoot::Host,
        (None, false, false) => ExecRoot::Lower(a.lower),
        (None, false, true) => anyhow::bail!(
            "choose the root: --root DIR, --host or --lower DIR (or --action DIGEST --remote URL)"
        ),
    };
    let opts = ExecOptions {
        root,
        input: a.input,
        cwd: a.cwd,
        env: a.env,
        network: a.network,
        profile: a.profile,
        limits,
        uid: a.uid,
        gid: a.gid,
        shell: a.shell,
        keep: a.keep,
        stats: a.stats,
        read_only: a.read_only,
        writable: Vec::new(),
        command: a.command,
        exact_env: false,
        null_stdin: false,
        scratch_dir: None,
        hostname: a.hostname,
        give_directories: false,
    };
    let served = (!a.own_container).then_some(a.config.as_deref());
    let status = exec_as_the_farm(&config, served, opts)?;
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}

/// Runs `opts` with the input root's directories owned by the action's
/// user, as a worker stages them (`ExecOptions::give_directories`). With
/// `served` (the configuration's file, if any), through `runner exec`'s
/// resident service, which makes the scratch directory and its twins ahead
/// of the call; else in a container of this process's own.
fn exec_as_the_farm(
    config: &RunnerConfig,
    served: Option<Option<&Path>>,
    mut opts: ExecOptions,
) -> anyhow::Result<i32> {
    opts.give_directories = true;
    Ok(match served {
        Some(path) => corral_runner::exec::run_served(config, path, opts)?,
        None => corral_runner::exec::run(config, opts)?,
    })
}
