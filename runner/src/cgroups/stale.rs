//! Cgroups left by runs whose process is gone. A run's process removes its
//! cgroup after the run, but a runner killed outright (SIGKILL, a worker's
//! supervisor giving up, the machine's OOM killer) takes its warm
//! containers' processes with it and leaves their cgroups, empty, under the
//! parent. On a farm that restarts runners for weeks they would pile up; a
//! runner removes them when it starts.
//!
//! A run's id is `corral-PID-SECONDS-NANOS`: PID is the run's process,
//! SECONDS when it began. A cgroup is stale when that process no longer
//! exists, nothing is left in the cgroup, and it began over a minute ago
//! (ids of an older form, without SECONDS, count as old). The last two
//! keep the cgroups of runners that share the parent from another PID
//! namespace, where the PID means another process. The age comes from the
//! id because cgroupfs forgets a directory's times when its inode leaves
//! the cache.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::LimitEnforcer;

/// A run's cgroup younger than this is never taken for stale.
const MIN_AGE: Duration = Duration::from_secs(60);

/// The process a run id names and, in the current form, the second it
/// began.
fn owner_and_start(id: &str) -> Option<(i32, Option<u64>)> {
    let mut parts = id.strip_prefix("corral-")?.split('-');
    let pid = parts.next()?.parse().ok().filter(|p: &i32| *p > 0)?;
    let rest: Vec<&str> = parts.collect();
    let digits = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match rest.as_slice() {
        [nanos] if digits(nanos) => Some((pid, None)),
        [secs, nanos] if digits(secs) && digits(nanos) => Some((pid, secs.parse().ok())),
        _ => None,
    }
}

/// The process a run id names.
fn owner(id: &str) -> Option<i32> {
    owner_and_start(id).map(|(pid, _)| pid)
}

/// Whether a process `pid` exists in this PID namespace.
fn alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether cgroup directory `dir` holds a process (or cannot be read).
fn busy(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).map_or(true, |procs| !procs.trim().is_empty())
}

/// Whether run `id` began less than [`MIN_AGE`] before `now`.
fn young(id: &str, now: SystemTime) -> bool {
    let Some((_, Some(began))) = owner_and_start(id) else {
        return false;
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() < began.saturating_add(MIN_AGE.as_secs())
}

/// Removes the stale run cgroups under `enforcer`'s parent; returns the
/// ids removed.
pub(crate) fn remove_stale(enforcer: &dyn LimitEnforcer) -> Vec<String> {
    let now = SystemTime::now();
    let dirs = enforcer.run_dirs();
    let mut removed: Vec<String> = Vec::new();
    for (id, _) in &dirs {
        if removed.contains(id) || owner(id).is_none_or(alive) || young(id, now) {
            continue;
        }
        if dirs.iter().any(|(other, dir)| other == id && busy(dir)) {
            continue;
        }
        match enforcer.remove(id) {
            Ok(()) => removed.push(id.clone()),
            Err(e) => tracing::warn!(error = %e, run = %id, "remove a stale cgroup"),
        }
    }
    removed
}

/// Removes the cgroups of the runs of processes `pids`, which have just
/// been reaped (killed before they could remove them), whatever their age.
pub(crate) fn remove_runs_of(enforcer: &dyn LimitEnforcer, pids: &[i32]) {
    let mut done: Vec<String> = Vec::new();
    for (id, _) in enforcer.run_dirs() {
        if done.contains(&id) || !owner(&id).is_some_and(|pid| pids.contains(&pid)) {
            continue;
        }
        if let Err(e) = enforcer.remove(&id) {
            tracing::warn!(error = %e, run = %id, "remove the cgroup of a killed run");
        }
        done.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_name_their_process_and_start() {
        assert_eq!(owner_and_start("corral-1234-000000042"), Some((1234, None)));
        assert_eq!(
            owner_and_start("corral-1234-1764790000-000000042"),
            Some((1234, Some(1764790000)))
        );
        assert_eq!(owner("corral-7-1-2-3"), None);
        assert_eq!(owner("corral-7--2"), None);
        assert_eq!(owner("corral-0-1"), None);
        assert_eq!(owner("corral-12"), None);
        assert_eq!(owner("corral-x-1"), None);
        assert_eq!(owner("corral-12-1a"), None);
        assert_eq!(owner("build-12-1"), None);
    }

    #[test]
    fn only_runs_begun_a_minute_ago_are_old() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(young("corral-5-999990-000000001", now));
        assert!(!young("corral-5-999900-000000001", now));
        assert!(!young("corral-5-000000001", now));
    }
}
