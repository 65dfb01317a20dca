//! The request's root, assembled by the container's init at
//! [`NEW_ROOT`] from host directories reached through [`HOST_VIEW`], with
//! the container's `/proc` and `/dev` moved into it, then made `/` by
//! `pivot_root`. Detaching the old root takes the view of the host with
//! it: from then on nothing of the host is reachable but what the new
//! root binds.

use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{
    make_dirs, mount_overlay, move_mount, open_beneath, rbind, rbind_fd, read_only_tree,
    remount_bind, tmpfs, under,
};
use crate::error::{Error, Result};
use crate::plan::{NewRoot, Plan};
use crate::spec::{HOST_VIEW, NEW_ROOT};

/// Kernel file systems the new root receives, and `/tmp`.
const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// Builds the plan's root and makes it `/`; `/tmp` and `/dev/shm` get the
/// plan's mode and size.
pub(crate) fn enter(plan: &Plan) -> Result<()> {
    // Private from here on, so that moves and the pivot are allowed and
    // nothing propagates back out.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make the container's mounts private", e))?;
    let new = Path::new(NEW_ROOT);
    {
        // Every descriptor into the host's view is dropped at the end of
        // this block, before the pivot detaches the view itself.
        let host = open_beneath_root()?;
        build_root(plan, &host, new)?;
    }
    for sub in &plan.subtrees {
        let at = under(new, &sub.0);
        rbind(&at.display().to_string(), &at)?;
        remount_bind(&at, sub.1)?;
    }
    move_mount(Path::new("/proc"), &new.join("proc"))?;
    move_mount(Path::new("/dev"), &new.join("dev"))?;
    pivot_into(new)?;
    let mode = format!("mode={:o}", plan.shared_mode);
    tmpfs(
        Path::new("/tmp"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        &format!("{mode},size={}", plan.tmp_bytes),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        "/dev/shm",
        std::fs::Permissions::from_mode(plan.shared_mode),
    )
    .map_err(|e| Error::io("chmod /dev/shm", e))
}

/// The init's view of the host's `/`.
fn open_beneath_root() -> Result<std::os::fd::OwnedFd> {
    let fd = nix::fcntl::open(
        HOST_VIEW,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {HOST_VIEW}"), e))?;
    // SAFETY: open just returned this descriptor to us alone.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Mounts the root at `new`, its mount points, the input root at the
/// exec path, and makes a host or image root read-only.
fn build_root(plan: &Plan, host: &std::os::fd::OwnedFd, new: &Path) -> Result<()> {
    let read_only = match &plan.root {
        NewRoot::InputRoot(overlay) => {
            mount_overlay(host, overlay, new)?;
            false
        }
        NewRoot::Layers(overlay) => {
            mount_overlay(host, overlay, new)?;
            true
        }
        NewRoot::HostDirs(dirs) => {
            tmpfs(
                new,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                "mode=755,size=1m",
            )?;
            for (source, inside) in dirs {
                let at = under(new, inside);
                make_dirs(&at)?;
                rbind_fd(&open_beneath(host, source)?, &at)?;
                read_only_tree(&at)?;
            }
            super::hidden::cover(new, &plan.hidden)?;
            true
        }
    };
    // Mount points the root lacks (in the input-root mode they land in the
    // overlay's upper directory).
    for dir in MOUNT_POINTS {
        let at = new.join(dir);
        if !at.is_dir() {
            make_dirs(&at)?;
        }
    }
    if let Some((overlay, at)) = &plan.input {
        let at = under(new, at);
        make_dirs(&at)?;
        mount_overlay(host, overlay, &at)?;
    }
    if read_only {
        remount_bind_self(new)?;
    }
    Ok(())
}

/// A root mount made read-only through a bind of itself, so that the
/// mounts beneath it stay as they are.
fn remount_bind_self(new: &Path) -> Result<()> {
    rbind(&new.display().to_string(), new)?;
    remount_bind(new, true)
}

/// `pivot_root` into `new` and detach the old root (and with it the view
/// of the host).
fn pivot_into(new: &Path) -> Result<()> {
    nix::unistd::chdir(new).map_err(|e| Error::sys(format!("chdir {}", new.display()), e))?;
    nix::unistd::pivot_root(".", ".")
        .map_err(|e| Error::sys("pivot_root into the run's root", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys("detach the container's first root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))
}
