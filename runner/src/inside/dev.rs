//! A `/dev` of its own for each run of a container that serves several.
//!
//! The container's `/dev` (libcontainer's tmpfs with the host's device
//! nodes bound in, `/dev/pts`, `/dev/shm`) is shared by every copy of the
//! container's mount namespace: a file one run left in `/dev` or
//! `/dev/shm` would be there for the next. So each run's process, ahead of
//! its request, mounts a new tmpfs at [`FRESH_DEV`] holding the same
//! entries (the device nodes bound from the container's, the same links,
//! `/dev/pts` bound, a new `/dev/shm`), and the run's root receives that
//! one (see `rootfs::enter`).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{rbind, tmpfs};
use crate::error::{Error, Result};
use crate::spec::FRESH_DEV;

/// Options of the new `/dev`, as libcontainer mounts the container's.
const DEV_OPTIONS: &str = "mode=755,size=65536k";
/// Options of the new `/dev/shm` (its mode is the plan's, set later).
const SHM_OPTIONS: &str = "mode=1777,size=65536k";

/// Makes the run's `/dev` at [`FRESH_DEV`] from the container's `/dev`.
pub(crate) fn make_fresh() -> Result<()> {
    let fresh = Path::new(FRESH_DEV);
    tmpfs(fresh, MsFlags::MS_NOSUID, DEV_OPTIONS)?;
    let entries = std::fs::read_dir("/dev").map_err(|e| Error::io("list /dev", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list /dev", e))?;
        // Of what is mounted there (a device node bound onto a file), not
        // of the directory entry beneath.
        let kind = std::fs::symlink_metadata(entry.path())
            .map_err(|e| Error::io(format!("type of {}", entry.path().display()), e))?
            .file_type();
        let to = fresh.join(entry.file_name());
        let from = entry.path();
        if kind.is_symlink() {
            let target = std::fs::read_link(&from)
                .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
            symlink(&target, &to)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&to)
                .map_err(|e| Error::io(format!("create {}", to.display()), e))?;
            if entry.file_name() == "shm" {
                tmpfs(
                    &to,
                    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
                    SHM_OPTIONS,
                )?;
            } else {
                rbind(&from.display().to_string(), &to)?;
            }
        } else if kind.is_char_device() || kind.is_block_device() {
            std::fs::File::create(&to)
                .map_err(|e| Error::io(format!("create {}", to.display()), e))?;
            rbind(&from.display().to_string(), &to)?;
        }
    }
    // The `/dev/core` link every other Linux sandbox has (bubblewrap,
    // runc); `/proc/kcore` itself is masked.
    if !fresh.join("core").exists() {
        symlink(Path::new("/proc/kcore"), &fresh.join("core"))?;
    }
    Ok(())
}

fn symlink(target: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at)
        .map_err(|e| Error::io(format!("link {}", at.display()), e))
}
