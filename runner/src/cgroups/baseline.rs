//! Usage counted from a restart: when one container serves run after run
//! in the same cgroup, the kernel's counters keep counting, so an enforcer
//! notes them at each restart and reports only what came after.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::limit_enforcer::{CpuTime, Usage};

/// The counters of one cgroup when its current run began.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Baseline {
    /// Processes the OOM killer had killed.
    pub oom_kills: u64,
    /// Forks the pids limit had refused.
    pub pids_refused: u64,
    /// CPU time already used, where the enforcer cannot zero it.
    pub cpu: CpuTime,
}

/// The raw counters an enforcer read once a run has ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Highest memory charge since the restart (or since the cgroup was
    /// made).
    pub peak_memory_bytes: u64,
    /// CPU time, when known.
    pub cpu: Option<CpuTime>,
    /// Processes the OOM killer killed, ever.
    pub oom_kills: u64,
    /// Forks the pids limit refused, ever.
    pub pids_refused: u64,
}

impl From<Counters> for Baseline {
    /// The counters at a restart, as the start of the next run.
    fn from(counters: Counters) -> Baseline {
        Baseline {
            oom_kills: counters.oom_kills,
            pids_refused: counters.pids_refused,
            cpu: counters.cpu.unwrap_or_default(),
        }
    }
}

/// Each run's baseline, by run id. Cheap to clone; clones share the map.
#[derive(Debug, Default, Clone)]
pub(crate) struct Baselines(Arc<Mutex<HashMap<String, Baseline>>>);

impl Baselines {
    /// Notes `baseline` as the start of run `id`'s next run.
    pub(crate) fn set(&self, id: &str, baseline: Baseline) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), baseline);
        }
    }

    /// Forgets run `id` (its cgroup is gone).
    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(id);
        }
    }

    /// What run `id` used since its baseline: `counters` less the baseline
    /// (none for a cgroup never restarted).
    pub(crate) fn usage(&self, id: &str, counters: Counters) -> Usage {
        let base = self
            .0
            .lock()
            .ok()
            .and_then(|map| map.get(id).copied())
            .unwrap_or_default();
        let less = |a: Duration, b: Duration| a.saturating_sub(b);
        Usage {
            peak_memory_bytes: counters.peak_memory_bytes,
            cpu: counters.cpu.map(|c| CpuTime {
                total: less(c.total, base.cpu.total),
                user: less(c.user, base.cpu.user),
                system: less(c.system, base.cpu.system),
            }),
            oom_killed: counters.oom_kills > base.oom_kills,
            pids_limit_hit: counters.pids_refused > base.pids_refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_run_counts_only_what_came_after() {
        let baselines = Baselines::default();
        let secs = Duration::from_secs;
        let counters = Counters {
            peak_memory_bytes: 100,
            cpu: Some(CpuTime {
                total: secs(5),
                user: secs(3),
                system: secs(2),
            }),
            oom_kills: 1,
            pids_refused: 2,
        };
        // Never restarted: everything is the run's.
        let first = baselines.usage("r", counters);
        assert!(first.oom_killed && first.pids_limit_hit);
        assert_eq!(first.cpu.map(|c| c.total), Some(secs(5)));
        baselines.set(
            "r",
            Baseline {
                oom_kills: 1,
                pids_refused: 2,
                cpu: CpuTime {
                    total: secs(4),
                    user: secs(2),
                    system: secs(2),
                },
            },
        );
        let next = baselines.usage("r", counters);
        assert!(!next.oom_killed && !next.pids_limit_hit);
        assert_eq!(
            next.cpu,
            Some(CpuTime {
                total: secs(1),
                user: secs(1),
                system: secs(0),
            })
        );
        assert_eq!(next.peak_memory_bytes, 100);
        baselines.forget("r");
        assert!(baselines.usage("r", counters).oom_killed);
    }
}
