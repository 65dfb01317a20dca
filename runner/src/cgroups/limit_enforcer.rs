//! The seam between a run and whatever enforces its resource limits: a
//! cgroup v1 hierarchy, the cgroup v2 unified hierarchy, or, with no usable
//! cgroup, per-process rlimits.
//!
//! The runner picks one implementation at start-up (see
//! [`super::mechanism`]) and every run goes through this trait, so
//! `sandbox` never needs to know which one it is.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::request::Limits;

/// Enforces the memory, pids and CPU limits of runs and reports what they
/// used. One value serves every run; runs are told apart by their id
/// (unique per run, a single path component).
///
/// Lifecycle of a run, in the process that drives libcontainer:
/// [`create`](Self::create) makes the run's cgroup before the container
/// exists; once libcontainer has made the container (whose init waits for
/// its start), [`attach`](Self::attach) moves the init into it, so every
/// process of the command is born inside; [`apply`](Self::apply) writes the
/// request's limits before the start; [`usage`](Self::usage) once the
/// command has ended, and [`remove`](Self::remove) at the end.
/// libcontainer itself does no cgroup work (see `sandbox::private_ns`);
/// [`cgroups_path`](Self::cgroups_path) only fills the spec's field, and
/// [`rlimits`](Self::rlimits) go into the run's plan.
pub(crate) trait LimitEnforcer {
    /// How each limit is enforced, for the start-up log and `Ready`.
    fn enforcement(&self) -> Enforcement;

    /// The spec's `linux.cgroupsPath` for run `id`. Never empty: an empty
    /// path makes libcontainer use the caller's own cgroup, and its error
    /// clean-up then kills every process in it.
    fn cgroups_path(&self, id: &str) -> String;

    /// Makes run `id`'s cgroup, without limits yet.
    fn create(&self, id: &str) -> Result<()>;

    /// Moves process `pid` (the container's init, before the command
    /// exists) into run `id`'s cgroup.
    fn attach(&self, id: &str, pid: i32) -> Result<()>;

    /// Whether [`attach`](Self::attach) moves processes between cgroups
    /// (and so waits for the kernel's RCU grace period the first time).
    fn moves_processes(&self) -> bool {
        true
    }

    /// Writes `limits` into run `id`'s cgroup. A limit whose controller
    /// this host does not offer is an error naming it.
    fn apply(&self, id: &str, limits: &Limits) -> Result<()>;

    /// rlimits the container's processes must carry for `limits`, on top of
    /// the ones every run has (no core files, the written-bytes bound).
    fn rlimits(&self, limits: &Limits) -> Vec<Rlimit> {
        let _ = limits;
        Vec::new()
    }

    /// What run `id` used and which limits it hit, since its cgroup was
    /// made or last [restarted](Self::restart). Missing figures read as
    /// zero or `None`; a kernel without a statistic must not fail the run.
    fn usage(&self, id: &str) -> Usage;

    /// Makes run `id`'s cgroup ready for another run of the same container
    /// (see `sandbox::reuse`): every limit lifted (the next run's
    /// [`apply`](Self::apply) writes its own), and usage counted afresh from
    /// here. `Ok(false)` when this enforcer cannot count afresh: the
    /// container must then serve no further run.
    fn restart(&self, id: &str) -> Result<bool> {
        let _ = id;
        Ok(false)
    }

    /// Kills whatever is left in run `id`'s cgroup and removes it. Removing
    /// a cgroup that is already gone is not an error.
    fn remove(&self, id: &str) -> Result<()>;

    /// Every run cgroup under the parent, whoever made it, as (run id, its
    /// directory), one pair per controller directory (see [`super::stale`]).
    fn run_dirs(&self) -> Vec<(String, PathBuf)> {
        Vec::new()
    }
}

/// How an enforcer applies each limit, in words for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enforcement {
    /// The mechanism: `cgroup v1`, `cgroup v2` or `rlimits`.
    pub name: &'static str,
    /// How the memory limit is applied.
    pub memory: &'static str,
    /// How the pids limit is applied.
    pub pids: &'static str,
    /// How the CPU limit is applied.
    pub cpu: &'static str,
}

/// One `process.rlimits` entry of the OCI spec (hard = soft = `value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rlimit {
    /// The OCI name, such as `RLIMIT_AS`.
    pub kind: &'static str,
    /// The limit, in the resource's unit.
    pub value: u64,
}

/// CPU time the whole run used, every process counted, including those
/// that PID 1 never reaped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTime {
    /// All CPU time (`cpu.stat` usage_usec, `cpuacct.usage`).
    pub total: Duration,
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel.
    pub system: Duration,
}

/// What a run's cgroup saw once the run is over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Highest memory charge of the run's processes, 0 if unknown.
    pub peak_memory_bytes: u64,
    /// CPU time, when the enforcer can measure it.
    pub cpu: Option<CpuTime>,
    /// The memory limit made the kernel kill a process (OOM).
    pub oom_killed: bool,
    /// A fork or clone failed because of the pids limit.
    pub pids_limit_hit: bool,
}
