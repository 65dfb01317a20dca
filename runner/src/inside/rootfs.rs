//! The request's root, assembled by the container's init at
//! [`NEW_ROOT`] from host directories, with the container's `/proc` and
//! `/dev` moved into it, then made `/`.
//!
//! Unmounting anything waits for an RCU grace period (1 to 10 ms here), so
//! nothing is unmounted once the request is known. Ahead of it
//! ([`detach_host`]), the init takes a detached copy of its view of the
//! host ([`HOST_VIEW`]) as a descriptor and unmounts the view itself: from
//! then on nothing of the host is reachable by any path in the container.
//! With the request ([`enter`]), host directories are resolved beneath
//! that descriptor, the new root is moved on top of the container's first
//! root (which holds nothing but empty mount points) and the init
//! `chroot`s into it. The descriptor leaves the container before the
//! command starts (the executor hands it to the run's process, whose
//! clean-up pays for its release).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{
    clone_tree, make_dirs, mount_overlay, move_mount, open_beneath, rbind, rbind_fd,
    read_only_tree, remount_bind, tmpfs, under,
};
use crate::error::{Error, Result};
use crate::plan::{NewRoot, Plan};
use crate::spec::{HOST_VIEW, NEW_ROOT};

/// Kernel file systems the new root receives, and `/tmp`.
const MOUNT_POINTS: [&str; 3] = ["proc", "dev", "tmp"];

/// Ahead of the request: makes the container's mounts private, takes a
/// detached copy of the view of the host and unmounts the view. Returns
/// the copy, the only way to the host from here on.
pub(crate) fn detach_host() -> Result<OwnedFd> {
    make_private()?;
    let host = clone_tree(Path::new(HOST_VIEW))?;
    nix::mount::umount2(HOST_VIEW, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(format!("detach {HOST_VIEW}"), e))?;
    Ok(host)
}

/// Makes every mount of this mount namespace private, so that moves are
/// allowed and nothing propagates back out.
pub(crate) fn make_private() -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make the container's mounts private", e))
}

/// Builds the plan's root from `host` (what [`detach_host`] returned) and
/// makes it `/`, with `dev` (the container's `/dev`, or a run's own made
/// by `dev::make_fresh`) as its `/dev`; `/tmp` and `/dev/shm` get the
/// plan's mode and size. Returns the clones of layers to hold until after
/// the answer (see `inside::layers`).
pub(crate) fn enter(plan: &Plan, host: &OwnedFd, dev: &Path) -> Result<Vec<OwnedFd>> {
    let new = Path::new(NEW_ROOT);
    let clones = build_root(plan, host, new)?;
    for sub in &plan.subtrees {
        let at = under(new, &sub.0);
        rbind(&at.display().to_string(), &at)?;
        remount_bind(&at, sub.1)?;
    }
    move_mount(Path::new("/proc"), &new.join("proc"))?;
    move_mount(dev, &new.join("dev"))?;
    switch_into(new)?;
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
    .map_err(|e| Error::io("chmod /dev/shm", e))?;
    Ok(clones)
}

/// Mounts the root at `new`, its mount points, the input root at the
/// exec path, and makes a host or image root read-only. Returns the
/// overlays' clones of layers.
fn build_root(plan: &Plan, host: &OwnedFd, new: &Path) -> Result<Vec<OwnedFd>> {
    let mut clones = Vec::new();
    let read_only = match &plan.root {
        NewRoot::InputRoot(overlay) => {
            clones = mount_overlay(host, overlay, new)?;
            false
        }
        NewRoot::Layers(overlay) => {
            clones = mount_overlay(host, overlay, new)?;
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
        clones.extend(mount_overlay(host, overlay, &at)?);
    }
    if read_only {
        remount_bind_self(new)?;
    }
    Ok(clones)
}

/// A root mount made read-only through a bind of itself, so that the
/// mounts beneath it stay as they are.
fn remount_bind_self(new: &Path) -> Result<()> {
    rbind(&new.display().to_string(), new)?;
    remount_bind(new, true)
}

/// Moves the root at `new` on top of the container's first root and
/// makes it this process's root and working directory. The first root
/// stays beneath, holding only the empty mount points left by
/// [`detach_host`] and the moves; a `pivot_root` would have to unmount it
/// (see the module's comment).
fn switch_into(new: &Path) -> Result<()> {
    nix::unistd::chdir(new).map_err(|e| Error::sys(format!("chdir {}", new.display()), e))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys("move the run's root onto /", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot into the run's root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))
}
