//! The mount namespace of a run's process, private to it, where
//! libcontainer finds no cgroup hierarchy to work on and keeps its state on
//! a tmpfs that disappears with the process.
//!
//! libcontainer 0.7 always manages a cgroup for the container: its v1
//! manager looks up twelve controllers (each lookup reads
//! `/proc/self/mountinfo` and `/proc/self/cgroup`), and moving a process
//! into a cgroup waits for an RCU grace period (about 10 ms here). The
//! runner drives the run's cgroup itself (`cgroups::LimitEnforcer`,
//! through directories opened before this namespace was entered), so here
//! the real hierarchy is gone: as root, `/sys/fs/cgroup` is unmounted and
//! an empty tmpfs takes its place, which libcontainer reads as a cgroup v1
//! host without a single controller mounted and leaves alone. An
//! unprivileged process cannot unmount what it inherited, so it covers the
//! hierarchy instead, with harmless stand-ins for libcontainer to write to
//! (see `crate::nocgroup`).

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::error::{Error, Result};
use crate::host::Host;

/// Where the cgroup hierarchies are mounted on the host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Enters the run's own mount namespace (and, unprivileged, a user
/// namespace in which the runner is uid 0) and mounts a fresh tmpfs on
/// the state directory. Returns the host as the container sees it from
/// here: its ids map to this namespace's 0 when one was made.
///
/// Call only in a single-threaded process made for the run.
pub(crate) fn enter(host: &Host, cgroups_path: &str) -> Result<Host> {
    let host = if host.is_root {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::sys("unshare a mount namespace", e))?;
        // Nothing done here may reach the host's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(|e| Error::sys("make mounts slaves", e))?;
        // Not an error if there is nothing to unmount.
        let _ = umount2(CGROUP_ROOT, MntFlags::MNT_DETACH);
        mount(
            Some("tmpfs"),
            CGROUP_ROOT,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755,size=4k"),
        )
        .map_err(|e| Error::sys(format!("cover {CGROUP_ROOT}"), e))?;
        host.clone()
    } else {
        crate::nocgroup::enter(cgroups_path)?;
        // The container's ids now map to this namespace's 0, the runner.
        Host {
            map_uid: 0,
            map_gid: 0,
            ..host.clone()
        }
    };
    state_tmpfs(&host.state_dir)?;
    Ok(host)
}

/// A tmpfs on `dir` for libcontainer's state, the bundle and the first
/// root: gone, without a deletion, when the run's process exits.
fn state_tmpfs(dir: &Path) -> Result<()> {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .map_err(|e| Error::sys(format!("mount a tmpfs on {}", dir.display()), e))
}
