//! The scratch directory of a run (the runner protocol's `scratch_dir`):
//! how whichever side owns it removes it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Removes `path` and everything under it, even directories left without
/// a write bit (an action, or an input tree, may make them 0555). Missing
/// is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    make_writable(path);
    fs::remove_dir_all(path)
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
    let mode = (meta.permissions().mode() & 0o7777) | 0o700;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_with_a_read_only_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        fs::create_dir_all(top.join("ro/deeper")).unwrap();
        fs::write(top.join("ro/deeper/f"), "x").unwrap();
        for dir in ["ro/deeper", "ro"] {
            fs::set_permissions(top.join(dir), fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&top).unwrap();
        assert!(!top.exists());
        remove_tree(&top).unwrap();
    }
}
