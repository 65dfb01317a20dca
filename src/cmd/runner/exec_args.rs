//! `corral runner exec`'s flags, the command they ask for when no
//! `--action` is given, and the runner configuration a flag names. In a
//! file of their own because two programs parse them: `corral-farm`, and the small `corral` in front of it, which runs
//! such a command itself (src/front.rs).

use std::path::PathBuf;
use std::time::Duration;

use corral_runner::exec::{ExecOptions, ExecRoot};
use corral_runner::{Limits, RunnerConfig};

/// The runner configuration in the file at `path`, else the defaults.
pub(crate) fn load_config(path: Option<&PathBuf>) -> anyhow::Result<RunnerConfig> {
    Ok(match path {
        Some(p) => RunnerConfig::load(p)?,
        None => RunnerConfig::default(),
    })
}

/// What `/` is for a reproduced action, overriding the farm's choice.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum RootfsArg {
    /// The input root is `/` (what the farm does for `buildstream` instances).
    InputRoot,
    /// The host's system directories, the input root at the exec path.
    Host,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ExecArgs {
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
    pub(crate) action: Option<String>,
    /// With --action: the CAS and action cache holding it (a `corral
    /// server` or `corral up`), e.g. http://127.0.0.1:8980.
    #[arg(long, value_name = "URL", requires = "action")]
    pub(crate) remote: Option<String>,
    /// With --action: the REAPI instance name the action was sent with.
    /// Without a record of the farm's run, it also picks the rootfs and
    /// hostname as a default scheduler would (`buildstream…`: the input root
    /// is `/`, hostname `buildbox`; others: the host's system directories).
    #[arg(long, value_name = "NAME", requires = "action")]
    pub(crate) instance: Option<String>,
    /// With --action: TLS and token towards --remote (an https:// farm
    /// with a policy).
    #[command(flatten)]
    pub(crate) client: corral_cas::ClientFlags,
    /// With --action: override the rootfs the farm chose (an image too).
    #[arg(long, value_enum, requires = "action")]
    pub(crate) rootfs: Option<RootfsArg>,
    /// With --action: copy the command's outputs here (a new or empty
    /// directory standing for the input root).
    #[arg(long, value_name = "DIR", requires = "action")]
    pub(crate) outputs: Option<PathBuf>,
    /// With --action: where the local CAS (kept between runs), the staged
    /// input roots and the image cache live (default
    /// $XDG_CACHE_HOME/corral/exec, else ~/.cache/corral/exec; as root
    /// /var/cache/corral/exec).
    #[arg(long, value_name = "DIR", requires = "action")]
    pub(crate) cache: Option<PathBuf>,
    /// With --action: the digest function of the action (sha256 or blake3).
    #[arg(long, value_name = "NAME", requires = "action")]
    pub(crate) digest_function: Option<String>,
    /// DIR becomes `/` (under an overlay: DIR itself is never written).
    #[arg(long, conflicts_with_all = ["host", "lower", "input"])]
    pub(crate) root: Option<PathBuf>,
    /// The host's system directories, read-only, form `/`.
    #[arg(long, conflicts_with = "lower")]
    pub(crate) host: bool,
    /// Read-only directories stacked as `/`, lowest first (repeatable).
    #[arg(long)]
    pub(crate) lower: Vec<PathBuf>,
    /// Input root, mounted at the exec path with --host/--lower (default: an empty directory).
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    /// Working directory, relative to the input root.
    #[arg(long, default_value = "")]
    pub(crate) cwd: String,
    /// Environment variable K=V (repeatable). Only these are set, plus a
    /// default PATH when none is given (and TERM with --shell).
    #[arg(long = "env", value_name = "K=V")]
    pub(crate) env: Vec<String>,
    /// Share the host network (the configuration must allow it).
    #[arg(long)]
    pub(crate) network: bool,
    /// Sandbox profile: a name in the profile directory or a path to a TOML
    /// file (with --action: replaces the farm's).
    #[arg(long, default_value = "")]
    pub(crate) profile: String,
    /// Wall-clock limit in seconds (with --action: replaces the farm's).
    #[arg(long)]
    pub(crate) timeout: Option<f64>,
    /// Memory limit in bytes.
    #[arg(long)]
    pub(crate) memory: Option<u64>,
    /// Limit on processes and threads.
    #[arg(long)]
    pub(crate) pids: Option<u64>,
    /// Bound on bytes written.
    #[arg(long)]
    pub(crate) max_written: Option<u64>,
    /// uid inside the sandbox.
    #[arg(long, default_value_t = 0)]
    pub(crate) uid: u32,
    /// gid inside the sandbox.
    #[arg(long, default_value_t = 0)]
    pub(crate) gid: u32,
    /// Open an interactive shell (this terminal) in the sandbox instead of CMD.
    #[arg(long)]
    pub(crate) shell: bool,
    /// Keep the scratch directory (the overlay's upper directory holds what
    /// the command changed) and print its path.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Print how the command ended and what it used, as JSON, on stderr.
    #[arg(long)]
    pub(crate) stats: bool,
    /// Runner configuration (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Make a container for this command alone, in this process, instead
    /// of handing the command to the resident service that `runner exec`
    /// starts and leaves running with containers made ahead (see
    /// `exec_service_idle_secs` in the runner configuration).
    #[arg(long)]
    pub(crate) own_container: bool,
    /// The sandbox's hostname (default `corral`; with --action, the farm's).
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Subdirectory of the input root to mount read-only (repeatable), as
    /// REAPI's `SubtreeReadOnly` does.
    #[arg(long = "read-only", value_name = "SUBDIR")]
    pub(crate) read_only: Vec<String>,
    /// The command and its arguments.
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

/// A command given by hand (no `--action`), ready to run.
pub(crate) struct Plain {
    /// What to run, the input root's directories given to the action's
    /// user as a worker stages them.
    pub(crate) options: ExecOptions,
    /// Through the resident exec service (else `--own-container`).
    pub(crate) served: bool,
    /// The runner configuration's file, if one was given.
    pub(crate) config: Option<PathBuf>,
}

impl ExecArgs {
    /// The limits the flags set (with `--action`, over the farm's).
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout.map(Duration::from_secs_f64),
            memory_bytes: self.memory,
            max_pids: self.pids,
            cpu_millis: None,
            max_written_bytes: self.max_written,
        }
    }

    /// The command to run when no `--action` is given; an error names a
    /// flag that goes only with `--action`, or the missing choice of root.
    pub(crate) fn plain(self) -> anyhow::Result<Plain> {
        let action_only = [
            ("--action", self.action.is_some()),
            ("--remote", self.remote.is_some()),
            ("--instance", self.instance.is_some()),
            ("--tls-ca", self.client.tls_ca.is_some()),
            ("--tls-cert", self.client.tls_cert.is_some()),
            ("--token-file", self.client.token_file.is_some()),
            ("--rootfs", self.rootfs.is_some()),
            ("--outputs", self.outputs.is_some()),
            ("--cache", self.cache.is_some()),
            ("--digest-function", self.digest_function.is_some()),
        ];
        if let Some((flag, _)) = action_only.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} goes with --action DIGEST");
        }
        let limits = self.limits();
        let root = match (self.root, self.host, self.lower.is_empty()) {
            (Some(root), _, _) => ExecRoot::Dir(root),
            (None, true, _) => ExecRoot::Host,
            (None, false, false) => ExecRoot::Lower(self.lower),
            (None, false, true) => anyhow::bail!(
                "choose the root: --root DIR, --host or --lower DIR (or --action DIGEST --remote URL)"
            ),
        };
        let options = ExecOptions {
            root,
            input: self.input,
            cwd: self.cwd,
            env: self.env,
            network: self.network,
            profile: self.profile,
            limits,
            uid: self.uid,
            gid: self.gid,
            shell: self.shell,
            keep: self.keep,
            stats: self.stats,
            read_only: self.read_only,
            writable: Vec::new(),
            command: self.command,
            exact_env: false,
            null_stdin: false,
            scratch_dir: None,
            hostname: self.hostname,
            give_directories: true,
        };
        Ok(Plain {
            options,
            served: !self.own_container,
            config: self.config,
        })
    }
}
