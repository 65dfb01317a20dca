//! The directories of an overlay as descriptors overlayfs accepts.
//!
//! overlayfs takes a private copy of the mount each layer is on, and the
//! kernel makes that copy only of a mount of the caller's own mount
//! namespace or of the top of a detached tree. The init's copy of the
//! host ([`super::rootfs::detach_host`]) is a detached tree whose top is
//! the host's `/`: a layer on `/` is accepted, but one on a file system
//! mounted below it (a tmpfs `/tmp` or `/dev/shm`, a data disk on
//! `/var/cache`) is refused with `EINVAL` ("failed to clone upperpath").
//! Such a layer is first cloned on its own (`open_tree`, not recursive):
//! a one-mount detached tree whose top is the layer, which overlayfs
//! accepts. The clones are returned to be held until after the answer,
//! for the last release of a detached tree unmounts it, which waits for
//! an RCU grace period.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::mounts::{clone_at, open_beneath};
use crate::error::{Error, Result};

/// Opens host directories for an overlay, cloning those below the top of
/// the host's copy; keeps the clones.
pub(crate) struct Layers<'a> {
    host: &'a OwnedFd,
    top: u64,
    clones: Vec<OwnedFd>,
}

impl<'a> Layers<'a> {
    /// Layers taken from `host`, the init's detached copy of the host.
    pub(crate) fn new(host: &'a OwnedFd) -> Result<Layers<'a>> {
        Ok(Layers {
            host,
            top: mount_id(host, "the host's copy")?,
            clones: Vec::new(),
        })
    }

    /// A read-only layer: the host directory `dir`.
    pub(crate) fn lower(&mut self, dir: &Path) -> Result<OwnedFd> {
        let fd = open_beneath(self.host, dir)?;
        if mount_id(&fd, &dir.display().to_string())? == self.top {
            return Ok(fd);
        }
        let tree = clone_at(&fd, false, || {
            format!("clone the mount of {}", dir.display())
        })?;
        let layer = open_beneath(&tree, Path::new("."))?;
        self.clones.push(tree);
        Ok(layer)
    }

    /// The upper and work directories, which overlayfs needs on one mount:
    /// when they are below the top, their common parent is cloned.
    pub(crate) fn upper_and_work(
        &mut self,
        upper: &Path,
        work: &Path,
    ) -> Result<(OwnedFd, OwnedFd)> {
        let upper_fd = open_beneath(self.host, upper)?;
        let work_fd = open_beneath(self.host, work)?;
        let mount = mount_id(&upper_fd, &upper.display().to_string())?;
        if mount == self.top {
            return Ok((upper_fd, work_fd));
        }
        let (Some(parent), Some(upper_name), Some(work_name)) =
            (upper.parent(), upper.file_name(), work.file_name())
        else {
            return Err(Error::InvalidRequest(format!(
                "the upper directory {} has no parent to clone",
                upper.display()
            )));
        };
        let parent_fd = open_beneath(self.host, parent)?;
        let same_mount = work.parent() == Some(parent)
            && mount_id(&work_fd, &work.display().to_string())? == mount
            && mount_id(&parent_fd, &parent.display().to_string())? == mount;
        if !same_mount {
            return Err(Error::InvalidRequest(format!(
                "the overlay's upper directory {} and work directory {} must be beside each \
                 other on one file system",
                upper.display(),
                work.display()
            )));
        }
        let tree = clone_at(&parent_fd, false, || {
            format!("clone the mount of {}", parent.display())
        })?;
        let pair = (
            open_beneath(&tree, Path::new(upper_name))?,
            open_beneath(&tree, Path::new(work_name))?,
        );
        self.clones.push(tree);
        Ok(pair)
    }

    /// The clones made, to be held until after the answer.
    pub(crate) fn into_clones(self) -> Vec<OwnedFd> {
        self.clones
    }
}

/// The ID of the mount `fd` is on (`statx`'s `STATX_MNT_ID`).
fn mount_id(fd: &OwnedFd, what: &str) -> Result<u64> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx of a valid descriptor with an empty path and
    // AT_EMPTY_PATH, writing into a buffer of the struct's size.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::sys(
            format!("find the mount of {what}"),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: zero is a valid value of every field of this plain C struct,
    // and statx succeeded.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(Error::Container(format!(
            "the kernel gave no mount ID for {what}"
        )));
    }
    Ok(stx.stx_mnt_id)
}
