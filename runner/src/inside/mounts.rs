//! Mount primitives for the container's init: resolving host paths beneath
//! the init's view of the host, overlays, binds, moves and attributes.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::error::{Error, Result};
use crate::plan::Overlay;

/// `MOUNT_ATTR_RDONLY` and friends (`linux/mount.h`).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `AT_RECURSIVE` (`linux/fcntl.h`): the whole tree below the path.
const AT_RECURSIVE: u32 = 0x8000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A directory of the host, opened beneath `host` (the init's view of the
/// host's `/`) so that symlinks resolve as they do on the host, never out
/// of it.
pub(crate) fn open_beneath(host: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstring(rel)?;
    let how = libc::open_how {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and
    // an open_how of the size passed; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            host.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Error::sys(
            format!("open {} on the host", path.display()),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The `/proc/self/fd/N` name of `fd`, through which mount(2) reaches the
/// very directory the descriptor holds.
pub(crate) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidRequest(format!("path {} contains NUL", path.display())))
}

/// Mounts `overlay` (host directories) at `target`, inside the user
/// namespace (hence `userxattr`).
pub(crate) fn mount_overlay(host: &OwnedFd, overlay: &Overlay, target: &Path) -> Result<()> {
    let mut held = Vec::new();
    let mut lowers = Vec::new();
    for dir in &overlay.lowers {
        let fd = open_beneath(host, dir)?;
        lowers.push(fd_path(&fd));
        held.push(fd);
    }
    let upper = open_beneath(host, &overlay.upper)?;
    let work = open_beneath(host, &overlay.work)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lowers.join(":"),
        fd_path(&upper),
        fd_path(&work)
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        Error::sys(
            format!(
                "mount the overlay of {} at {}",
                overlay
                    .lowers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                target.display()
            ),
            e,
        )
    })
}

/// Binds `source` (a path, or [`fd_path`] of a descriptor) onto `target`
/// with everything mounted beneath it.
pub(crate) fn rbind(source: &str, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("bind {source} at {}", target.display()), e))
}

/// Sets the bind mount at `target` (its top only) read-only or not, and
/// nosuid, nodev.
pub(crate) fn remount_bind(target: &Path, read_only: bool) -> Result<()> {
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::sys(format!("remount {}", target.display()), e))
}

/// Makes the mount at `target` and every mount beneath it read-only,
/// nosuid and nodev.
pub(crate) fn read_only_tree(target: &Path) -> Result<()> {
    let c = cstring(target)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr with a NUL-terminated path and a mount_attr of
    // the size passed, both valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Error::sys(
            format!("make {} read-only", target.display()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Moves the mount at `from` (with everything beneath it) to `to`.
pub(crate) fn move_mount(from: &Path, to: &Path) -> Result<()> {
    mount(
        Some(from),
        to,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("move {} to {}", from.display(), to.display()), e))
}

/// Mounts a tmpfs at `target` with `options`.
pub(crate) fn tmpfs(target: &Path, flags: MsFlags, options: &str) -> Result<()> {
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(options),
    )
    .map_err(|e| Error::sys(format!("mount a tmpfs at {}", target.display()), e))
}

/// Makes `path` (and its parents) as directories, mode 0755.
pub(crate) fn make_dirs(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("create {}", path.display()), e))
}

/// `base` with the absolute inside path `inside` beneath it.
pub(crate) fn under(base: &Path, inside: &Path) -> PathBuf {
    base.join(inside.strip_prefix("/").unwrap_or(inside))
}
