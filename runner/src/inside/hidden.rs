//! Host paths no action may see, even where its root binds the host's
//! directories (the host rootfs, Bazel's default): the worker's private
//! key and token, its data directory (every tenant's inputs), the
//! runner's configuration. File modes are not enough: an unprivileged
//! runner maps the sandbox's uid 0 onto its own user, who owns those
//! files. Each hidden path that lies in the new root is covered before the
//! root is made read-only: a directory by an empty tmpfs of mode 000, a
//! file by an empty file of mode 000.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::mounts::{remount_bind, tmpfs, under};
use crate::error::{Error, Result};

/// The empty file bound over hidden files; made on the new root's own
/// tmpfs and unlinked once bound, so nothing of it shows in `/`.
const COVER: &str = ".corral-hidden";

/// Covers each of `hidden` (paths inside) that exists beneath `new`.
pub(crate) fn cover(new: &Path, hidden: &[PathBuf]) -> Result<()> {
    let cover = new.join(COVER);
    let mut made = false;
    for inside in hidden {
        let at = under(new, inside);
        // Never follow a symlink: it could point anywhere in the new root.
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            continue;
        };
        if meta.is_dir() {
            tmpfs(
                &at,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                "mode=000,size=4k",
            )?;
        } else if meta.is_file() {
            if !made {
                std::fs::write(&cover, b"")
                    .and_then(|()| {
                        std::fs::set_permissions(&cover, std::fs::Permissions::from_mode(0o000))
                    })
                    .map_err(|e| Error::io(format!("make {}", cover.display()), e))?;
                made = true;
            }
            bind_file(&cover, &at)?;
        }
    }
    if made {
        std::fs::remove_file(&cover)
            .map_err(|e| Error::io(format!("remove {}", cover.display()), e))?;
    }
    Ok(())
}

/// Binds the file `source` over `target`, read-only.
fn bind_file(source: &Path, target: &Path) -> Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::sys(format!("cover {}", target.display()), e))?;
    remount_bind(target, true)
}
