//! The run's own namespaces for an unprivileged runner (see
//! `sandbox::private_ns`, which does the same as root without a user
//! namespace).
//!
//! libcontainer always moves the container into a cgroup, and the runner
//! drives the run's cgroup itself (or has none and uses rlimits). The run's
//! process (a throwaway child) therefore enters its own user and mount
//! namespace, where it is uid 0 mapped to the runner's uid, and covers
//! /sys/fs/cgroup with a tmpfs holding empty directories named like the real
//! controllers (it cannot unmount what it inherited, so libcontainer still
//! finds them listed). libcontainer's cgroup writes land in that tmpfs and
//! do nothing. The container's own user namespace nests inside this one
//! and maps its uid to this namespace's 0, i.e. to the runner's uid.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Error, Result};

/// Mount points of the cgroup hierarchies, from /proc/self/mountinfo.
fn cgroup_mount_points() -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect())
}

/// Enters the private namespaces and covers /sys/fs/cgroup, with the
/// run's cgroup (`cgroups_path`, as in the spec) ready in every controller.
/// Call only in a single-threaded throwaway process, before libcontainer.
pub(crate) fn enter(cgroups_path: &str) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let points = cgroup_mount_points()?;
    // A process that changed its credentials (a runner started by root
    // then dropped to a user) is not dumpable, which makes /proc/self/*
    // root-owned and the id maps unwritable. Nothing of value is exposed by
    // making this throwaway child dumpable: it runs as the runner's own uid.
    // SAFETY: prctl(PR_SET_DUMPABLE, 1) only changes a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys("unshare user and mount namespaces", e))?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| Error::io(format!("write {file}"), e))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make mounts private", e))?;
    let base = Path::new("/sys/fs/cgroup");
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(|e| Error::sys("cover /sys/fs/cgroup", e))?;
    for point in points {
        if let Ok(rel) = point.strip_prefix(base) {
            if !rel.as_os_str().is_empty() && !rel.starts_with("unified") {
                // libcontainer opens these files without O_CREAT.
                let dir = base.join(rel).join(cgroups_path.trim_start_matches('/'));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
                for file in ["cgroup.procs", "tasks"] {
                    std::fs::write(dir.join(file), "")
                        .map_err(|e| Error::io(format!("create {file} in {}", dir.display()), e))?;
                }
                // libcontainer copies cpuset.cpus/mems down from the
                // controller's root; any non-empty value will do.
                if rel.to_string_lossy().contains("cpuset") {
                    let mut level = base.join(rel);
                    let mut levels = vec![level.clone()];
                    for part in Path::new(cgroups_path.trim_start_matches('/')).components() {
                        level.push(part);
                        levels.push(level.clone());
                    }
                    for level in levels {
                        for file in ["cpuset.cpus", "cpuset.mems"] {
                            std::fs::write(level.join(file), "0").map_err(|e| {
                                Error::io(format!("create {file} in {}", level.display()), e)
                            })?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
