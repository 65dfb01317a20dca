//! Limits on real runs and on a real cgroup2 mount: the memory limit's
//! kill reported as such, rlimits when configured, and the v2 manager's
//! create, usage and remove against the kernel (as far as this host's
//! cgroup2 mount allows).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{busybox_root, request};
use corral_runner::cgroups::mechanism::is_cgroup2;
use corral_runner::cgroups::{CgroupV2, LimitEnforcer, Mechanism};
use corral_runner::{Error, Host, LimitHit, Limits, RunnerConfig};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
}

/// Runs `script` in a busybox root with `limits`; returns the outcome and
/// what it printed.
fn run(host: &Host, script: &str, limits: Limits) -> (corral_runner::Outcome, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.path().join("out");
    let mut req = request(&root, &scratch, &out, script);
    req.limits = limits;
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    (outcome, format!("{stdout}{stderr}"))
}

/// The test in the escape suite, here so that it runs with the runner's
/// own tests on whatever cgroup version this host has.
#[test]
fn a_memory_limit_kill_is_reported_as_memory() {
    require_root();
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    assert_ne!(host.limits_by, Mechanism::Rlimits, "{host:?}");
    // `tail` of an endless line buffers it all.
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let (outcome, output) = run(&host, "exec tail /dev/zero", limits);
    assert_eq!(
        outcome.limit_hit,
        Some(LimitHit::Memory),
        "{outcome:?}\n{output}"
    );
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert!(outcome.peak_memory_bytes >= 60 << 20, "{outcome:?}");
    assert!(
        outcome.user_cpu + outcome.system_cpu > Duration::ZERO,
        "{outcome:?}"
    );
}

#[test]
fn a_fork_bomb_hits_the_pids_limit() {
    require_root();
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        max_pids: Some(64),
        ..Limits::default()
    };
    let (outcome, output) = run(
        &host,
        "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived",
        limits,
    );
    assert_eq!(
        outcome.limit_hit,
        Some(LimitHit::Pids),
        "{outcome:?}\n{output}"
    );
}

#[test]
fn a_run_within_its_limits_reports_no_limit() {
    require_root();
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        memory_bytes: Some(256 << 20),
        max_pids: Some(64),
        cpu_millis: Some(500),
        ..Limits::default()
    };
    let (outcome, output) = run(&host, "echo ok", limits);
    assert_eq!(outcome.exit_code, Some(0), "{output}");
    assert_eq!(outcome.limit_hit, None, "{outcome:?}");
    assert_eq!(output, "ok\n");
}

#[test]
fn configured_rlimits_bound_the_processes() {
    require_root();
    let config: RunnerConfig = toml::from_str("cgroups = \"none\"").unwrap();
    let host = Host::probe(&config).unwrap();
    assert_eq!(host.limits_by, Mechanism::Rlimits);
    let limits = Limits {
        timeout: Some(Duration::from_secs(60)),
        memory_bytes: Some(256 << 20),
        max_pids: Some(300),
        ..Limits::default()
    };
    let (outcome, output) = run(&host, "ulimit -v; ulimit -u", limits);
    assert_eq!(outcome.exit_code, Some(0), "{output}");
    // ulimit -v is in KiB.
    assert_eq!(output, format!("{}\n300\n", 256 << 10));
}

/// A writable cgroup2 mount of this host: `/sys/fs/cgroup` on a v2 host,
/// the controller-less `unified` mount on a hybrid one.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = PathBuf::from(left.split_whitespace().nth(4)?);
        let rw = left
            .split_whitespace()
            .nth(5)?
            .split(',')
            .any(|o| o == "rw");
        (right.split_whitespace().next()? == "cgroup2" && rw).then_some(point)
    })
}

/// Puts a `sleep` in the run's cgroup as libcontainer would put the
/// container's init, then removes the cgroup through the trait: the kernel
/// must kill the sleep (`cgroup.kill`) and remove the directory.
#[test]
fn v2_manager_creates_measures_and_removes_on_a_real_cgroup2_mount() {
    require_root();
    let Some(mount) = cgroup2_mount() else {
        eprintln!("no writable cgroup2 mount on this host: nothing to check");
        return;
    };
    assert!(is_cgroup2(&mount));
    let parent = format!("corral-test-{}", std::process::id());
    let parent_dir = mount.join(&parent);
    std::fs::create_dir(&parent_dir).unwrap();
    let result = std::panic::catch_unwind(|| exercise_real_v2(&mount, &parent));
    let _ = std::fs::remove_dir(&parent_dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(!parent_dir.exists());
}

fn exercise_real_v2(mount: &Path, parent: &str) {
    let v2 = CgroupV2::new(mount, parent);
    let enforcer: &dyn LimitEnforcer = &v2;
    let offered = std::fs::read_to_string(mount.join(parent).join("cgroup.controllers")).unwrap();
    if !offered.split_whitespace().any(|c| c == "memory") {
        // A hybrid host's unified mount has no memory controller.
        let memory = Limits {
            memory_bytes: Some(1 << 30),
            ..Limits::default()
        };
        assert!(matches!(
            enforcer.create("run", &memory),
            Err(Error::CgroupController { controller, .. }) if controller == "memory"
        ));
    }
    enforcer.create("run", &Limits::default()).unwrap();
    let run = mount.join(parent).join("run");
    assert!(
        run.join("cgroup.procs").exists(),
        "the kernel made a cgroup"
    );
    let mut sleep = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(run.join("cgroup.procs"), sleep.id().to_string()).unwrap();
    let usage = enforcer.usage("run");
    assert!(
        usage.cpu.is_some(),
        "cpu.stat is in every v2 cgroup: {usage:?}"
    );
    assert!(!usage.oom_killed && !usage.pids_limit_hit);
    enforcer.remove("run").unwrap();
    assert!(!run.exists());
    let status = sleep.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    enforcer.remove("run").unwrap();
}
