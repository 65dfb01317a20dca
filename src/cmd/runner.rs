//! `corral runner`: serve the runner protocol on a unix socket, or run one
//! command in the sandbox by hand (`corral runner exec`), or reproduce a
//! remote action (`corral runner exec --action`, see [`reproduce`]), or (as
//! root) delegate a cgroup directory to an unprivileged runner.
//!
//! No thread may exist when the sandbox forks: `exec` never starts a
//! runtime, `exec --action` stops its runtime (and checks) before the
//! sandbox starts, and the server forks its container helper first.

mod exec_args;
mod farm_plan;
mod outputs;
mod recorded;
mod reproduce;
mod request;
mod scratch;

use std::path::PathBuf;
use std::process::ExitCode;

use exec_args::{load_config, ExecArgs, RootfsArg};

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
    if let Some(action) = a.action.clone() {
        let limits = a.limits();
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
    // The input root's directories are owned by the action's user, as a
    // worker stages them; through the resident service unless
    // `--own-container`.
    let plain = a.plain()?;
    let status = if plain.served {
        corral_runner::exec::run_served(&config, plain.config.as_deref(), plain.options)?
    } else {
        corral_runner::exec::run(&config, plain.options)?
    };
    Ok(ExitCode::from(status.clamp(0, 255) as u8))
}
