//! Mount primitives for the container's init: resolving host paths beneath
//! the init's view of the host, overlays, binds, moves and attributes.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::layers::Layers;
use crate::error::{Error, Result};
use crate::plan::Overlay;

/// `MOUNT_ATTR_RDONLY` and friends (`linux/mount.h`).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `AT_RECURSIVE` (`linux/fcntl.h`): the whole tree below the path.
const AT_RECURSIVE: u32 = 0x8000;
/// `fsconfig(2)` commands (`linux/mount.h`).
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_FD: u32 = 5;
const FSCONFIG_CMD_CREATE: u32 = 6;
/// `fsopen`/`fsmount`/`open_tree` flags.
const FSOPEN_CLOEXEC: u32 = 0x1;
const FSMOUNT_CLOEXEC: u32 = 0x1;
const OPEN_TREE_CLONE: u32 = 0x1;
/// `move_mount(2)`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A directory of the host, opened beneath `host` (the init's detached copy
/// of its view of the host's `/`) so that symlinks resolve as they do on the host, never out
/// of it.
pub(crate) fn open_beneath(host: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstring(rel)?;
    let how = OpenHow {
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
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
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

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidRequest(format!("path {} contains NUL", path.display())))
}

/// The descriptor a raw syscall returned, or the error of `what`.
fn owned(fd: libc::c_long, what: impl FnOnce() -> String) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::sys(what(), nix::errno::Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// One `fsconfig(2)` call on `fs`.
fn fsconfig(fs: &OwnedFd, cmd: u32, key: Option<&str>, aux: i32, what: &str) -> Result<()> {
    let key = key
        .map(|k| CString::new(k).map_err(|_| Error::InvalidRequest(format!("key {k:?}"))))
        .transpose()?;
    let key_ptr = key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
    // SAFETY: fsconfig with a valid fs context, a NUL-terminated key or
    // null, no value, and an fd or 0 as aux.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key_ptr,
            std::ptr::null::<libc::c_void>(),
            aux,
        )
    };
    if r < 0 {
        return Err(Error::sys(what.to_string(), nix::errno::Errno::last()));
    }
    Ok(())
}

/// Attaches the detached mount `mnt` at `target`.
fn attach(mnt: &OwnedFd, target: &Path) -> Result<()> {
    let c = cstring(target)?;
    let empty = c"";
    // SAFETY: move_mount from a mount fd (empty path) to a NUL-terminated
    // target path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::sys(
            format!("attach a mount at {}", target.display()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Mounts `overlay` (host directories) at `target`, inside the user
/// namespace (hence `userxattr`). Every layer is handed to overlayfs as a
/// descriptor (Linux 6.13): no path is walked, so nothing of `/proc` is
/// needed and nothing can be redirected.
///
/// `volatile`: the upper directory is a run's scratch, thrown away after
/// a crash, so nothing of it need reach the disk. Without it, the
/// overlay's unmount after every run syncs the whole file system the
/// scratch directory is on (`sync_filesystem` of the upper's super
/// block): every dirty page of every process on it written out and
/// waited for, and a `fsync` in the sandbox does the same. The mount
/// leaves `work/work/incompat/volatile` behind, which a later mount on
/// the same work directory refuses (`sandbox::dispatch::clear_work`).
///
/// Returns the clones of layers below the top of `host`
/// ([`super::layers`]), to be held until after the answer.
pub(crate) fn mount_overlay(
    host: &OwnedFd,
    overlay: &Overlay,
    target: &Path,
) -> Result<Vec<OwnedFd>> {
    let what = |step: &str| {
        format!(
            "overlay of {} at {}: {step}",
            overlay
                .lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            target.display()
        )
    };
    // SAFETY: fsopen with a NUL-terminated file system name.
    let fs = owned(
        unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) },
        || what("fsopen"),
    )?;
    let mut layers = Layers::new(host)?;
    for dir in &overlay.lowers {
        let fd = layers.lower(dir)?;
        fsconfig(
            &fs,
            FSCONFIG_SET_FD,
            Some("lowerdir+"),
            fd.as_raw_fd(),
            &what("lowerdir+"),
        )?;
    }
    let (upper, work) = layers.upper_and_work(&overlay.upper, &overlay.work)?;
    for (key, fd) in [("upperdir", &upper), ("workdir", &work)] {
        fsconfig(&fs, FSCONFIG_SET_FD, Some(key), fd.as_raw_fd(), &what(key))?;
    }
    for flag in ["userxattr", "volatile"] {
        fsconfig(&fs, FSCONFIG_SET_FLAG, Some(flag), 0, &what(flag))?;
    }
    fsconfig(&fs, FSCONFIG_CMD_CREATE, None, 0, &what("create"))?;
    // SAFETY: fsmount of a created fs context, no attributes.
    let mnt = owned(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) },
        || what("fsmount"),
    )?;
    attach(&mnt, target)?;
    Ok(layers.into_clones())
}

/// Binds host directory `source` (a descriptor beneath the host view)
/// onto `target` with everything mounted beneath it.
pub(crate) fn rbind_fd(source: &OwnedFd, target: &Path) -> Result<()> {
    let tree = clone_at(source, true, || {
        format!("clone the mounts for {}", target.display())
    })?;
    attach(&tree, target)
}

/// A detached copy of the mount `dir` is on, with `dir` as its top, and
/// with everything mounted beneath it when `recursive`; `what` names it
/// in an error.
pub(crate) fn clone_at(
    dir: &OwnedFd,
    recursive: bool,
    what: impl FnOnce() -> String,
) -> Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree of a directory fd with an empty path.
    owned(
        unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) },
        what,
    )
}

/// A detached copy of the mount at `path` with everything mounted beneath
/// it, as a descriptor (the mounts live as long as it does).
pub(crate) fn clone_tree(path: &Path) -> Result<OwnedFd> {
    let c = cstring(path)?;
    // SAFETY: open_tree of a NUL-terminated path, cloning the tree.
    owned(
        unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE,
            )
        },
        || format!("copy the mounts at {}", path.display()),
    )
}

/// Binds the path `source` onto `target` with everything mounted beneath
/// it.
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
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys(format!("move {} to {}", from.display(), to.display()), e))
}

/// Mounts a tmpfs at `target` with `options`.
pub(crate) fn tmpfs(target: &Path, flags: MsFlags, options: &str) -> Result<()> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
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
