//! Executable copies of blobs.
//!
//! Every link of a blob in the local CAS is the same inode, mode 0444.
//! An input file marked executable must be 0555, and changing the mode of
//! a shared inode would change it for every build directory and for the
//! CAS itself. So executable inputs are linked from a separate copy kept
//! here (`exec/<function>-<hash>-<size>`, mode 0555), made once from the
//! plain blob and bounded by its own least-recently-used budget. The
//! directory is emptied at start-up: a copy is cheap to make again from
//! the plain blob.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use corral_cas::Digest;

use crate::error::{Error, Result};
use crate::lru::Lru;

/// The bounded store of executable copies.
pub struct ExecVariants {
    root: PathBuf,
    max_bytes: u64,
    index: Mutex<Lru<Digest>>,
}

impl ExecVariants {
    /// Opens (emptying) the store at `root`. Blocking.
    pub fn open(root: PathBuf, max_bytes: u64) -> Result<Self> {
        if root.exists() {
            fs::remove_dir_all(&root)
                .map_err(|e| Error::io(format!("clearing {}", root.display()), e))?;
        }
        fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        Ok(ExecVariants {
            root,
            max_bytes,
            index: Mutex::new(Lru::default()),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Lru<Digest>> {
        // The index is updated in single statements; a poisoned lock still
        // guards a consistent index.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the executable copy of `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(format!(
            "{}-{}-{}",
            digest.function(),
            digest.hash_hex(),
            digest.size()
        ))
    }

    /// The executable copy of `digest`, made from `plain` (the read-only
    /// blob file) if it is not there yet. Blocking.
    pub fn get_or_make(&self, digest: &Digest, plain: &Path) -> Result<PathBuf> {
        let path = self.path(digest);
        if self.index().touch(digest) && path.exists() {
            return Ok(path);
        }
        let tmp = self.root.join(format!(".tmp-{:016x}", fastrand::u64(..)));
        let made = (|| {
            fs::copy(plain, &tmp).map_err(|e| {
                let context = format!("copying {} to {}", plain.display(), tmp.display());
                if e.kind() == std::io::ErrorKind::NotFound {
                    return Error::MissingBlob(digest.to_string());
                }
                Error::io(context, e)
            })?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o555))
                .map_err(|e| Error::io(format!("chmod {}", tmp.display()), e))?;
            fs::rename(&tmp, &path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", tmp.display(), path.display()),
                    e,
                )
            })
        })();
        if made.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        made?;
        let victims = {
            let mut index = self.index();
            index.insert(*digest, digest.size());
            index.evict(self.max_bytes, |d| d == digest)
        };
        for v in victims {
            let _ = fs::remove_file(self.path(&v));
        }
        Ok(path)
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn total_bytes(&self) -> u64 {
        self.index().total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_cas::DigestFunction;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_are_separate_inodes_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o444)).unwrap();
        let d = Digest::of_bytes(DigestFunction::Sha256, b"#!/bin/sh\n");
        let store = ExecVariants::open(dir.path().join("exec"), 15).unwrap();
        let exec = store.get_or_make(&d, &plain).unwrap();
        let (pm, em) = (fs::metadata(&plain).unwrap(), fs::metadata(&exec).unwrap());
        assert_ne!(pm.ino(), em.ino());
        assert_eq!(pm.mode() & 0o777, 0o444, "the plain blob was chmod'ed");
        assert_eq!(em.mode() & 0o777, 0o555);
        assert_eq!(fs::read(&exec).unwrap(), b"#!/bin/sh\n");
        // A second blob pushes the first out of the 15-byte budget.
        let plain2 = dir.path().join("plain2");
        fs::write(&plain2, b"echo hi\n").unwrap();
        let d2 = Digest::of_bytes(DigestFunction::Sha256, b"echo hi\n");
        store.get_or_make(&d2, &plain2).unwrap();
        assert!(!exec.exists());
        assert_eq!(store.total_bytes(), 8);
    }
}
