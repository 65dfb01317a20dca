//! Small file-system helpers shared by staging, capture and clean-up.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Removes `path` and everything under it, even directories staged without
/// a write bit (input trees may ask for mode 0555). Missing is fine.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        Ok(m) if !m.is_dir() => {
            return fs::remove_file(path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))
        }
        Ok(_) => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_writable(path);
    fs::remove_dir_all(path).map_err(|e| Error::io(format!("removing {}", path.display()), e))
}

/// Gives the owner rwx on every directory under `path` (not following
/// symlinks), so that their entries can be removed.
fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        path,
        fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o700),
    );
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
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
