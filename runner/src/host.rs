//! The runner's configuration file and what it found out about the host at
//! start-up: root or not, which limit enforcer applies, where state lives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cgroups::{self, CgroupsSetting, HostFacts, LimitEnforcer, Mechanism};
use crate::error::{Error, Result};
use crate::request::Limits;

/// Containers made ahead of requests unless configured otherwise.
const DEFAULT_WARM_SANDBOXES: usize = 4;
const DEFAULT_RUNS_PER_CONTAINER: usize = 100;
const DEFAULT_EXEC_SERVICE_IDLE_SECS: u64 = 600;

/// `corral runner --config FILE`. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Where each run mounts a tmpfs of its own, in its own mount namespace,
    /// for libcontainer's state, the OCI bundle and the container's first
    /// root: nothing is ever written to the directory itself. Default:
    /// `/run/corral/runner` as root, `/tmp/corral-runner-<uid>` otherwise.
    pub state_dir: Option<PathBuf>,
    /// Host uid that the sandbox's uid maps to when the runner runs as root
    /// (an unprivileged runner always maps to its own uid). Default 65534.
    pub sandbox_uid: Option<u32>,
    /// Host gid likewise. Default 65534.
    pub sandbox_gid: Option<u32>,
    /// cgroup directory that holds one cgroup per run: under each
    /// controller with cgroup v1, under `/sys/fs/cgroup` with v2. Default
    /// `corral` as root, `corral-user-<uid>` otherwise.
    pub cgroup_parent: Option<String>,
    /// What enforces the memory, pids and CPU limits: `"auto"` (default:
    /// cgroup v2 if `/sys/fs/cgroup` is cgroup2 and usable, else cgroup v1
    /// if its controllers are mounted and usable, else rlimits), `"v1"` or
    /// `"v2"` (that cgroup version or the runner does not start), `"none"`
    /// (rlimits only).
    pub cgroups: Option<CgroupsSetting>,
    /// Where the input root appears when the rootfs is the host's or an
    /// image's. Default `/work`.
    pub exec_path: Option<PathBuf>,
    /// Whether a request may ask for the host network. Default false.
    pub allow_network: Option<bool>,
    /// Directory of named sandbox profiles. Default: none (only the
    /// built-in default and explicit paths).
    pub profile_dir: Option<PathBuf>,
    /// Default wall-clock limit in seconds. Default 3600.
    pub timeout_secs: Option<u64>,
    /// Default memory limit in bytes. Default 4 GiB.
    pub memory_bytes: Option<u64>,
    /// Default limit on processes and threads. Default 4096.
    pub max_pids: Option<u64>,
    /// Default bound on bytes written. Default 8 GiB.
    pub max_written_bytes: Option<u64>,
    /// Containers `corral runner --socket` keeps made ahead of requests,
    /// so that a run only starts one: namespaces, `/proc`, `/dev` and the
    /// run's cgroup are ready before the request arrives. Each waiting one
    /// holds two idle processes and their namespaces. 0 makes every
    /// container when its request arrives. Default 4.
    pub warm_sandboxes: Option<usize>,
    /// Runs one warm container serves in turn before it is replaced. Each
    /// run still gets mount, UTS, IPC and network namespaces, `/dev`,
    /// `/tmp` and a root of its own, made ahead of its request; the runs
    /// of one container share its user and PID namespaces (emptied after
    /// every run) and its cgroup (limits and usage restarted for each).
    /// A run that hits a limit, times out or is cancelled ends its
    /// container. 1 gives every run a container of its own. Needs a
    /// cgroup (with rlimits alone every container serves one run).
    /// Default 100.
    pub runs_per_container: Option<usize>,
    /// Host paths no action may see, even where a profile binds the
    /// host's directories into its root: each is covered by an empty
    /// directory or file of mode 000. `corral worker` adds its key, token
    /// file and data directory (`corral runner --hide PATH`). Default none.
    pub hidden_paths: Option<Vec<PathBuf>>,
    /// Seconds `runner exec`'s resident service stays after its last run.
    /// A `runner exec` hands its command to that service (started by the
    /// first one, with this configuration, and left running with
    /// `warm_sandboxes` containers made ahead), instead of making a
    /// container of its own. 0: no service, every `runner exec` makes its
    /// own container. Default 600.
    pub exec_service_idle_secs: Option<u64>,
}

impl RunnerConfig {
    /// How long `runner exec`'s resident service stays idle; zero when
    /// there is to be none.
    pub fn exec_service_idle(&self) -> Duration {
        Duration::from_secs(
            self.exec_service_idle_secs
                .unwrap_or(DEFAULT_EXEC_SERVICE_IDLE_SECS),
        )
    }

    /// The host uid and gid the sandbox's user maps to: the configured
    /// ones (default 65534) as root, this process's own otherwise.
    pub fn sandbox_ids(&self) -> (u32, u32) {
        if nix::unistd::geteuid().is_root() {
            (
                self.sandbox_uid.unwrap_or(65534),
                self.sandbox_gid.unwrap_or(65534),
            )
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }

    /// Reads a TOML file; unknown fields are errors naming the file.
    pub fn load(path: &Path) -> Result<RunnerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// The resolved settings every run uses.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Host {
    /// The runner runs as uid 0.
    pub is_root: bool,
    /// Where each run mounts its private state tmpfs.
    pub(crate) state_dir: PathBuf,
    /// Host uid the sandbox's single uid maps to.
    pub map_uid: u32,
    /// Host gid the sandbox's single gid maps to.
    pub map_gid: u32,
    /// cgroup parent when a cgroup version is used (`limits_by` is
    /// `CgroupV1` or `CgroupV2`); `None` with rlimits.
    pub cgroup_parent: Option<String>,
    /// What enforces memory, pids and CPU limits, chosen at start-up.
    pub(crate) limits_by: Mechanism,
    /// Where the input root appears with a host or image rootfs.
    pub(crate) exec_path: PathBuf,
    /// Whether a request may share the host network.
    pub(crate) allow_network: bool,
    /// Directory of named sandbox profiles.
    pub(crate) profile_dir: Option<PathBuf>,
    /// Limits of requests that set none.
    pub(crate) defaults: Limits,
    /// Containers the service keeps made ahead of requests.
    pub(crate) warm_sandboxes: usize,
    /// Runs one warm container serves (1 when limits are rlimits).
    pub(crate) runs_per_container: usize,
    /// Host paths covered in every root that binds the host's directories
    /// (canonical where they exist).
    pub(crate) hidden: Vec<PathBuf>,
}

impl Host {
    /// Probes the host and applies the configuration. As root this creates
    /// the cgroup parent; unprivileged, it only checks for a delegated one.
    pub fn probe(config: &RunnerConfig) -> Result<Host> {
        let uid = nix::unistd::geteuid().as_raw();
        let is_root = uid == 0;
        let state_dir = config.state_dir.clone().unwrap_or_else(|| {
            if is_root {
                PathBuf::from("/run/corral/runner")
            } else {
                PathBuf::from(format!("/tmp/corral-runner-{uid}"))
            }
        });
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| Error::io(format!("create state directory {}", state_dir.display()), e))?;
        let (map_uid, map_gid) = config.sandbox_ids();
        let parent = config.cgroup_parent.clone().unwrap_or_else(|| {
            if is_root {
                "corral".to_string()
            } else {
                format!("corral-user-{uid}")
            }
        });
        let facts = HostFacts::of_this_process(Path::new(cgroups::DEFAULT_ROOT));
        let limits_by =
            cgroups::mechanism::detect(config.cgroups.unwrap_or_default(), &parent, &facts)?;
        let cgroup_parent = (limits_by != Mechanism::Rlimits).then_some(parent);
        let runs_per_container = config
            .runs_per_container
            .unwrap_or(DEFAULT_RUNS_PER_CONTAINER);
        if runs_per_container == 0 {
            return Err(Error::Config {
                path: "runner configuration".into(),
                message: "runs_per_container must be at least 1 (1: a container per run)".into(),
            });
        }
        let defaults = Limits {
            timeout: Some(Duration::from_secs(config.timeout_secs.unwrap_or(3600))),
            memory_bytes: Some(config.memory_bytes.unwrap_or(4 << 30)),
            max_pids: Some(config.max_pids.unwrap_or(4096)),
            cpu_millis: None,
            max_written_bytes: Some(config.max_written_bytes.unwrap_or(8 << 30)),
        };
        Ok(Host {
            is_root,
            state_dir,
            map_uid,
            map_gid,
            cgroup_parent,
            limits_by,
            exec_path: config
                .exec_path
                .clone()
                .unwrap_or_else(|| PathBuf::from("/work")),
            allow_network: config.allow_network.unwrap_or(false),
            profile_dir: config.profile_dir.clone(),
            defaults,
            warm_sandboxes: config.warm_sandboxes.unwrap_or(DEFAULT_WARM_SANDBOXES),
            runs_per_container: match limits_by {
                Mechanism::Rlimits => 1,
                _ => runs_per_container,
            },
            hidden: config
                .hidden_paths
                .iter()
                .flatten()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
                .collect(),
        })
    }

    /// The enforcer every run of this runner goes through.
    pub(crate) fn limit_enforcer(&self) -> Box<dyn LimitEnforcer> {
        self.limits_by.enforcer(
            Path::new(cgroups::DEFAULT_ROOT),
            self.cgroup_parent.as_deref(),
        )
    }

    /// The enforcer of one run, its cgroup directories opened now so that
    /// it works from the run's own mount namespace.
    pub(crate) fn pinned_enforcer(&self) -> Result<Box<dyn LimitEnforcer>> {
        self.limits_by.pinned_enforcer(
            Path::new(cgroups::DEFAULT_ROOT),
            self.cgroup_parent.as_deref(),
        )
    }

    /// Whether memory, pids and CPU limits fall back to rlimits because an
    /// unprivileged runner has no cgroup of its own (for the start-up
    /// warning).
    pub(crate) fn rlimits_for_want_of_a_cgroup(&self) -> bool {
        self.limits_by == Mechanism::Rlimits && !self.is_root
    }

    /// One line per limit saying how it is enforced, naming the enforcer
    /// (`cgroup v1`, `cgroup v2`, `rlimits`), for the start-up log and the
    /// readiness check.
    pub fn enforced_limits(&self) -> Vec<String> {
        let how = self.limit_enforcer().enforcement();
        vec![
            "timeout: runner kills the sandbox's PID namespace".to_string(),
            format!("memory: {}, {}", how.name, how.memory),
            format!("pids: {}, {}", how.name, how.pids),
            format!("cpu: {}, {}", how.name, how.cpu),
            "written bytes: RLIMIT_FSIZE per file, /tmp tmpfs size, runner polls the upper directory".to_string(),
        ]
    }

    /// Fills the request's unset limits from the defaults.
    pub(crate) fn with_defaults(&self, limits: &Limits) -> Limits {
        Limits {
            timeout: limits.timeout.or(self.defaults.timeout),
            memory_bytes: limits.memory_bytes.or(self.defaults.memory_bytes),
            max_pids: limits.max_pids.or(self.defaults.max_pids),
            cpu_millis: limits.cpu_millis.or(self.defaults.cpu_millis),
            max_written_bytes: limits.max_written_bytes.or(self.defaults.max_written_bytes),
        }
    }
}
