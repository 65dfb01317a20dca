//! Small file-system helpers shared by staging, capture and clean-up.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Removes `path` and everything under it, even directories staged without
/// a write bit (input trees may ask for mode 0555). Missing is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    corral_proto::scratch::remove_tree(path)
        .map_err(|e| Error::io(format!("removing {}", path.display()), e))
}

/// The device of `path`, for same-file-system checks.
pub fn device_of(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

/// Fails with a clear message unless every path is on one file system
/// (hardlinks cannot cross file systems).
pub fn check_same_filesystem(paths: &[&Path]) -> Result<()> {
    let Some(first) = paths.first() else {
        return Ok(());
    };
    let dev = device_of(first)?;
    for p in &paths[1..] {
        if device_of(p)? != dev {
            return Err(Error::Config(format!(
                "{} and {} are on different file systems; the local CAS must share a file system \
                 with the build directories so inputs can be hardlinked",
                first.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// Fails unless the user `owner` (the sandbox's host uid/gid) may traverse
/// every directory from `/` down to `dir`: the runner's container setup
/// reaches the staged trees and build directories as that user, and a
/// closed ancestor (say `/root`, mode 0700) makes actions fail with EACCES.
/// The error names the closed directory.
pub fn check_traversable(dir: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    if uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let dir =
        &fs::canonicalize(dir).map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
    for d in dir.ancestors() {
        let m = fs::metadata(d).map_err(|e| Error::io(format!("stat {}", d.display()), e))?;
        let bit = if m.uid() == uid {
            0o100
        } else if m.gid() == gid {
            0o010
        } else {
            0o001
        };
        if m.mode() & bit == 0 {
            return Err(Error::Config(format!(
                "the sandbox's user (uid {uid}) cannot reach {}: {} has mode {:o}; \
                 let every user traverse it (chmod o+x) or choose a data directory \
                 elsewhere (e.g. under /var/cache)",
                dir.display(),
                d.display(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Adds search permission for others to `dir` if it lacks it (the
/// worker's own directories: the sandbox's user must pass through them).
pub fn allow_traversal(dir: &Path) -> Result<()> {
    let m = fs::metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let mode = m.mode() & 0o7777;
    if mode & 0o001 == 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o001))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
    }
    Ok(())
}
