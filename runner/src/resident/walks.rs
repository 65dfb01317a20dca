//! The twins of the input roots the service is called with, kept between
//! calls: walking a Debian root (453 directories, 6,312 entries) took 8 ms
//! of every call on this machine. A kept walk is checked instead: by an
//! inotify watch of its directories ([`DirWatch`], one read) and a `statx`
//! of the root itself, or, where the directories cannot be watched, by a
//! `statx` of each (1.1 ms on that root).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::dir_watch::DirWatch;
use crate::dir_owner::{Stamps, Twins};
use crate::error::Result;

/// How many roots are kept (a person's `runner exec` calls name a few).
const KEPT: usize = 16;

/// A kept walk.
struct Kept {
    twins: Twins,
    stamps: Stamps,
    /// Its directories watched, where they could be.
    watch: Option<DirWatch>,
}

impl Kept {
    /// Whether `input` still has the twins of this walk.
    fn holds(&self, input: &Path) -> bool {
        match &self.watch {
            Some(watch) => watch.quiet() && self.stamps.input_holds(input),
            None => self.stamps.still_hold(input),
        }
    }
}

/// Twins of the roots walked, with what each walk saw.
#[derive(Default)]
pub(super) struct Walks {
    kept: Mutex<HashMap<PathBuf, Arc<Kept>>>,
}

impl Walks {
    /// The twins of `input` (an absolute path) for `owner`, which is the
    /// same on every call: those of the last walk while its directories
    /// are as that walk saw them, else those of a new walk.
    pub(super) fn twins(&self, input: &Path, owner: (u32, u32)) -> Result<Twins> {
        let kept = self.kept.lock().ok().and_then(|k| k.get(input).cloned());
        if let Some(kept) = kept {
            if kept.holds(input) {
                return Ok(kept.twins.clone());
            }
        }
        let (twins, stamps) = Twins::walked(input, owner)?;
        // Watched from now on; a change between the walk and the watch is
        // one the walk's stamps no longer match.
        let kept = stamps
            .map(|stamps| {
                let watch = DirWatch::of(input, stamps.directories());
                Kept {
                    twins: twins.clone(),
                    stamps,
                    watch,
                }
            })
            .filter(|kept| kept.stamps.still_hold(input));
        if let Ok(mut map) = self.kept.lock() {
            map.remove(input);
            if let Some(kept) = kept {
                if map.len() >= KEPT {
                    map.clear();
                }
                map.insert(input.to_path_buf(), Arc::new(kept));
            }
        }
        Ok(twins)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    use super::*;

    /// Sets the modification time of directory `path` to `to`.
    fn set_mtime(path: &Path, to: SystemTime) {
        let dir = std::fs::File::open(path).unwrap();
        dir.set_times(std::fs::FileTimes::new().set_modified(to))
            .unwrap();
    }

    #[test]
    fn kept_twins_follow_every_change_to_the_roots_directories() {
        let me = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        // Every directory is foreign to this owner: each gets a twin.
        let owner = (me.0.wrapping_add(1), me.1.wrapping_add(1));
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        let walks = Walks::default();
        let names = |t: &Twins| t.len();
        // Just made: its times are too recent to be trusted, never kept.
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 2);
        assert!(walks.kept.lock().unwrap().is_empty());
        // ctime cannot be set back; wait it out.
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 2);
        assert_eq!(walks.kept.lock().unwrap().len(), 1);
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 2);

        // A new directory deep down: its parent changed.
        std::fs::create_dir(root.join("etc/deep/new")).unwrap();
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 3);
        // Too recent to keep: the next call walks again and sees a mode change.
        std::fs::set_permissions(
            root.join("etc/deep/new"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let twins = walks.twins(&root, owner).unwrap();
        assert_eq!(twins.mode_of(Path::new("etc/deep/new")), Some(0o700));
        assert!(walks.kept.lock().unwrap().is_empty());

        // A removed directory is seen at once, even when the parent's
        // mtime is put back as it was: its ctime cannot be.
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 3);
        assert_eq!(walks.kept.lock().unwrap().len(), 1);
        let deep = root.join("etc/deep");
        let before = std::fs::metadata(&deep).unwrap().modified().unwrap();
        std::fs::remove_dir(root.join("etc/deep/new")).unwrap();
        set_mtime(&deep, before);
        assert_eq!(
            std::fs::metadata(&deep).unwrap().modified().unwrap(),
            before
        );
        assert_eq!(names(&walks.twins(&root, owner).unwrap()), 2);
    }

    #[test]
    fn without_a_watch_a_kept_walk_is_checked_directory_by_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("etc/deep")).unwrap();
        let owner = (u32::MAX - 1, u32::MAX - 1);
        let (twins, _) = Twins::walked(&root, owner).unwrap();
        // Its stamps, settled or not: only their check is under test.
        let stamps = loop {
            std::thread::sleep(Duration::from_millis(500));
            if let (_, Some(stamps)) = Twins::walked(&root, owner).unwrap() {
                break stamps;
            }
        };
        let kept = Kept {
            twins,
            stamps,
            watch: None,
        };
        assert!(kept.holds(&root));
        std::fs::write(root.join("etc/file"), "").unwrap();
        assert!(!kept.holds(&root), "a directory's mtime changed");
    }
}
