//! Restarting a run's cgroup for a container's next run (see
//! `sandbox::reuse`), against fake cgroupfs directories: the limits are
//! lifted, and what the next run is told it used counts only what came
//! after the restart. As in `fake_fs`, the test writes the kernel's
//! figures itself.

use std::fs;
use std::time::Duration;

use super::fake_fs::{limits, prepared_v2, read, v1_root, write};
use crate::cgroups::cgroup_v1::CgroupV1;
use crate::cgroups::limit_enforcer::{CpuTime, LimitEnforcer};

#[test]
fn v1_restart_lifts_limits_zeroes_the_peak_and_cpu_and_bases_the_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v1_root(root);
    crate::cgroups::cgroup_v1::delegate_at(root, "corral", 0, 0).unwrap();
    let v1 = CgroupV1::new(root, "corral");
    let enforcer: &dyn LimitEnforcer = &v1;
    enforcer.create("r").unwrap();
    let dir = |c: &str| root.join(c).join("corral/r");
    write(dir("memory").join("memory.memsw.limit_in_bytes"), "");
    enforcer.apply("r", &limits()).unwrap();
    // The first run hit both counters.
    write(
        dir("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    write(dir("pids").join("pids.events"), "max 5\n");
    let first = enforcer.usage("r");
    assert!(first.oom_killed && first.pids_limit_hit);

    assert!(enforcer.restart("r").unwrap());
    assert_eq!(read(dir("memory").join("memory.limit_in_bytes")), "-1");
    assert_eq!(
        read(dir("memory").join("memory.memsw.limit_in_bytes")),
        "-1"
    );
    assert_eq!(read(dir("memory").join("memory.max_usage_in_bytes")), "0");
    assert_eq!(read(dir("pids").join("pids.max")), "max");
    assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(dir("cpuacct").join("cpuacct.usage")), "0");
    // The kernel's figures for the next run: counters unchanged.
    write(dir("memory").join("memory.max_usage_in_bytes"), "4096\n");
    let next = enforcer.usage("r");
    assert!(!next.oom_killed && !next.pids_limit_hit, "{next:?}");
    assert_eq!(next.peak_memory_bytes, 4096);
    // One more OOM kill is the next run's.
    write(
        dir("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    assert!(enforcer.usage("r").oom_killed);
}

#[test]
fn v2_restart_lifts_limits_resets_the_peak_and_subtracts_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let enforcer: &dyn LimitEnforcer = &prepared_v2(tmp.path());
    enforcer.create("r").unwrap();
    let run = tmp.path().join("corral/r");
    for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
        write(run.join(file), "");
    }
    enforcer.apply("r", &limits()).unwrap();
    write(run.join("memory.peak"), "99999999\n");
    write(run.join("memory.events"), "oom_kill 1\n");
    write(run.join("pids.events"), "max 1\n");
    write(
        run.join("cpu.stat"),
        "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
    );

    assert!(enforcer.restart("r").unwrap());
    for file in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
        assert_eq!(read(run.join(file)), "max", "{file}");
    }
    // The kernel answers reads of the descriptor that reset the peak with
    // the peak since; here, the file's new content.
    fs::write(run.join("memory.peak"), "8192\n").unwrap();
    write(
        run.join("cpu.stat"),
        "usage_usec 3500000\nuser_usec 2400000\nsystem_usec 1100000\n",
    );
    let next = enforcer.usage("r");
    assert_eq!(next.peak_memory_bytes, 8192);
    assert_eq!(
        next.cpu,
        Some(CpuTime {
            total: Duration::from_millis(500),
            user: Duration::from_millis(400),
            system: Duration::from_millis(100),
        })
    );
    assert!(!next.oom_killed && !next.pids_limit_hit, "{next:?}");
}

#[test]
fn v2_without_a_resettable_peak_serves_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let enforcer: &dyn LimitEnforcer = &prepared_v2(tmp.path());
    enforcer.create("r").unwrap();
    // Before Linux 5.19 there is no memory.peak at all (and before 6.12 it
    // cannot be written; a fake file cannot refuse a write).
    assert!(!enforcer.restart("r").unwrap());
}

#[test]
fn rlimits_cannot_restart() {
    let enforcer: &dyn LimitEnforcer = &crate::cgroups::rlimits_only::RlimitsOnly;
    assert!(!enforcer.restart("r").unwrap());
}
