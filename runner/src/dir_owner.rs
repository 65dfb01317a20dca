//! `runner exec --root DIR` (and `--input DIR`) shows DIR's directories
//! owned by the action's user, as a farm shows a staged input root.
//!
//! The sandbox's user namespace maps one host user, the sandbox's (uid
//! 65534 for a runner started as root, the caller's own uid otherwise), to
//! the action's user. A worker stages every input directory owned by that
//! user (`StagerOptions::owner`), so on the farm the action may create
//! files anywhere in its input root, through the overlay. A directory
//! given to `runner exec` keeps its owner on disk; a root-owned busybox
//! root, run as root, then belongs to nobody inside the sandbox (host uid
//! 0 is not mapped) and `echo x > /etc/f` fails with EACCES where the farm
//! succeeds.
//!
//! DIR is never changed. Instead, every directory of DIR owned by someone
//! else gets an empty twin in the overlay's upper directory, with DIR's
//! mode and the sandbox user as owner (its parents too, which the twin
//! needs). overlayfs takes a merged directory's owner and mode from its
//! upper twin and lists the lower one's entries through it, so the action
//! sees DIR's content in directories it owns, as on the farm. Files keep
//! their owners, as a farm's hardlinked inputs keep theirs.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The twins a directory needs: the directories (relative paths, parents
/// first) that get an empty twin owned by the sandbox's user, and the mode
/// each takes from the input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Twins(Vec<(PathBuf, u32)>);

impl Twins {
    /// The twins of `input`'s directories for `owner` (host uid, gid):
    /// those it does not own, and their parents, which a twin needs.
    pub(crate) fn of(input: &Path, owner: (u32, u32)) -> Result<Twins> {
        let Directories { foreign, modes } = directories(input, owner)?;
        // Every twin's parents are twins too: the set holds them, in order.
        let mut wanted = BTreeSet::new();
        for rel in &foreign {
            for ancestor in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                wanted.insert(ancestor.to_path_buf());
            }
        }
        // Every ancestor of a directory found was walked through.
        let twins = wanted
            .into_iter()
            .map(|rel| match modes.get(&rel) {
                Some(mode) => Ok((rel, *mode)),
                None => Err(Error::InvalidRequest(format!(
                    "{} was not walked as a directory of {}",
                    rel.display(),
                    input.display()
                ))),
            })
            .collect::<Result<_>>()?;
        Ok(Twins(twins))
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// A name for this set of twins of `input`: two inputs with the same
    /// name need the same twins.
    pub(crate) fn key(&self, input: &Path, owner: (u32, u32)) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        (input, owner, self).hash(&mut hasher);
        hasher.finish()
    }

    /// Makes them in `upper` (made if missing), owned by `owner`.
    pub(crate) fn make(&self, upper: &Path, owner: (u32, u32)) -> Result<()> {
        fs::create_dir_all(upper)
            .map_err(|e| Error::io(format!("create {}", upper.display()), e))?;
        for (rel, mode) in &self.0 {
            let twin = upper.join(rel);
            fs::create_dir(&twin)
                .map_err(|e| Error::io(format!("create {}", twin.display()), e))?;
            chown(&twin, owner)?;
            fs::set_permissions(&twin, fs::Permissions::from_mode(*mode))
                .map_err(|e| Error::io(format!("chmod {}", twin.display()), e))?;
        }
        Ok(())
    }
}

/// Makes the twins in `upper` of the directories of `input` that `owner`
/// (host uid, gid) does not own; returns how many were made. Directories
/// on another file system (mounted below `input`) are left out, as
/// overlayfs shows none of them.
pub(crate) fn give_directories(input: &Path, upper: &Path, owner: (u32, u32)) -> Result<usize> {
    let twins = Twins::of(input, owner)?;
    twins.make(upper, owner)?;
    Ok(twins.len())
}

/// What a walk of an input's directories found.
struct Directories {
    /// Those (relative paths) the owner does not own.
    foreign: Vec<PathBuf>,
    /// The mode (permission bits) of every directory walked, so that a
    /// twin's is not looked up a second time.
    modes: HashMap<PathBuf, u32>,
}

/// The directories below `root` on `root`'s file system, and which of
/// them `owner` does not own. Symlinks are not followed.
fn directories(root: &Path, (uid, gid): (u32, u32)) -> Result<Directories> {
    let stat_err = |p: &Path, e| Error::io(format!("stat {}", p.display()), e);
    let read_err = |p: &Path, e| Error::io(format!("reading {}", p.display()), e);
    let device = fs::metadata(root).map_err(|e| stat_err(root, e))?.dev();
    let mut found = Vec::new();
    let mut modes = HashMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let dir = root.join(&rel);
        let entries = fs::read_dir(&dir).map_err(|e| read_err(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| read_err(&dir, e))?;
            // The directory entry's own type (no system call where the file
            // system records it, as ext4 and xfs do): a root's files far
            // outnumber its directories, and only directories are looked at.
            let kind = entry.file_type().map_err(|e| stat_err(&entry.path(), e))?;
            if !kind.is_dir() {
                continue;
            }
            let meta =
                fs::symlink_metadata(entry.path()).map_err(|e| stat_err(&entry.path(), e))?;
            if !meta.is_dir() || meta.dev() != device {
                continue;
            }
            let child = rel.join(entry.file_name());
            if (meta.uid(), meta.gid()) != (uid, gid) {
                found.push(child.clone());
            }
            modes.insert(child.clone(), meta.mode() & 0o7777);
            pending.push(child);
        }
    }
    Ok(Directories {
        foreign: found,
        modes,
    })
}

fn chown(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if (uid, gid) == me {
        return Ok(());
    }
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
        .map_err(|e| Error::sys(format!("chown {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_directories_get_owned_twins_and_files_stay() {
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        // A made-up owner: every directory of the input is foreign to it.
        let owner = (me.0.wrapping_add(1), me.1.wrapping_add(1));
        let tmp = std::env::temp_dir().join(format!("corral-dir-owner-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let input = tmp.join("root");
        fs::create_dir_all(input.join("etc/deep")).unwrap();
        fs::create_dir_all(input.join("tmp")).unwrap();
        for (dir, mode) in [("etc", 0o750), ("etc/deep", 0o755), ("tmp", 0o1777)] {
            fs::set_permissions(input.join(dir), fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::write(input.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink("/etc", input.join("link")).unwrap();
        let upper = tmp.join("upper");
        if !nix::unistd::geteuid().is_root() {
            // Without root the twins cannot be given away; the walk
            // still finds what needs them.
            let found = directories(&input, owner).unwrap().foreign;
            assert_eq!(found.len(), 3);
            fs::remove_dir_all(&tmp).unwrap();
            return;
        }
        assert_eq!(give_directories(&input, &upper, owner).unwrap(), 3);
        for (dir, mode) in [("etc", 0o750), ("etc/deep", 0o755), ("tmp", 0o1777)] {
            let meta = fs::symlink_metadata(upper.join(dir)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), owner, "{dir}");
            assert_eq!(meta.mode() & 0o7777, mode, "{dir}");
        }
        assert!(!upper.join("etc/passwd").exists(), "files are not copied");
        assert!(!upper.join("link").exists(), "symlinks are not followed");

        // Directories the owner already owns need no twin.
        let again = tmp.join("upper-mine");
        assert_eq!(give_directories(&input, &again, me).unwrap(), 0);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
