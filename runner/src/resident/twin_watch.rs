//! An inotify instance watching a spare's twins, kept with the spare from
//! call to call and sent with each of its calls ([`UpperWatch`]), so that
//! the run measures what it wrote by reading the twins that changed
//! (`sandbox::written`) instead of every twin.
//!
//! Only the run reads it: the events are the run's, from its hand-out to
//! its end. Those of the service's own work on the directory in between
//! (the twins it made anew) are read and dropped before the next hand-out.
//! The check of the spare after a call (`Skeleton::check`) does not lean
//! on it: inode flags (`chattr`) change without an event.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::dir_owner::Twins;
use crate::inotify;
use crate::request::{Descriptor, UpperWatch};

/// The most instances the service keeps at once: inotify instances are
/// the user's to share, 128 by default. Spares past it go without.
const MOST_INSTANCES: usize = 16;

/// The share of the user's inotify watches (`fs.inotify.max_user_watches`,
/// 8,192 by default on older kernels) the spares may hold together: the
/// user's editors and file managers need theirs.
const SHARE_OF_WATCHES: usize = 4;

/// Instances and watches held now, in this process.
static INSTANCES: AtomicUsize = AtomicUsize::new(0);
static WATCHES: AtomicUsize = AtomicUsize::new(0);

/// The most watches the spares hold together.
fn most_watches() -> usize {
    static MOST: OnceLock<usize> = OnceLock::new();
    *MOST.get_or_init(|| {
        let user = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .unwrap_or(8192);
        user / SHARE_OF_WATCHES
    })
}

/// An instance and `watches` watches of the spares' share, held until
/// dropped.
struct Held {
    watches: usize,
}

impl Held {
    /// Holds them, or `None` when the share has no room.
    fn take(watches: usize) -> Option<Held> {
        let room = |held: &AtomicUsize, want: usize, most: usize| {
            held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                (now + want <= most).then_some(now + want)
            })
            .is_ok()
        };
        if !room(&INSTANCES, 1, MOST_INSTANCES) {
            return None;
        }
        if !room(&WATCHES, watches, most_watches()) {
            INSTANCES.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Held { watches })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        INSTANCES.fetch_sub(1, Ordering::SeqCst);
        WATCHES.fetch_sub(self.watches, Ordering::SeqCst);
    }
}

/// A descriptor of a spare's twins' watch, to send with its call, and
/// what it watches.
pub(super) type Handed = (OwnedFd, UpperWatch);

/// A spare's twins' watch.
pub(super) struct TwinWatch {
    inotify: OwnedFd,
    /// Each watched directory's watch descriptor and path relative to the
    /// upper directory, by watch descriptor.
    dirs: Vec<(i32, PathBuf)>,
    /// Its share of the user's inotify instances and watches: as many
    /// watches as twins, and the upper directory's, whichever are made
    /// anew.
    _held: Held,
}

impl TwinWatch {
    /// Watches `upper` and its `twins`, or `None` where the spares' share
    /// of the user's inotify watches has no room for them or a watch
    /// cannot be made.
    pub(super) fn of(upper: &Path, twins: &Twins) -> Option<TwinWatch> {
        let held = Held::take(twins.len() + 1)?;
        let inotify = inotify::instance().ok()?;
        let mut watch = TwinWatch {
            inotify,
            dirs: Vec::with_capacity(twins.len() + 1),
            _held: held,
        };
        let all = std::iter::once(Path::new("")).chain(twins.paths());
        watch.add(upper, all).then_some(watch)
    }

    /// After the twins at or below each of `tops` were removed and made
    /// anew: watches the new ones in the stead of the old, or `None` if it
    /// cannot.
    pub(super) fn remade(
        mut self,
        upper: &Path,
        tops: &[PathBuf],
        twins: &Twins,
    ) -> Option<TwinWatch> {
        if tops.is_empty() {
            return Some(self);
        }
        let below = |rel: &Path| tops.iter().any(|top| rel.starts_with(top));
        // Their watches went with them.
        self.dirs.retain(|(_, rel)| !below(rel));
        let new = twins.paths().filter(|rel| below(rel));
        self.add(upper, new).then_some(self)
    }

    /// Watches each of `rels` in `upper`; `false` if one cannot be.
    fn add<'a>(&mut self, upper: &Path, rels: impl Iterator<Item = &'a Path>) -> bool {
        for rel in rels {
            let path = upper.join(rel);
            match inotify::add_watch(self.inotify.as_fd(), &path, inotify::TWIN_EVENTS) {
                Ok(wd) => self.dirs.push((wd, rel.to_path_buf())),
                Err(e) => {
                    tracing::debug!(dir = %path.display(), error = %e, "no watch of the twins");
                    return false;
                }
            }
        }
        // New watches have higher numbers than any before (the kernel
        // hands them out in turn), but a directory watched twice keeps
        // its first.
        self.dirs.sort_by_key(|(wd, _)| *wd);
        self.dirs.dedup_by_key(|(wd, _)| *wd);
        true
    }

    /// For a call: its events so far dropped (the service's own work on
    /// the directory), a descriptor of it to send, and what it watches
    /// (its descriptor to be named once the call's are counted). `None`
    /// where a twin's path cannot be sent (not UTF-8, or with a newline).
    pub(super) fn hand_out(&self) -> Option<Handed> {
        let watch = UpperWatch::of(Descriptor::Passed(0), &self.dirs)?;
        inotify::read_events(self.inotify.as_raw_fd(), |_| {}).ok()?;
        let sent = self.inotify.try_clone().ok()?;
        Some((sent, watch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_follows_twins_made_anew_and_hands_out_no_event_of_the_service() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let dirs = ["etc/deep", "usr/lib", "var"];
        let (twins, me) = crate::dir_owner::twinned_for_me(tmp.path(), &dirs, &upper);
        let watch = TwinWatch::of(&upper, &twins).unwrap();
        let (_, sent) = watch.hand_out().unwrap();
        let dirs = sent.dirs().unwrap();
        let rels: Vec<&str> = dirs.iter().map(|(_, r)| r.to_str().unwrap()).collect();
        assert_eq!(rels, ["", "etc", "etc/deep", "usr", "usr/lib", "var"]);

        // A run wrote below etc; the service makes etc anew.
        std::fs::write(upper.join("etc/deep/f"), "x").unwrap();
        corral_proto::scratch::remove_tree(&upper.join("etc")).unwrap();
        twins.make_below(&upper, me, Path::new("etc")).unwrap();
        let watch = watch
            .remade(&upper, &[PathBuf::from("etc")], &twins)
            .unwrap();
        let old: Vec<i32> = dirs.iter().map(|(wd, _)| *wd).collect();
        let (sent, watched) = watch.hand_out().unwrap();
        let now = watched.dirs().unwrap();
        let rels: Vec<&str> = now.iter().map(|(_, r)| r.to_str().unwrap()).collect();
        assert_eq!(rels, ["", "usr", "usr/lib", "var", "etc", "etc/deep"]);
        assert!(now.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(!old.contains(&now[4].0) && !old.contains(&now[5].0));
        // Nothing of the service's own work is left for the run to read,
        // and what the run does reaches the descriptor it is sent.
        let read = |fd: &OwnedFd| {
            let mut got = Vec::new();
            inotify::read_events(fd.as_raw_fd(), |e| got.push(e.wd)).unwrap();
            got
        };
        assert_eq!(read(&sent), Vec::<i32>::new());
        std::fs::write(upper.join("etc/deep/g"), "x").unwrap();
        assert_eq!(read(&sent), [now[5].0]);
    }

    #[test]
    fn the_spares_hold_no_more_than_their_share_of_the_users_watches() {
        assert!(most_watches() >= 8192 / SHARE_OF_WATCHES);
        // Nothing is held by a refusal (other tests hold some meanwhile).
        assert!(Held::take(most_watches() + 1).is_none());
        let held = Held::take(1).unwrap();
        assert!(WATCHES.load(Ordering::SeqCst) >= 1);
        assert!(INSTANCES.load(Ordering::SeqCst) >= 1);
        drop(held);
    }

    #[test]
    fn a_directory_that_cannot_be_watched_leaves_the_spare_without_a_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let (twins, _) = crate::dir_owner::twinned_for_me(tmp.path(), &["etc"], &upper);
        // The upper directory is gone.
        std::fs::remove_dir_all(&upper).unwrap();
        assert!(TwinWatch::of(&upper, &twins).is_none());
    }
}
