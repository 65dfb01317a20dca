//! What a spare's upper directory held when it was made: its twins, each
//! with its ctime, mode, owner and inode flags. After a call, a twin is as
//! made when it holds only its own twins, with its mode, owner and flags,
//! and no extended attribute but overlayfs's own: overlayfs records, on
//! the upper directories it looks up, the lower directory each stands for
//! (`overlay.origin`, `overlay.impure`, `overlay.uuid`), attributes no
//! process can reach through the overlay. Reading that costs a directory
//! read and two more system calls per twin; a twin whose ctime is
//! unchanged is as made without them (an entry added, removed or renamed,
//! a new mode, owner, flag or extended attribute: each sets its ctime,
//! which no caller can set back), unless that ctime is so recent that a
//! change during the run could carry the same one. The twins not as made
//! are made anew, and the scratch directory becomes the next call's spare.
//! On a Debian root that is 453 directories not removed and made again
//! per call, at 0.1–0.3 ms each on this machine's ext4.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::coarse_clock;
use crate::dir_owner::Twins;
use crate::error::{Error, Result};

/// One directory of the upper directory as made.
struct Made {
    /// Relative to the upper directory (empty for itself).
    rel: PathBuf,
    ctime: (i64, i64),
    /// Inode (a twin removed and made again by the run is another),
    /// mode (with the file type), owner and group.
    attributes: (u64, u32, u32, u32),
    /// Inode flags (`chattr`), where the file system has them.
    flags: Option<libc::c_long>,
}

impl Made {
    /// What `path` (`upper/rel`), whose metadata is `meta`, is now.
    fn now(rel: PathBuf, path: &Path, meta: &std::fs::Metadata) -> Made {
        let stat = Stat {
            ctime: (meta.ctime(), meta.ctime_nsec()),
            attributes: attributes(meta),
        };
        Made::with_flags(rel, stat, inode_flags(path))
    }

    /// The same, with its status and inode flags already read.
    fn with_flags(rel: PathBuf, stat: Stat, flags: Option<libc::c_long>) -> Made {
        Made {
            rel,
            ctime: stat.ctime,
            attributes: stat.attributes,
            flags,
        }
    }
}

/// What a check reads of a twin with one `statx`.
struct Stat {
    ctime: (i64, i64),
    /// As [`Made::attributes`].
    attributes: (u64, u32, u32, u32),
}

impl Stat {
    /// `rel`'s, looked up from the upper directory's descriptor `upper`,
    /// not following a symlink at `rel`; `None` if there is nothing
    /// there. (By path, `upper/` for the upper directory itself would
    /// follow a symlink put in its stead.)
    fn below(upper: &OwnedFd, rel: &Path) -> Option<Stat> {
        use nix::sys::stat::fstatat;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let st = fstatat(Some(upper.as_raw_fd()), rel, flags).ok()?;
        Some(Stat {
            ctime: (st.st_ctime, st.st_ctime_nsec),
            attributes: (st.st_ino, st.st_mode, st.st_uid, st.st_gid),
        })
    }
}

/// The upper directory's twins as made.
pub(super) struct Skeleton {
    /// The upper directory, then each twin, parents first.
    made: Vec<Made>,
    /// The names each directory holds: its twins.
    entries: HashMap<PathBuf, BTreeSet<OsString>>,
}

impl Skeleton {
    /// Reads `upper` and its `twins` as they are.
    pub(super) fn read(upper: &Path, twins: &Twins) -> Result<Skeleton> {
        let mut made = Vec::with_capacity(twins.len() + 1);
        let mut entries: HashMap<PathBuf, BTreeSet<OsString>> = HashMap::new();
        for rel in std::iter::once(Path::new("")).chain(twins.paths()) {
            let path = upper.join(rel);
            made.push(Made::now(rel.to_path_buf(), &path, &stat(&path)?));
            entries.entry(rel.to_path_buf()).or_default();
            if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
                entries
                    .entry(parent.to_path_buf())
                    .or_default()
                    .insert(name.to_os_string());
            }
        }
        Ok(Skeleton { made, entries })
    }

    /// The twins not as made after a run handed the directory at
    /// `handed`, each below none of the others; `None` when the upper
    /// directory itself is not. [`Skeleton::check`]'s answer, the
    /// skeleton kept (the tests ask it again and again).
    #[cfg(test)]
    pub(super) fn changed(&self, upper: &Path, handed: SystemTime) -> Option<Vec<PathBuf>> {
        self.look(upper, handed).map(|(changed, _)| changed)
    }

    /// The same check, keeping what it read of each twin, so that once
    /// the changed twins are made anew ([`Checked::settle`]) only they and
    /// their parents are read again: one `statx` per twin in all, not two.
    pub(super) fn check(self, upper: &Path, handed: SystemTime) -> Option<Checked> {
        let (changed, seen) = self.look(upper, handed)?;
        Some(Checked {
            changed,
            seen,
            skeleton: self,
        })
    }

    /// One pass over the twins: the changed ones, and what was seen of
    /// each.
    fn look(&self, upper: &Path, handed: SystemTime) -> Option<(Vec<PathBuf>, Vec<Seen>)> {
        // A ctime read within two ticks of the run could be the very time
        // a change during the run carries.
        let settled = coarse_clock::settled_before(handed);
        let upper_fd = open_directory(upper)?;
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut seen = Vec::with_capacity(self.made.len());
        for made in &self.made {
            if changed.iter().any(|top| made.rel.starts_with(top)) {
                seen.push(Seen::Remade);
                continue;
            }
            let now = self.as_made(upper, &upper_fd, made, settled);
            if let Seen::Remade = now {
                if made.rel.as_os_str().is_empty() {
                    return None;
                }
                changed.push(made.rel.clone());
            }
            seen.push(now);
        }
        Some((changed, seen))
    }

    /// What the directory `made` describes is now: as made (apart from
    /// overlayfs's own attributes) or to be made anew; ctimes before
    /// `settled` are trusted to show any change. `upper_fd` is `upper`.
    fn as_made(&self, upper: &Path, upper_fd: &OwnedFd, made: &Made, settled: SystemTime) -> Seen {
        let Some(stat) = Stat::below(upper_fd, &made.rel) else {
            return Seen::Remade;
        };
        let trusted = coarse_clock::stamped_before(made.ctime, settled);
        if stat.ctime == made.ctime && trusted {
            return Seen::Same;
        }
        let path = upper.join(&made.rel);
        let flags = inode_flags(&path);
        if stat.attributes != made.attributes || flags != made.flags {
            return Seen::Remade;
        }
        let Ok(listing) = std::fs::read_dir(&path) else {
            return Seen::Remade;
        };
        let names: std::io::Result<BTreeSet<OsString>> =
            listing.map(|e| e.map(|e| e.file_name())).collect();
        if names.ok().as_ref() != self.entries.get(&made.rel) {
            return Seen::Remade;
        }
        if !attribute_names(&path).is_some_and(|names| names.iter().all(|n| overlays_own(n))) {
            return Seen::Remade;
        }
        Seen::Now(Made::with_flags(made.rel.clone(), stat, flags))
    }
}

/// What a check saw of one twin.
enum Seen {
    /// Its ctime is the one read before: as it was.
    Same,
    /// As made, with a new ctime (overlayfs's own attributes, an entry
    /// made and removed): this.
    Now(Made),
    /// Not as made, or below one that is not: made anew, to be read again.
    Remade,
}

/// A skeleton checked after its run ([`Skeleton::check`]).
pub(super) struct Checked {
    /// The twins to make anew, each below none of the others.
    pub(super) changed: Vec<PathBuf>,
    seen: Vec<Seen>,
    skeleton: Skeleton,
}

impl Checked {
    /// The skeleton once the changed twins are made anew: what the check
    /// saw of the others, and the changed ones and their parents (whose
    /// entries were removed and made) read again.
    pub(super) fn settle(self, upper: &Path) -> Result<Skeleton> {
        let Checked {
            changed,
            seen,
            skeleton: Skeleton { made, entries },
        } = self;
        let parents: BTreeSet<&Path> = changed.iter().filter_map(|top| top.parent()).collect();
        let mut now = Vec::with_capacity(made.len());
        for (old, seen) in made.into_iter().zip(seen) {
            let read_again = parents.contains(old.rel.as_path());
            now.push(match seen {
                Seen::Same if !read_again => old,
                Seen::Now(made) if !read_again => made,
                _ => {
                    let path = upper.join(&old.rel);
                    Made::now(old.rel, &path, &stat(&path)?)
                }
            });
        }
        Ok(Skeleton { made: now, entries })
    }
}

/// A descriptor of the directory `path` to look up names from (`O_PATH`:
/// it reads nothing), not following a symlink; `None` if it is not one.
fn open_directory(path: &Path) -> Option<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = open(path, flags, nix::sys::stat::Mode::empty()).ok()?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The metadata of `path`, not following a symlink.
fn stat(path: &Path) -> Result<std::fs::Metadata> {
    std::fs::symlink_metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

nix::ioctl_read!(get_inode_flags, b'f', 1, libc::c_long);

/// The inode flags of the directory `path` (`FS_IOC_GETFLAGS`, what
/// `lsattr` shows), not following a symlink; `None` where the file system
/// has none or the directory cannot be opened.
fn inode_flags(path: &Path) -> Option<libc::c_long> {
    use nix::fcntl::{open, OFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = open(path, flags, nix::sys::stat::Mode::empty()).ok()?;
    // SAFETY: `fd` is a descriptor this function owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut value: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one value of the type `value` has
    // to the pointer, which is valid and writable for the call.
    unsafe { get_inode_flags(fd.as_raw_fd(), &mut value) }.ok()?;
    Some(value)
}

/// What a twin's check compares besides its entries, flags and
/// extended attributes.
fn attributes(meta: &std::fs::Metadata) -> (u64, u32, u32, u32) {
    (meta.ino(), meta.mode(), meta.uid(), meta.gid())
}

/// Whether an extended attribute is one overlayfs records by itself on an
/// upper directory it looks up (in the trusted namespace, or the user
/// namespace when mounted in a user namespace), which no process reaches
/// through the overlay. Not the others: `opaque` (a directory removed and
/// made again through the overlay, hiding the lower one), `redirect` and
/// the like change what the next run would see.
fn overlays_own(name: &[u8]) -> bool {
    let Some(key) = name
        .strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))
    else {
        return false;
    };
    matches!(key, b"origin" | b"impure" | b"uuid")
}

/// The names of the extended attributes of `path` (not following a
/// symlink); `None` if they cannot be listed.
fn attribute_names(path: &Path) -> Option<Vec<Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c_path` is NUL-terminated and `buf` is writable for its
    // length; both outlive the call, which writes at most that length.
    let n = unsafe { libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(
        buf.split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::dir_owner::Twins;

    /// Sets the extended attribute `name` of `path` to "y".
    fn set_attribute(path: &Path, name: &std::ffi::CStr) -> std::io::Result<()> {
        let path = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path and name and a 1-byte value, all
        // alive across the call.
        let r =
            unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), c"y".as_ptr().cast(), 1, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    nix::ioctl_write_ptr!(set_inode_flags, b'f', 2, libc::c_long);

    /// A root of a few directories, their twins made in `upper`.
    fn twinned(tmp: &Path, upper: &Path) -> Twins {
        let dirs = ["etc/deep", "usr/lib", "var", "srv"];
        crate::dir_owner::twinned_for_me(tmp, &dirs, upper).0
    }

    #[test]
    fn every_kind_of_change_to_a_twin_is_found_however_soon_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        // Handed out long after the read (ctimes trusted), and at once
        // (every twin read whole).
        for (i, after) in [Duration::from_secs(1), Duration::ZERO]
            .into_iter()
            .enumerate()
        {
            let upper = tmp.path().join(format!("upper-{i}"));
            let twins = twinned(tmp.path(), &upper);
            let skeleton = Skeleton::read(&upper, &twins).unwrap();
            let handed = SystemTime::now() + after;
            assert_eq!(skeleton.changed(&upper, handed), Some(vec![]), "{after:?}");

            // A file in a twin below one whose mode changed (only the
            // topmost is named), a new mode, an extended attribute a run
            // can set through the overlay, an inode flag.
            std::fs::write(upper.join("etc/deep/f"), "x").unwrap();
            let mode = |m| std::fs::Permissions::from_mode(m);
            std::fs::set_permissions(upper.join("etc"), mode(0o750)).unwrap();
            std::fs::set_permissions(upper.join("usr/lib"), mode(0o700)).unwrap();
            set_attribute(&upper.join("var"), c"user.corral.test").unwrap();
            let srv = std::fs::File::open(upper.join("srv")).unwrap();
            let noatime: libc::c_long = 0x80;
            // SAFETY: FS_IOC_SETFLAGS reads one value of the pointer's
            // type, alive across the call, on a descriptor owned here.
            unsafe { set_inode_flags(srv.as_raw_fd(), &noatime) }.unwrap();
            let changed = skeleton.changed(&upper, handed).unwrap();
            let names: Vec<&str> = changed.iter().map(|p| p.to_str().unwrap()).collect();
            assert_eq!(names, ["etc", "srv", "usr/lib", "var"], "{after:?}");

            // A new entry at the top: the whole directory must go.
            std::fs::create_dir(upper.join("new")).unwrap();
            assert_eq!(skeleton.changed(&upper, handed), None, "{after:?}");
        }
    }

    /// Twins are looked up from the upper directory's descriptor: one
    /// replaced by a symlink to a copy of itself is not followed, and the
    /// twins below it are not read through the link.
    #[test]
    fn a_twin_replaced_by_a_symlink_is_made_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let twins = twinned(tmp.path(), &upper);
        let skeleton = Skeleton::read(&upper, &twins).unwrap();
        let copy = tmp.path().join("copy");
        std::fs::rename(upper.join("etc"), &copy).unwrap();
        std::os::unix::fs::symlink(&copy, upper.join("etc")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(1);
        assert_eq!(
            skeleton.changed(&upper, later),
            Some(vec![PathBuf::from("etc")])
        );
        // The upper directory itself a symlink: nothing of it is kept.
        std::fs::rename(&upper, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("moved"), &upper).unwrap();
        assert_eq!(skeleton.changed(&upper, later), None);
    }

    #[test]
    fn what_overlayfs_records_on_a_twin_leaves_it_as_made() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let twins = twinned(tmp.path(), &upper);
        let skeleton = Skeleton::read(&upper, &twins).unwrap();
        let handed = SystemTime::now();
        // As root (CI) the trusted namespace is there to write in.
        if set_attribute(&upper.join("usr"), c"trusted.overlay.origin").is_ok() {
            set_attribute(&upper, c"trusted.overlay.impure").unwrap();
            assert_eq!(skeleton.changed(&upper, handed), Some(vec![]));
        }
        set_attribute(&upper.join("var"), c"user.overlay.origin").unwrap();
        assert_eq!(skeleton.changed(&upper, handed), Some(vec![]));
        // A file in it, though, is a change, however it is hidden.
        std::fs::write(upper.join("usr/.f"), "").unwrap();
        let changed = skeleton.changed(&upper, handed).unwrap();
        assert_eq!(changed, [PathBuf::from("usr")]);
        // So is an opaque twin, which would hide the lower directory from
        // the next run: marked so, or removed and made again through the
        // overlay (which marks the new one), with the same mode and owner.
        set_attribute(&upper.join("srv"), c"user.overlay.opaque").unwrap();
        let meta = std::fs::metadata(upper.join("etc/deep")).unwrap();
        std::fs::remove_dir(upper.join("etc/deep")).unwrap();
        std::fs::create_dir(upper.join("etc/deep")).unwrap();
        std::fs::set_permissions(upper.join("etc/deep"), meta.permissions()).unwrap();
        set_attribute(&upper.join("etc/deep"), c"user.overlay.opaque").unwrap();
        let changed = skeleton.changed(&upper, handed).unwrap();
        let names: Vec<&str> = changed.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(names, ["etc/deep", "srv", "usr"]);
    }

    #[test]
    fn read_again_a_skeleton_trusts_the_new_ctimes_of_what_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let twins = twinned(tmp.path(), &upper);
        let skeleton = Skeleton::read(&upper, &twins).unwrap();
        let later = || SystemTime::now() + Duration::from_secs(1);
        // A file made and removed: the twin is as made, with a new ctime.
        std::fs::write(upper.join("usr/lib/f"), "").unwrap();
        std::fs::remove_file(upper.join("usr/lib/f")).unwrap();
        let checked = skeleton.check(&upper, later()).unwrap();
        assert!(checked.changed.is_empty());
        let skeleton = checked.settle(&upper).unwrap();
        let lib = skeleton
            .made
            .iter()
            .find(|m| m.rel == Path::new("usr/lib"))
            .unwrap();
        let meta = std::fs::metadata(upper.join("usr/lib")).unwrap();
        assert_eq!(lib.ctime, (meta.ctime(), meta.ctime_nsec()));
        assert_eq!(skeleton.changed(&upper, later()), Some(vec![]));
        std::fs::write(upper.join("usr/lib/g"), "").unwrap();
        assert_eq!(
            skeleton.changed(&upper, later()),
            Some(vec![PathBuf::from("usr/lib")])
        );
    }

    /// A twin made anew after its run, and its parent (whose entry was
    /// removed and made): read again, so the next check trusts them; the
    /// rest keep what the check saw.
    #[test]
    fn settled_after_a_twin_is_made_anew_its_parent_and_it_are_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let twins = twinned(tmp.path(), &upper);
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let skeleton = Skeleton::read(&upper, &twins).unwrap();
        let later = || SystemTime::now() + Duration::from_secs(1);
        std::fs::write(upper.join("usr/lib/f"), "").unwrap();
        let checked = skeleton.check(&upper, later()).unwrap();
        assert_eq!(checked.changed, [PathBuf::from("usr/lib")]);
        corral_proto::scratch::remove_tree(&upper.join("usr/lib")).unwrap();
        twins.make_below(&upper, me, Path::new("usr/lib")).unwrap();
        let skeleton = checked.settle(&upper).unwrap();
        for rel in ["usr", "usr/lib", "etc/deep"] {
            let made = skeleton
                .made
                .iter()
                .find(|m| m.rel == Path::new(rel))
                .unwrap();
            let meta = std::fs::metadata(upper.join(rel)).unwrap();
            assert_eq!(made.ctime, (meta.ctime(), meta.ctime_nsec()), "{rel}");
            assert_eq!(made.attributes, attributes(&meta), "{rel}");
        }
        assert_eq!(skeleton.changed(&upper, later()), Some(vec![]));
    }
}
