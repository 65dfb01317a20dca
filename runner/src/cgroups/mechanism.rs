//! Which [`LimitEnforcer`] applies on this host, decided once at runner
//! start-up from the configuration (`cgroups = "auto" | "v1" | "v2" |
//! "none"`) and what the host offers.
//!
//! `auto` takes cgroup v2 when the cgroup root is a cgroup2 file system and
//! the runner may use it, cgroup v1 when v1 controllers are mounted there
//! and usable, rlimits otherwise. An explicit `v1` or `v2` that this host
//! cannot honour is an error rather than limits that are not enforced.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup_v1::{self, CgroupV1};
use super::cgroup_v2::CgroupV2;
use super::limit_enforcer::LimitEnforcer;
use super::rlimits_only::RlimitsOnly;
use crate::error::{Error, Result};

/// The runner configuration's `cgroups` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupsSetting {
    /// Whatever this host offers: v2, then v1, then rlimits.
    #[default]
    Auto,
    /// cgroup v1, or refuse to start.
    V1,
    /// cgroup v2, or refuse to start.
    V2,
    /// rlimits only, even where cgroups are available.
    None,
}

/// What enforces limits on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mechanism {
    /// [`CgroupV1`].
    CgroupV1,
    /// [`CgroupV2`].
    CgroupV2,
    /// [`RlimitsOnly`].
    Rlimits,
}

impl Mechanism {
    /// The enforcer for runs whose cgroups go under `parent` in the
    /// hierarchy at `root`. Without a parent there is no cgroup to use.
    pub fn enforcer(self, root: &Path, parent: Option<&str>) -> Box<dyn LimitEnforcer> {
        match (self, parent) {
            (Mechanism::CgroupV1, Some(p)) => Box::new(CgroupV1::new(root, p)),
            (Mechanism::CgroupV2, Some(p)) => Box::new(CgroupV2::new(root, p)),
            _ => Box::new(RlimitsOnly),
        }
    }

    /// Like [`Mechanism::enforcer`], with the cgroup directories opened
    /// now (see `CgroupV1::pinned`): what a run uses from inside its own
    /// mount namespace.
    pub fn pinned_enforcer(
        self,
        root: &Path,
        parent: Option<&str>,
    ) -> Result<Box<dyn LimitEnforcer>> {
        Ok(match (self, parent) {
            (Mechanism::CgroupV1, Some(p)) => Box::new(CgroupV1::new(root, p).pinned()?),
            (Mechanism::CgroupV2, Some(p)) => Box::new(CgroupV2::new(root, p).pinned()?),
            _ => Box::new(RlimitsOnly),
        })
    }
}

/// What detection needs to know about the host; tests make their own.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub root: PathBuf,
    /// `root` itself is a cgroup2 mount: the unified hierarchy only.
    pub root_is_cgroup2: bool,
    /// The runner runs as uid 0 and may set up its own parent.
    pub is_root: bool,
    /// This process's cgroup in the v2 hierarchy (`0::PATH` of
    /// `/proc/self/cgroup`).
    pub own_cgroup: Option<String>,
}

impl HostFacts {
    /// The facts of this process on this host, for the hierarchy at `root`.
    pub fn of_this_process(root: &Path) -> HostFacts {
        let own_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            });
        HostFacts {
            root: root.to_path_buf(),
            root_is_cgroup2: is_cgroup2(root),
            is_root: nix::unistd::geteuid().is_root(),
            own_cgroup,
        }
    }
}

/// Whether `path` is on a cgroup2 file system (statfs magic
/// `CGROUP2_SUPER_MAGIC`).
pub fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Picks the mechanism for `setting` on a host described by `facts`, with
/// run cgroups under `parent`. As root this makes the parent (and, on v2,
/// enables controllers above it), as the runner has always done at
/// start-up.
pub fn detect(setting: CgroupsSetting, parent: &str, facts: &HostFacts) -> Result<Mechanism> {
    let root = facts.root.display();
    match setting {
        CgroupsSetting::None => Ok(Mechanism::Rlimits),
        CgroupsSetting::V2 if !facts.root_is_cgroup2 => Err(Error::Cgroup(format!(
            "cgroups = \"v2\" is configured, but {root} is not a cgroup2 file system"
        ))),
        CgroupsSetting::V2 => v2_ready(parent, facts).map(|()| Mechanism::CgroupV2),
        CgroupsSetting::V1 if !has_v1(facts) => Err(Error::Cgroup(format!(
            "cgroups = \"v1\" is configured, but no cgroup v1 controller is mounted under {root}"
        ))),
        CgroupsSetting::V1 => v1_ready(parent, facts).map(|()| Mechanism::CgroupV1),
        CgroupsSetting::Auto => {
            let (mechanism, ready) = if facts.root_is_cgroup2 {
                (Mechanism::CgroupV2, v2_ready(parent, facts))
            } else if has_v1(facts) {
                (Mechanism::CgroupV1, v1_ready(parent, facts))
            } else {
                tracing::info!("no cgroup hierarchy under {root}; limits are rlimits");
                return Ok(Mechanism::Rlimits);
            };
            match ready {
                Ok(()) => Ok(mechanism),
                Err(e) if facts.is_root => {
                    tracing::warn!(error = %e, ?mechanism, "cgroups unusable; falling back to rlimits");
                    Ok(Mechanism::Rlimits)
                }
                Err(e) => {
                    tracing::info!(error = %e, ?mechanism, "no usable cgroup; limits are rlimits");
                    Ok(Mechanism::Rlimits)
                }
            }
        }
    }
}

/// Whether v1 controllers are mounted under the root.
fn has_v1(facts: &HostFacts) -> bool {
    !facts.root_is_cgroup2 && !cgroup_v1::controllers(&facts.root).is_empty()
}

fn v1_ready(parent: &str, facts: &HostFacts) -> Result<()> {
    if facts.is_root {
        return cgroup_v1::delegate_at(&facts.root, parent, 0, 0).map(|_| ());
    }
    if cgroup_v1::usable_at(&facts.root, parent) {
        Ok(())
    } else {
        Err(Error::Cgroup(format!(
            "{parent} is not delegated to this user under every v1 controller of {}; \
             as root, `corral runner delegate --uid UID` does that",
            facts.root.display()
        )))
    }
}

fn v2_ready(parent: &str, facts: &HostFacts) -> Result<()> {
    let v2 = CgroupV2::new(&facts.root, parent);
    if facts.is_root {
        v2.prepare()
    } else {
        v2.check_delegated(facts.own_cgroup.as_deref())
    }
}
