//! No cgroup: memory, pids and CPU limits become rlimits of the container's
//! processes. Used when this host has no cgroup the runner may use (an
//! unprivileged runner without a delegated one) or when the configuration
//! says `cgroups = "none"`.
//!
//! rlimits are weaker than a cgroup: `RLIMIT_AS` bounds each process's
//! address space, not the tree's memory; `RLIMIT_NPROC` counts the
//! processes of the sandbox's user; `RLIMIT_CPU` bounds each process's CPU
//! seconds. Nothing is measured, so usage comes from `wait4` alone, and an
//! allocation that fails is the command's own error, never reported as a
//! memory limit hit.

use super::limit_enforcer::{Enforcement, LimitEnforcer, Rlimit, Usage};
use crate::error::Result;
use crate::request::Limits;

/// Enforces limits with rlimits only.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RlimitsOnly;

impl LimitEnforcer for RlimitsOnly {
    fn enforcement(&self) -> Enforcement {
        Enforcement {
            name: "rlimits",
            memory: "RLIMIT_AS (per process)",
            pids: "RLIMIT_NPROC (per sandbox user namespace)",
            cpu: "RLIMIT_CPU at the timeout's seconds (per process), when a CPU limit is set",
        }
    }

    /// Only fills the spec: libcontainer sees no cgroup hierarchy (see
    /// `sandbox::private_ns`).
    fn cgroups_path(&self, id: &str) -> String {
        format!("/corral-nocgroup/{id}")
    }

    fn create(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn attach(&self, _id: &str, _pid: i32) -> Result<()> {
        Ok(())
    }

    fn moves_processes(&self) -> bool {
        false
    }

    fn apply(&self, _id: &str, _limits: &Limits) -> Result<()> {
        Ok(())
    }

    fn rlimits(&self, limits: &Limits) -> Vec<Rlimit> {
        let mut out = Vec::new();
        if let Some(bytes) = limits.memory_bytes {
            out.push(Rlimit {
                kind: "RLIMIT_AS",
                value: bytes,
            });
        }
        if let Some(n) = limits.max_pids {
            out.push(Rlimit {
                kind: "RLIMIT_NPROC",
                value: n,
            });
        }
        // No CPU bandwidth without a cgroup: a CPU-limited request gets at
        // most its wall-clock budget in CPU seconds per process.
        if let (Some(t), Some(_)) = (limits.timeout, limits.cpu_millis) {
            out.push(Rlimit {
                kind: "RLIMIT_CPU",
                value: t.as_secs().max(1),
            });
        }
        out
    }

    fn usage(&self, _id: &str) -> Usage {
        Usage::default()
    }

    fn remove(&self, _id: &str) -> Result<()> {
        Ok(())
    }
}
