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
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::coarse_clock;
use crate::error::{Error, Result};

/// The twins a directory needs: the directories (relative paths, parents
/// first) that get an empty twin owned by the sandbox's user, and the mode
/// each takes from the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Twins {
    /// Shared: the exec service hands the same twins to call after call.
    dirs: Arc<[(PathBuf, u32)]>,
    /// A hash of `dirs`, taken once: a call's spare is found by it, and
    /// hashing a Debian root's 453 paths on every call cost 0.07 ms.
    hash: u64,
}

impl Hash for Twins {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

impl Twins {
    /// The twins of `input`'s directories for `owner` (host uid, gid):
    /// those it does not own, and their parents, which a twin needs.
    pub(crate) fn of(input: &Path, owner: (u32, u32)) -> Result<Twins> {
        Ok(Twins::walked(input, owner)?.0)
    }

    /// [`Twins::of`], and what the walk saw of `input`'s directories, if
    /// it may be trusted later ([`Stamps`]).
    pub(crate) fn walked(input: &Path, owner: (u32, u32)) -> Result<(Twins, Option<Stamps>)> {
        let walk_began = SystemTime::now();
        let Directories {
            foreign,
            modes,
            seen,
        } = directories(input, owner)?;
        // Every twin's parents are twins too: the set holds them, in order.
        let mut wanted = BTreeSet::new();
        for rel in &foreign {
            for ancestor in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
                wanted.insert(ancestor.to_path_buf());
            }
        }
        // Every ancestor of a directory found was walked through.
        let dirs: Arc<[(PathBuf, u32)]> = wanted
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
        let stamps = Stamps { seen };
        let settled = stamps.settled_before(walk_began);
        let mut hasher = std::hash::DefaultHasher::new();
        dirs.hash(&mut hasher);
        let twins = Twins {
            dirs,
            hash: hasher.finish(),
        };
        Ok((twins, settled.then_some(stamps)))
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.dirs.len()
    }

    /// A name for this set of twins of `input`: two inputs with the same
    /// name need the same twins.
    pub(crate) fn key(&self, input: &Path, owner: (u32, u32)) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        (input, owner, self).hash(&mut hasher);
        hasher.finish()
    }

    /// The mode the twin of `rel` takes, if it has one.
    #[cfg(test)]
    pub(crate) fn mode_of(&self, rel: &Path) -> Option<u32> {
        self.dirs
            .iter()
            .find(|(r, _)| r == rel)
            .map(|(_, mode)| *mode)
    }

    /// Their paths, relative to the upper directory, parents first.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(rel, _)| rel.as_path())
    }

    /// Makes them in `upper` (made if missing, and `owner`'s too, as the
    /// runner makes an upper directory), owned by `owner`.
    pub(crate) fn make(&self, upper: &Path, owner: (u32, u32)) -> Result<()> {
        fs::create_dir_all(upper)
            .map_err(|e| Error::io(format!("create {}", upper.display()), e))?;
        chown(upper, owner)?;
        self.make_below(upper, owner, Path::new(""))
    }

    /// Makes, in `upper`, those that are `top` or below it (all of them
    /// for an empty `top`).
    pub(crate) fn make_below(&self, upper: &Path, owner: (u32, u32), top: &Path) -> Result<()> {
        let umask = umask();
        // Directories made in a set-group-ID directory inherit the bit.
        let mut setgid = std::collections::HashSet::new();
        for (rel, mode) in self.dirs.iter() {
            if *mode & 0o2000 != 0 {
                setgid.insert(rel.as_path());
            }
            if !rel.starts_with(top) {
                continue;
            }
            let twin = upper.join(rel);
            fs::DirBuilder::new()
                .mode(*mode & 0o777)
                .create(&twin)
                .map_err(|e| Error::io(format!("create {}", twin.display()), e))?;
            chown(&twin, owner)?;
            // `mkdir` already gave it its mode unless the umask took bits
            // away or the mode has special bits (a chmod each is 453
            // system calls on a Debian root, on every call's spare).
            let inherits = rel.parent().is_some_and(|p| setgid.contains(p));
            if *mode & umask == 0 && *mode & 0o7000 == 0 && !inherits {
                continue;
            }
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
    /// The root and every directory looked at, as seen.
    seen: Vec<(PathBuf, Seen)>,
}

/// What a walk saw of one directory. Any change that could change the
/// walk's answer changes one of these: an entry added, removed or renamed
/// changes its directory's mtime and ctime, a new owner or mode its
/// ctime (which no caller can set), a mount or unmount its device and
/// inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Seen {
    fn of(meta: &fs::Metadata) -> Seen {
        Seen {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// How long before a walk its directories must have last changed for the
/// walk's view to be kept: a change in the same clock tick as the walk
/// (or, on a file system with coarse times, the same second) could leave
/// the times it saw unchanged.
const SETTLE: Duration = Duration::from_secs(2);

/// What a walk of an input saw of its directories. While every one of
/// them still looks the same ([`Stamps::still_hold`]), a new walk would
/// find the same twins: the exec service keeps them instead of walking a
/// root of hundreds of directories before every call.
#[derive(Debug, Clone)]
pub(crate) struct Stamps {
    seen: Vec<(PathBuf, Seen)>,
}

impl Stamps {
    /// Whether every directory had last changed [`SETTLE`] before
    /// `walk_began`.
    fn settled_before(&self, walk_began: SystemTime) -> bool {
        let cut = walk_began.checked_sub(SETTLE).unwrap_or(UNIX_EPOCH);
        self.seen.iter().all(|(_, seen)| {
            coarse_clock::stamped_before(seen.mtime, cut)
                && coarse_clock::stamped_before(seen.ctime, cut)
        })
    }

    /// The directories the walk looked at, relative to the input (the
    /// input itself first, as an empty path).
    pub(crate) fn directories(&self) -> impl Iterator<Item = &Path> {
        self.seen.iter().map(|(rel, _)| rel.as_path())
    }

    /// Whether `input` itself is still the directory the walk began at
    /// (one `statx`): a directory moved there since is another.
    pub(crate) fn input_holds(&self, input: &Path) -> bool {
        self.seen
            .first()
            .is_some_and(|(_, seen)| fs::metadata(input).is_ok_and(|m| Seen::of(&m) == *seen))
    }

    /// Whether `input`'s directories still look as the walk saw them (one
    /// `statx` each, no directory read).
    pub(crate) fn still_hold(&self, input: &Path) -> bool {
        self.input_holds(input)
            && self.seen.iter().skip(1).all(|(rel, seen)| {
                fs::symlink_metadata(input.join(rel)).is_ok_and(|m| Seen::of(&m) == *seen)
            })
    }
}

/// The directories below `root` on `root`'s file system, and which of
/// them `owner` does not own. Symlinks are not followed.
fn directories(root: &Path, (uid, gid): (u32, u32)) -> Result<Directories> {
    let stat_err = |p: &Path, e| Error::io(format!("stat {}", p.display()), e);
    let read_err = |p: &Path, e| Error::io(format!("reading {}", p.display()), e);
    let top = fs::metadata(root).map_err(|e| stat_err(root, e))?;
    let device = top.dev();
    let mut seen = vec![(PathBuf::new(), Seen::of(&top))];
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
            let child = rel.join(entry.file_name());
            // A mount point too: unmounted, it would show what it hides.
            seen.push((child.clone(), Seen::of(&meta)));
            if !meta.is_dir() || meta.dev() != device {
                continue;
            }
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
        seen,
    })
}

/// This process's umask, from `/proc/self/status` (reading it with
/// `umask(2)` would change it for a moment under other threads); all bits
/// when it cannot be read, so that every twin is given its mode.
fn umask() -> u32 {
    crate::exec::own_status("Umask")
        .ok()
        .and_then(|mask| u32::from_str_radix(&mask, 8).ok())
        .unwrap_or(0o777)
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

/// For tests: a root of `dirs` made in `tmp/root`, and its twins made in
/// `upper`, owned by this process (a made-up owner one above it has every
/// directory twinned); the twins, and this process's uid and gid.
#[cfg(test)]
pub(crate) fn twinned_for_me(tmp: &Path, dirs: &[&str], upper: &Path) -> (Twins, (u32, u32)) {
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let root = tmp.join("root");
    for dir in dirs {
        fs::create_dir_all(root.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
    let owner = (me.0.wrapping_add(1), me.1.wrapping_add(1));
    let twins = Twins::of(&root, owner).unwrap_or_else(|e| panic!("twins: {e}"));
    twins
        .make(upper, me)
        .unwrap_or_else(|e| panic!("make twins: {e}"));
    (twins, me)
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
        // Modes mkdir alone gives, one a umask would cut, special bits,
        // and a plain directory below a set-group-ID one (where mkdir
        // would add the bit).
        let modes = [
            ("etc", 0o750),
            ("etc/deep", 0o755),
            ("tmp", 0o1777),
            ("var", 0o2775),
            ("var/mail", 0o755),
        ];
        fs::create_dir_all(input.join("etc/deep")).unwrap();
        fs::create_dir_all(input.join("tmp")).unwrap();
        fs::create_dir_all(input.join("var/mail")).unwrap();
        for (dir, mode) in modes {
            fs::set_permissions(input.join(dir), fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::write(input.join("etc/passwd"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink("/etc", input.join("link")).unwrap();
        let upper = tmp.join("upper");
        if !nix::unistd::geteuid().is_root() {
            // Without root the twins cannot be given away; the walk
            // still finds what needs them.
            let found = directories(&input, owner).unwrap().foreign;
            assert_eq!(found.len(), 5);
            fs::remove_dir_all(&tmp).unwrap();
            return;
        }
        assert_eq!(give_directories(&input, &upper, owner).unwrap(), 5);
        for (dir, mode) in modes {
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
