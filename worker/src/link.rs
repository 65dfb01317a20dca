//! Hardlinking cached blobs into a tree being staged, with a copy when an
//! inode is out of links.
//!
//! Every staged occurrence of a blob is a link of one local-CAS inode, and
//! a file system allows only so many links per inode (65,000 on ext4;
//! linking more fails with EMLINK). The empty file alone can occur that
//! often in one real tree, and the trees staged at once add up. So when a
//! link of a cache file fails with EMLINK, the [`Linker`] copies the blob
//! once and links that copy for the following occurrences of the same
//! (digest, executable) in this staging, making another copy whenever the
//! current one is full in turn. It remembers that the cache file is full,
//! so that the other occurrences do not each try it and fail again.
//!
//! A copy looks like the cache file it stands in for: mode 0444 (0555 for
//! an executable), owned by the worker. Like every staged file it is only
//! ever the read-only lower layer of an overlay, and it is not a cached
//! inode, so nothing an action does reaches the local CAS through it.
//! Copies are made in a directory beside the tree, which goes when the
//! [`Linker`] does; from then on the tree's own links hold the copies, so
//! they are removed with the tree like everything else in it.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral_cas::Digest;

use crate::error::{Error, Result};

/// What a file is staged from: its digest and whether it is executable.
pub type Key = (Digest, bool);

/// Places files in one tree being staged. Blocking.
pub struct Linker {
    /// The local-CAS file (the executable variant for executables) of
    /// every file in the tree.
    sources: HashMap<Key, PathBuf>,
    /// Where copies are made; created on the first EMLINK.
    spare_dir: PathBuf,
    /// Blobs whose cache file is out of links, with the copy linked now.
    spares: HashMap<Key, PathBuf>,
    /// Copies made so far.
    copies: u64,
}

impl Linker {
    /// A linker for `sources`, making any copies under `spare_dir` (which
    /// must not exist, and must be on the file system of the tree).
    pub fn new(sources: HashMap<Key, PathBuf>, spare_dir: PathBuf) -> Self {
        Linker {
            sources,
            spare_dir,
            spares: HashMap::new(),
            copies: 0,
        }
    }

    /// The local-CAS file of `key`, to copy from.
    pub fn source(&self, key: &Key) -> Result<&Path> {
        self.sources
            .get(key)
            .map(PathBuf::as_path)
            .ok_or_else(|| Error::Internal(format!("no source for {}", key.0)))
    }

    /// Copies made because a cache file (or an earlier copy) was full.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Makes `dest` a link of the blob `key`: of its cache file while that
    /// takes links, else of a copy. A cache file gone since it was looked
    /// up (evicted) is [`Error::MissingBlob`], so the caller fetches again.
    pub fn link(&mut self, key: &Key, dest: &Path) -> Result<()> {
        let cache = self.source(key)?.to_path_buf();
        let from = self.spares.get(key).unwrap_or(&cache);
        match fs::hard_link(from, dest) {
            Ok(()) => return Ok(()),
            Err(e) if !is_out_of_links(&e) => return Err(failed("linking", from, dest, key, e)),
            Err(_) => {}
        }
        let spare = self.copy(key, &cache)?;
        fs::hard_link(&spare, dest).map_err(|e| failed("linking", &spare, dest, key, e))?;
        self.spares.insert(*key, spare);
        Ok(())
    }

    /// A new copy of `cache` in the spare directory, with the cache file's
    /// read-only mode and owner.
    fn copy(&mut self, key: &Key, cache: &Path) -> Result<PathBuf> {
        let (digest, executable) = key;
        if self.copies == 0 {
            fs::create_dir(&self.spare_dir)
                .map_err(|e| Error::io(format!("creating {}", self.spare_dir.display()), e))?;
        }
        self.copies += 1;
        let spare = self.spare_dir.join(format!(
            "{}-{}{}.{}",
            digest.hash_hex(),
            digest.size(),
            if *executable { "-x" } else { "" },
            self.copies
        ));
        fs::copy(cache, &spare).map_err(|e| failed("copying", cache, &spare, key, e))?;
        let mode = if *executable { 0o555 } else { 0o444 };
        fs::set_permissions(&spare, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", spare.display()), e))?;
        tracing::debug!(blob = %digest, copy = %spare.display(), "out of links: linking a copy");
        Ok(spare)
    }
}

impl Drop for Linker {
    /// Removes the spare directory; the copies live on through their links
    /// in the tree (or go with it if staging failed).
    fn drop(&mut self) {
        if self.copies == 0 {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.spare_dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(
                    dir = %self.spare_dir.display(),
                    error = %e,
                    "could not remove the spare copies of a staging"
                );
            }
        }
    }
}

/// Whether a link failed because the inode has as many links as the file
/// system allows.
fn is_out_of_links(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EMLINK)
}

/// The error of `doing` `from` to `to`. A missing `from` means the blob
/// was evicted from the local CAS meanwhile.
fn failed(doing: &str, from: &Path, to: &Path, key: &Key, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::MissingBlob(key.0.to_string())
    } else {
        Error::io(format!("{doing} {} to {}", from.display(), to.display()), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_cas::DigestFunction;
    use std::os::unix::fs::MetadataExt;

    // Running out of links needs a real file system at its limit: see
    // `more_repeats_of_a_blob_than_an_inode_takes_links` in tests/staging.rs.

    #[test]
    fn links_the_cache_file_and_makes_no_copy_while_it_takes_links() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, b"x").unwrap();
        let key = (Digest::of_bytes(DigestFunction::Sha256, b"x"), false);
        let spares = dir.path().join("spares");
        let mut linker = Linker::new(HashMap::from([(key, blob.clone())]), spares.clone());
        linker.link(&key, &dir.path().join("a")).unwrap();
        linker.link(&key, &dir.path().join("b")).unwrap();
        assert_eq!(fs::metadata(&blob).unwrap().nlink(), 3);
        assert_eq!(linker.copies(), 0);
        drop(linker);
        assert!(!spares.exists());
    }

    #[test]
    fn an_evicted_cache_file_is_a_missing_blob() {
        let dir = tempfile::tempdir().unwrap();
        let key = (Digest::of_bytes(DigestFunction::Sha256, b"gone"), true);
        let sources = HashMap::from([(key, dir.path().join("evicted"))]);
        let mut linker = Linker::new(sources, dir.path().join("spares"));
        let e = linker.link(&key, &dir.path().join("a")).unwrap_err();
        assert!(matches!(e, Error::MissingBlob(_)), "{e}");
        let other = (key.0, false);
        let e = linker.link(&other, &dir.path().join("b")).unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "{e}");
    }
}
