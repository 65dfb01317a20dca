//! Watching a kept root's directories with inotify, so that a call learns
//! that none of them changed from one read of the watch, instead of a
//! `statx` of each (1.1 ms of every call on a Debian root's 453).
//!
//! Only what could change the root's twins counts: a directory made,
//! removed or renamed in a watched one, a watched directory's own
//! attributes (owner, mode), or the watch losing track (a directory
//! removed or moved away, its file system unmounted, the event queue
//! overflowing). Files coming and going do not. A root whose directories
//! are too many to watch, or a watch that cannot be made (the user's
//! inotify watches used up), falls back on the `statx` of each.

use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};

/// The most directories of one root watched: inotify watches are the
/// user's to share (8,192 by default on older kernels), with editors and
/// file managers among others.
const MOST_WATCHED: usize = 4096;

/// An inotify instance watching a root's directories.
pub(super) struct DirWatch {
    inotify: Inotify,
    /// Set once an event said a directory changed: the watch is spent,
    /// whichever call read that event.
    changed: Mutex<bool>,
}

impl DirWatch {
    /// Watches `dirs` (relative to `input`), or `None` if they are too
    /// many or one cannot be watched.
    pub(super) fn of<'a>(input: &Path, dirs: impl Iterator<Item = &'a Path>) -> Option<DirWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        for (n, rel) in dirs.enumerate() {
            if n >= MOST_WATCHED {
                return None;
            }
            inotify.add_watch(&input.join(rel), mask).ok()?;
        }
        Some(DirWatch {
            inotify,
            changed: Mutex::new(false),
        })
    }

    /// Whether no watched directory changed since the watch was made.
    pub(super) fn quiet(&self) -> bool {
        let Ok(mut changed) = self.changed.lock() else {
            return false;
        };
        while !*changed {
            match self.inotify.read_events() {
                Ok(events) => *changed = events.iter().any(counts),
                Err(Errno::EAGAIN) => return true,
                Err(_) => *changed = true,
            }
        }
        false
    }
}

/// Whether an event can change a root's twins.
fn counts(event: &InotifyEvent) -> bool {
    let lost = AddWatchFlags::IN_Q_OVERFLOW
        | AddWatchFlags::IN_IGNORED
        | AddWatchFlags::IN_UNMOUNT
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF;
    // About a directory in a watched one, or about a watched one itself
    // (no name): its owner or mode.
    event.mask.intersects(lost | AddWatchFlags::IN_ISDIR) || event.name.is_none()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn directories_changing_count_and_files_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for dir in ["etc/deep", "usr"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let dirs = ["", "etc", "etc/deep", "usr"].map(Path::new);
        let watch = || DirWatch::of(root, dirs.iter().copied()).unwrap();

        let w = watch();
        assert!(w.quiet());
        std::fs::write(root.join("etc/deep/file"), "x").unwrap();
        std::fs::remove_file(root.join("etc/deep/file")).unwrap();
        assert!(w.quiet(), "a file is not a directory");
        std::fs::create_dir(root.join("etc/deep/new")).unwrap();
        assert!(!w.quiet());
        assert!(!w.quiet(), "a spent watch stays spent");

        let w = watch();
        std::fs::set_permissions(root.join("usr"), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!w.quiet(), "a watched directory's mode");

        let w = watch();
        std::fs::remove_dir(root.join("etc/deep/new")).unwrap();
        assert!(!w.quiet(), "a directory removed");

        let w = watch();
        std::fs::rename(root.join("etc/deep"), root.join("deep")).unwrap();
        assert!(!w.quiet(), "a directory moved");
    }
}
