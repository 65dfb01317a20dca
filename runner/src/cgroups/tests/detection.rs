//! Which limit enforcer the runner picks: the decision against injected
//! host facts and fake hierarchies, the file system probe against this
//! host's real mounts, and the `cgroups` configuration key.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cgroups::mechanism::{detect, is_cgroup2};
use crate::cgroups::{CgroupsSetting, HostFacts, Mechanism};
use crate::{Error, Host, RunnerConfig};

fn write(path: impl AsRef<Path>, text: &str) {
    let path = path.as_ref();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn facts(root: &Path, cgroup2: bool, is_root: bool, own: Option<&str>) -> HostFacts {
    HostFacts {
        root: root.to_path_buf(),
        root_is_cgroup2: cgroup2,
        is_root,
        own_cgroup: own.map(str::to_string),
    }
}

fn v1_layout(root: &Path) {
    for c in ["memory", "pids", "cpu", "systemd", "unified"] {
        write(root.join(c).join("cgroup.procs"), "");
    }
}

fn v2_layout(root: &Path, controllers: &str) {
    write(root.join("cgroup.controllers"), controllers);
    write(root.join("cgroup.subtree_control"), "");
}

#[test]
fn auto_takes_v2_on_a_usable_cgroup2_root() {
    let tmp = tempfile::tempdir().unwrap();
    v2_layout(tmp.path(), "cpu io memory pids\n");
    let got = detect(
        CgroupsSetting::Auto,
        "corral",
        &facts(tmp.path(), true, true, None),
    );
    assert_eq!(got.unwrap(), Mechanism::CgroupV2);
    // As root, detection made the parent ready.
    assert!(tmp.path().join("corral").is_dir());
    assert_eq!(
        fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
        "+cpu +memory +pids"
    );
}

#[test]
fn auto_falls_back_to_rlimits_when_v2_cannot_limit_memory() {
    let tmp = tempfile::tempdir().unwrap();
    v2_layout(tmp.path(), "cpu io pids\n");
    let f = facts(tmp.path(), true, true, None);
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral", &f).unwrap(),
        Mechanism::Rlimits
    );
    // Asked for explicitly, the same host is an error naming the controller.
    assert!(matches!(
        detect(CgroupsSetting::V2, "corral", &f),
        Err(Error::CgroupController { controller, .. }) if controller == "memory"
    ));
}

#[test]
fn unprivileged_v2_needs_a_delegated_parent_holding_the_runner() {
    let tmp = tempfile::tempdir().unwrap();
    v2_layout(tmp.path(), "cpu memory pids\n");
    let parent = tmp.path().join("corral-user-1000");
    write(parent.join("cgroup.controllers"), "cpu memory pids\n");
    write(parent.join("cgroup.subtree_control"), "");
    write(parent.join("cgroup.procs"), "");
    let inside = facts(tmp.path(), true, false, Some("/corral-user-1000/runner"));
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral-user-1000", &inside).unwrap(),
        Mechanism::CgroupV2
    );
    let outside = facts(tmp.path(), true, false, Some("/user.slice/session-1.scope"));
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral-user-1000", &outside).unwrap(),
        Mechanism::Rlimits
    );
    assert!(matches!(
        detect(CgroupsSetting::V2, "corral-user-1000", &outside),
        Err(Error::Cgroup(_))
    ));
}

#[test]
fn auto_takes_v1_when_its_controllers_are_mounted() {
    let tmp = tempfile::tempdir().unwrap();
    v1_layout(tmp.path());
    let f = facts(tmp.path(), false, true, None);
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral", &f).unwrap(),
        Mechanism::CgroupV1
    );
    // As root the parent is made under every controller, not the named or
    // unified hierarchies.
    for c in ["memory", "pids", "cpu"] {
        assert!(tmp.path().join(c).join("corral").is_dir(), "{c}");
    }
    for c in ["systemd", "unified"] {
        assert!(!tmp.path().join(c).join("corral").exists(), "{c}");
    }
    assert_eq!(
        detect(CgroupsSetting::V1, "corral", &f).unwrap(),
        Mechanism::CgroupV1
    );
}

#[test]
fn unprivileged_v1_needs_the_parent_delegated() {
    let tmp = tempfile::tempdir().unwrap();
    v1_layout(tmp.path());
    let f = facts(tmp.path(), false, false, None);
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral-user-1000", &f).unwrap(),
        Mechanism::Rlimits
    );
    assert!(matches!(
        detect(CgroupsSetting::V1, "corral-user-1000", &f),
        Err(Error::Cgroup(_))
    ));
    for c in ["memory", "pids", "cpu"] {
        fs::create_dir(tmp.path().join(c).join("corral-user-1000")).unwrap();
    }
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral-user-1000", &f).unwrap(),
        Mechanism::CgroupV1
    );
}

#[test]
fn none_and_impossible_settings() {
    let tmp = tempfile::tempdir().unwrap();
    v1_layout(tmp.path());
    let v1_host = facts(tmp.path(), false, true, None);
    assert_eq!(
        detect(CgroupsSetting::None, "corral", &v1_host).unwrap(),
        Mechanism::Rlimits
    );
    assert!(
        !tmp.path().join("memory/corral").exists(),
        "none touches nothing"
    );
    assert!(matches!(
        detect(CgroupsSetting::V2, "corral", &v1_host),
        Err(Error::Cgroup(_))
    ));
    // A cgroup2 root is never taken for v1 controllers.
    let empty = tempfile::tempdir().unwrap();
    v2_layout(empty.path(), "cpu memory pids\n");
    let v2_host = facts(empty.path(), true, true, None);
    assert!(matches!(
        detect(CgroupsSetting::V1, "corral", &v2_host),
        Err(Error::Cgroup(_))
    ));
    // Nothing mounted at all.
    let bare = tempfile::tempdir().unwrap();
    let bare_host = facts(bare.path(), false, true, None);
    assert_eq!(
        detect(CgroupsSetting::Auto, "corral", &bare_host).unwrap(),
        Mechanism::Rlimits
    );
    assert!(matches!(
        detect(CgroupsSetting::V1, "corral", &bare_host),
        Err(Error::Cgroup(_))
    ));
}

/// cgroup2 mount points of this host, from /proc/self/mountinfo.
fn cgroup2_mounts() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = PathBuf::from(left.split_whitespace().nth(4)?);
            (right.split_whitespace().next()? == "cgroup2").then_some(point)
        })
        .collect()
}

#[test]
fn statfs_tells_cgroup2_from_other_file_systems() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(!is_cgroup2(tmp.path()));
    assert!(!is_cgroup2(&tmp.path().join("absent")));
    let mounts = cgroup2_mounts();
    for m in &mounts {
        assert!(is_cgroup2(m), "{}", m.display());
    }
    eprintln!("cgroup2 mounts on this host: {mounts:?}");
}

#[test]
fn this_host_gets_the_manager_its_hierarchy_calls_for() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let root = Path::new(crate::cgroups::DEFAULT_ROOT);
    let (expected, name) = if is_cgroup2(root) {
        (Mechanism::CgroupV2, "cgroup v2")
    } else {
        (Mechanism::CgroupV1, "cgroup v1")
    };
    assert_eq!(host.limits_by, expected, "{host:?}");
    assert_eq!(host.cgroup_parent.as_deref(), Some("corral"));
    let lines = host.enforced_limits();
    for prefix in ["memory: ", "pids: ", "cpu: "] {
        let line = lines.iter().find(|l| l.starts_with(prefix)).unwrap();
        assert!(line.starts_with(&format!("{prefix}{name}, ")), "{lines:?}");
    }

    let config: RunnerConfig = toml::from_str("cgroups = \"none\"").unwrap();
    let host = Host::probe(&config).unwrap();
    assert_eq!(host.limits_by, Mechanism::Rlimits);
    assert_eq!(host.cgroup_parent, None);
    assert!(host
        .enforced_limits()
        .iter()
        .any(|l| l == "memory: rlimits, RLIMIT_AS (per process)"));
}

#[test]
fn the_cgroups_key_takes_four_values() {
    let parse = |text: &str| toml::from_str::<RunnerConfig>(text).map(|c| c.cgroups);
    assert_eq!(parse("").unwrap(), None);
    assert_eq!(
        parse("cgroups = \"auto\"").unwrap(),
        Some(CgroupsSetting::Auto)
    );
    assert_eq!(parse("cgroups = \"v1\"").unwrap(), Some(CgroupsSetting::V1));
    assert_eq!(parse("cgroups = \"v2\"").unwrap(), Some(CgroupsSetting::V2));
    assert_eq!(
        parse("cgroups = \"none\"").unwrap(),
        Some(CgroupsSetting::None)
    );
    assert!(parse("cgroups = \"v3\"").is_err());
    assert!(
        parse("cgroup = \"v2\"").is_err(),
        "unknown keys are refused"
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runner.toml");
    fs::write(&file, "cgroups = \"systemd\"\n").unwrap();
    match RunnerConfig::load(&file) {
        Err(Error::Config { path, .. }) => assert_eq!(path, file.display().to_string()),
        other => panic!("{other:?}"),
    }
}
