//! Removing unpacked layer trees. A layer may hold read-only directories
//! (their modes come from the tar), which `remove_dir_all` alone cannot
//! empty, so the owner is given write and search permission first.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Gives the owner write and search permission on every directory under
/// `path`, so that a tree unpacked with read-only directories can be removed.
pub(crate) fn make_writable_tree(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable_tree(&entry.path());
        }
    }
}

/// Removes an unpacked tree, whatever its directory modes.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    make_writable_tree(path);
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove layer directory", path)(e)),
    }
}
