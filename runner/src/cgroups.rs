//! Resource limits of a run's process tree: the `LimitEnforcer` seam and
//! its three implementations, cgroup v1 (`CgroupV1`), cgroup v2
//! (`CgroupV2`) and rlimits alone (`RlimitsOnly`), with the start-up
//! choice between them (`mechanism`). Only [`delegate`] is public: it is
//! `corral runner delegate`.
//!
//! Neither cgroup manager goes through the spec's `linux.resources` (whose
//! devices part fails without root): the runner makes the run's cgroup and
//! writes its limits itself before libcontainer creates the container, and
//! reads the usage before deleting it.

mod baseline;
mod files;

pub(crate) mod cgroup_v1;
pub(crate) mod cgroup_v2;
pub(crate) mod limit_enforcer;
pub(crate) mod mechanism;
pub(crate) mod rlimits_only;
pub(crate) mod stale;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub(crate) use limit_enforcer::LimitEnforcer;
pub(crate) use mechanism::{CgroupsSetting, HostFacts, Mechanism};

use crate::error::{Error, Result};

/// Where the cgroup hierarchies are mounted; libcontainer uses no other.
pub(crate) const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// `corral runner delegate`: as root, makes `parent` under every cgroup v1
/// controller, owned by `uid`/`gid`, so that a runner of that user can use
/// cgroup limits. Returns the directories made.
///
/// cgroup v2 is refused: there, a delegated subtree is only usable by a
/// runner that itself lives inside it, which this command cannot arrange.
pub fn delegate(parent: &str, uid: u32, gid: u32) -> Result<Vec<PathBuf>> {
    let root = Path::new(DEFAULT_ROOT);
    if mechanism::is_cgroup2(root) {
        return Err(Error::Cgroup(format!(
            "{DEFAULT_ROOT} is cgroup v2: delegate a subtree the v2 way (systemd's \
             Delegate=yes, or chown the directory with its cgroup.procs, \
             cgroup.subtree_control and cgroup.threads), start the runner in a child \
             of it and set cgroup_parent to it; this command handles cgroup v1 only"
        )));
    }
    cgroup_v1::delegate_at(root, parent, uid, gid)
}
