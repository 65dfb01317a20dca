//! Limits on real runs: the memory limit's kill reported as such, the
//! pids limit, rlimits when configured. (The v2 manager against this host's
//! real cgroup2 mount is a unit test, `src/cgroups/tests/real_v2.rs`.)

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{busybox_root, request};
use corral_runner::{Host, LimitHit, Limits, RunnerConfig};

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
    assert!(host.cgroup_parent.is_some(), "no cgroup: {host:?}");
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
    assert_eq!(host.cgroup_parent, None, "{host:?}");
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
