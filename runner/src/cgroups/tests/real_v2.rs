//! The v2 manager's create, usage and remove against the kernel, on a
//! real cgroup2 mount (as far as this host's allows: on a hybrid host, the
//! controller-less `unified` mount).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cgroups::cgroup_v2::CgroupV2;
use crate::cgroups::mechanism::is_cgroup2;
use crate::cgroups::LimitEnforcer;
use crate::{Error, Limits};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
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
            enforcer.apply("run", &memory),
            Err(Error::CgroupController { controller, .. }) if controller == "memory"
        ));
    }
    enforcer.create("run").unwrap();
    enforcer.apply("run", &Limits::default()).unwrap();
    let run = mount.join(parent).join("run");
    assert!(
        run.join("cgroup.procs").exists(),
        "the kernel made a cgroup"
    );
    let mut sleep = Command::new("sleep").arg("600").spawn().unwrap();
    enforcer.attach("run", sleep.id() as i32).unwrap();
    assert_eq!(
        std::fs::read_to_string(run.join("cgroup.procs"))
            .unwrap()
            .trim(),
        sleep.id().to_string()
    );
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
