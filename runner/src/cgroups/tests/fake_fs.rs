//! The cgroup managers through the `LimitEnforcer` trait, against
//! directories laid out like cgroupfs: what they write, with what syntax,
//! and how they read the kernel's figures back.
//!
//! A fake is not the kernel: it shows the files a manager writes and reads,
//! not that the kernel accepts them. Where the fake cannot behave like
//! cgroupfs (a directory holding files cannot be removed; the kernel drops a
//! cgroup's interface files with it), the test plays the kernel's part and
//! says so. The only run on a real cgroup2 mount is in `real_v2.rs`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::cgroups::cgroup_v1::CgroupV1;
use crate::cgroups::cgroup_v2::CgroupV2;
use crate::cgroups::limit_enforcer::{CpuTime, LimitEnforcer, Usage};
use crate::cgroups::rlimits_only::RlimitsOnly;
use crate::{Error, Limits};

pub(super) fn write(path: impl AsRef<Path>, text: &str) {
    let path = path.as_ref();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

pub(super) fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// Deletes the interface files of a fake cgroup, as the kernel does when it
/// removes a cgroup; a plain directory cannot be removed while it has them.
fn drop_interface_files(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
}

pub(super) fn limits() -> Limits {
    Limits {
        timeout: Some(Duration::from_secs(60)),
        memory_bytes: Some(64 << 20),
        max_pids: Some(100),
        cpu_millis: Some(1500),
        max_written_bytes: Some(1 << 30),
    }
}

/// A cgroup2 root offering the usual controllers, none enabled yet.
fn v2_root(root: &Path) {
    write(
        root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    write(root.join("cgroup.subtree_control"), "");
}

/// What the kernel shows in a new cgroup under a parent that enabled
/// `offered`.
fn v2_child(dir: &Path, offered: &str) {
    write(dir.join("cgroup.controllers"), &format!("{offered}\n"));
    write(dir.join("cgroup.subtree_control"), "");
}

/// A v2 root after the runner's start-up as root (`prepare`), with the
/// parent `corral` as the kernel would show it.
pub(super) fn prepared_v2(root: &Path) -> CgroupV2 {
    v2_root(root);
    let v2 = CgroupV2::new(root, "corral");
    v2.prepare().unwrap();
    v2_child(&root.join("corral"), "cpu memory pids");
    v2
}

#[test]
fn v2_enables_controllers_and_writes_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_root(root);
    let v2 = CgroupV2::new(root, "corral");
    // Runner start-up, as root: the parent, and its controllers enabled in
    // the root so that the parent can offer them.
    v2.prepare().unwrap();
    assert_eq!(
        read(root.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert!(root.join("corral").is_dir());
    v2_child(&root.join("corral"), "cpu memory pids");

    let enforcer: &dyn LimitEnforcer = &v2;
    assert_eq!(enforcer.enforcement().name, "cgroup v2");
    assert_eq!(enforcer.cgroups_path("run-1"), "/corral/run-1");
    assert!(enforcer.rlimits(&limits()).is_empty());
    enforcer.create("run-1").unwrap();
    enforcer.apply("run-1", &limits()).unwrap();
    // The run's cgroup gets the controllers from its parent.
    assert_eq!(
        read(root.join("corral/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    let run = root.join("corral/run-1");
    assert_eq!(read(run.join("memory.max")), "67108864");
    assert_eq!(read(run.join("pids.max")), "100");
    // 1.5 CPUs: 150 ms of every 100 ms period.
    assert_eq!(read(run.join("cpu.max")), "150000 100000");
}

#[test]
fn v2_reads_usage_and_the_oom_kill_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let enforcer: &dyn LimitEnforcer = &prepared_v2(tmp.path());
    enforcer.create("run-1").unwrap();
    let run = tmp.path().join("corral/run-1");
    // The kernel's figures after a run that stayed within its limits.
    write(run.join("memory.peak"), "52428800\n");
    write(run.join("memory.current"), "4096\n");
    write(
        run.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\noom_group_kill 0\n",
    );
    write(
        run.join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 30\n\
         nr_throttled 2\nthrottled_usec 1000\n",
    );
    write(run.join("pids.events"), "max 0\n");
    let cpu = CpuTime {
        total: Duration::from_millis(2500),
        user: Duration::from_secs(2),
        system: Duration::from_millis(500),
    };
    assert_eq!(
        enforcer.usage("run-1"),
        Usage {
            peak_memory_bytes: 50 << 20,
            cpu: Some(cpu),
            oom_killed: false,
            pids_limit_hit: false,
        }
    );
    // The memory limit killed a process; a fork hit pids.max.
    write(
        run.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
    );
    write(run.join("pids.events"), "max 4\n");
    let usage = enforcer.usage("run-1");
    assert!(usage.oom_killed && usage.pids_limit_hit, "{usage:?}");
    // Before Linux 5.19 there is no memory.peak: the charge at the end.
    fs::remove_file(run.join("memory.peak")).unwrap();
    assert_eq!(enforcer.usage("run-1").peak_memory_bytes, 4096);
}

#[test]
fn v2_kills_through_cgroup_kill_and_removes_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let enforcer: &dyn LimitEnforcer = &prepared_v2(tmp.path());
    enforcer.create("run-1").unwrap();
    let run = tmp.path().join("corral/run-1");
    // The container's init goes in before its command exists.
    enforcer.attach("run-1", 4242).unwrap();
    assert_eq!(read(run.join("cgroup.procs")), "4242");
    write(run.join("cgroup.kill"), "");
    write(run.join("cgroup.procs"), "");
    // A plain directory holding files cannot be removed...
    let err = enforcer.remove("run-1").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(read(run.join("cgroup.kill")), "1");
    // ...so play the kernel's part, which drops the files with the cgroup.
    drop_interface_files(&run);
    enforcer.remove("run-1").unwrap();
    assert!(!run.exists());
    // Already gone: not an error.
    enforcer.remove("run-1").unwrap();
    assert!(tmp.path().join("corral").is_dir(), "the parent stays");
}

#[test]
fn v2_leaves_enabled_controllers_alone_and_writes_only_requested_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_root(root);
    write(root.join("cgroup.subtree_control"), "cpu memory pids\n");
    let v2 = CgroupV2::new(root, "/corral/");
    v2.prepare().unwrap();
    assert_eq!(
        read(root.join("cgroup.subtree_control")),
        "cpu memory pids\n"
    );
    v2_child(&root.join("corral"), "cpu memory pids");
    write(
        root.join("corral/cgroup.subtree_control"),
        "memory pids cpu\n",
    );
    let only_memory = Limits {
        memory_bytes: Some(1 << 30),
        ..Limits::default()
    };
    v2.create("r").unwrap();
    v2.apply("r", &only_memory).unwrap();
    assert_eq!(
        read(root.join("corral/cgroup.subtree_control")),
        "memory pids cpu\n"
    );
    let run = root.join("corral/r");
    assert_eq!(read(run.join("memory.max")), "1073741824");
    assert!(!run.join("pids.max").exists());
    assert!(!run.join("cpu.max").exists());
    // With no figures at all, usage is empty rather than an error.
    assert_eq!(v2.usage("r"), Usage::default());
}

#[test]
fn v2_refuses_a_limit_whose_controller_the_parent_does_not_offer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_root(root);
    v2_child(&root.join("corral"), "pids");
    let v2 = CgroupV2::new(root, "corral");
    match v2.apply("r", &limits()) {
        Err(Error::CgroupController { controller, dir }) => {
            assert_eq!(controller, "memory");
            assert_eq!(dir, root.join("corral"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!root.join("corral/r").join("pids.max").exists());
    // A root without memory or pids is no use at all.
    write(root.join("cgroup.controllers"), "cpu io\n");
    assert!(matches!(
        v2.prepare(),
        Err(Error::CgroupController { controller, .. }) if controller == "memory"
    ));
}

#[test]
fn v2_delegation_needs_the_runner_inside_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v2_root(root);
    let parent = root.join("user.slice/corral");
    v2_child(&parent, "cpu memory pids");
    write(parent.join("cgroup.procs"), "");
    let v2 = CgroupV2::new(root, "user.slice/corral");
    v2.check_delegated(Some("/user.slice/corral/runner"))
        .unwrap();
    for own in [Some("/user.slice"), Some("/user.slice/corral"), None] {
        assert!(
            matches!(v2.check_delegated(own), Err(Error::Cgroup(_))),
            "{own:?}"
        );
    }
    assert!(matches!(
        CgroupV2::new(root, "absent").check_delegated(Some("/absent/runner")),
        Err(Error::Sys { .. })
    ));
}

#[test]
fn run_ids_cannot_reach_outside_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    v2_root(tmp.path());
    v2_child(&tmp.path().join("corral"), "cpu memory pids");
    let v2 = CgroupV2::new(tmp.path(), "corral");
    for id in ["", "..", "a/b", "."] {
        assert!(matches!(v2.create(id), Err(Error::Cgroup(_))), "{id:?}");
        assert!(matches!(v2.remove(id), Err(Error::Cgroup(_))), "{id:?}");
    }
    assert!(matches!(
        CgroupV2::new(tmp.path(), "").prepare(),
        Err(Error::Cgroup(_))
    ));
}

/// A v1 root: one directory per controller, plus the named and unified
/// hierarchies that are not controllers.
pub(super) fn v1_root(root: &Path) {
    for c in [
        "memory", "pids", "cpu", "cpuacct", "cpuset", "systemd", "unified",
    ] {
        write(root.join(c).join("cgroup.procs"), "");
    }
}

#[test]
fn v1_writes_limits_in_each_controller_reads_usage_and_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    v1_root(root);
    let made = crate::cgroups::cgroup_v1::delegate_at(root, "corral", 0, 0).unwrap();
    assert_eq!(made.len(), 5, "{made:?}");
    let v1 = CgroupV1::new(root, "corral");
    let enforcer: &dyn LimitEnforcer = &v1;
    assert_eq!(enforcer.enforcement().name, "cgroup v1");
    assert_eq!(enforcer.cgroups_path("run-1"), "/corral/run-1");
    enforcer.create("run-1").unwrap();
    enforcer.apply("run-1", &limits()).unwrap();
    let dir = |c: &str| root.join(c).join("corral/run-1");
    // Only where the runner writes or reads: the container's cgroup
    // membership elsewhere is left as it was.
    for c in ["memory", "pids", "cpu", "cpuacct"] {
        assert!(dir(c).is_dir(), "{c}");
    }
    for c in ["cpuset", "systemd", "unified"] {
        assert!(!dir(c).exists(), "{c}");
    }
    enforcer.attach("run-1", 4242).unwrap();
    for c in ["memory", "pids", "cpu", "cpuacct"] {
        assert_eq!(read(dir(c).join("cgroup.procs")), "4242", "{c}");
    }
    assert_eq!(
        read(dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(dir("pids").join("pids.max")), "100");
    assert_eq!(read(dir("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "150000");

    write(
        dir("memory").join("memory.max_usage_in_bytes"),
        "67108864\n",
    );
    write(
        dir("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    write(dir("pids").join("pids.events"), "max 0\n");
    write(dir("cpuacct").join("cpuacct.usage"), "3000000000\n");
    write(dir("cpuacct").join("cpuacct.usage_user"), "2000000000\n");
    write(dir("cpuacct").join("cpuacct.usage_sys"), "1000000000\n");
    let usage = enforcer.usage("run-1");
    assert_eq!(usage.peak_memory_bytes, 64 << 20);
    assert_eq!(
        usage.cpu,
        Some(CpuTime {
            total: Duration::from_secs(3),
            user: Duration::from_secs(2),
            system: Duration::from_secs(1),
        })
    );
    assert!(!usage.oom_killed && !usage.pids_limit_hit);
    write(
        dir("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    assert!(enforcer.usage("run-1").oom_killed);

    for c in ["memory", "pids", "cpu", "cpuacct"] {
        write(dir(c).join("cgroup.procs"), "");
        drop_interface_files(&dir(c));
    }
    enforcer.remove("run-1").unwrap();
    for c in ["memory", "pids", "cpu", "cpuacct"] {
        assert!(!dir(c).exists(), "{c}");
        assert!(root.join(c).join("corral").is_dir());
    }
}

#[test]
fn rlimits_only_makes_no_cgroup_and_bounds_processes() {
    let enforcer: &dyn LimitEnforcer = &RlimitsOnly;
    assert_eq!(enforcer.enforcement().name, "rlimits");
    let path = enforcer.cgroups_path("run-1");
    assert_eq!(path, "/corral-nocgroup/run-1");
    enforcer.create("run-1").unwrap();
    enforcer.attach("run-1", 4242).unwrap();
    enforcer.apply("run-1", &limits()).unwrap();
    let rlimits: Vec<(&str, u64)> = enforcer
        .rlimits(&limits())
        .iter()
        .map(|r| (r.kind, r.value))
        .collect();
    assert_eq!(
        rlimits,
        [
            ("RLIMIT_AS", 64 << 20),
            ("RLIMIT_NPROC", 100),
            ("RLIMIT_CPU", 60)
        ]
    );
    // No CPU limit asked: no RLIMIT_CPU.
    let no_cpu = Limits {
        cpu_millis: None,
        ..limits()
    };
    assert_eq!(enforcer.rlimits(&no_cpu).len(), 2);
    assert_eq!(enforcer.usage("run-1"), Usage::default());
    enforcer.remove("run-1").unwrap();
}

/// Pinned, an enforcer reaches its directories through descriptors opened
/// beforehand: covering or moving the hierarchy afterwards changes nothing
/// for it, as in a run's own mount namespace where `/sys/fs/cgroup` is gone.
#[test]
fn pinned_enforcers_keep_their_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cgroup");
    v1_root(&root);
    crate::cgroups::cgroup_v1::delegate_at(&root, "corral", 0, 0).unwrap();
    let v1 = CgroupV1::new(&root, "corral").pinned().unwrap();
    let moved = tmp.path().join("elsewhere");
    fs::rename(&root, &moved).unwrap();
    v1.create("run-1").unwrap();
    v1.apply("run-1", &limits()).unwrap();
    assert_eq!(read(moved.join("pids/corral/run-1/pids.max")), "100");
    let root2 = tmp.path().join("cgroup2");
    v2_root(&root2);
    v2_child(&root2.join("corral"), "cpu memory pids");
    let v2 = CgroupV2::new(&root2, "corral").pinned().unwrap();
    let moved2 = tmp.path().join("elsewhere2");
    fs::rename(&root2, &moved2).unwrap();
    v2.create("run-1").unwrap();
    v2.apply("run-1", &limits()).unwrap();
    assert_eq!(read(moved2.join("corral/run-1/pids.max")), "100");
}
