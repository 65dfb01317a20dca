//! How many bytes a run has written: its upper directory measured whole,
//! or, where an inotify instance watches the twins it held at the start
//! ([`UpperWatch`]), only in the twins whose events say they changed.
//!
//! On a Debian root's 453 twins, the whole measurement costs 1.4 ms of
//! every call, on its clock: a `statx` of each twin to learn that nothing
//! changed. The watch's events say it with one read.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

use crate::coarse_clock;
use crate::inotify;
use crate::request::{Descriptor, UpperWatch};

/// The measurement of one run's upper directory.
pub(crate) struct Written<'a> {
    upper: &'a Path,
    /// With an upper directory that held only directories at the start: a
    /// time before the run began.
    settled: Option<SystemTime>,
    /// The twins' events, while they can be trusted.
    events: Option<TwinEvents<'a>>,
}

impl<'a> Written<'a> {
    /// Measures `upper`, whose twins `watch` watches (taken: its
    /// descriptor this process's own) if given.
    pub(crate) fn new(
        upper: &'a Path,
        settled: Option<SystemTime>,
        watch: Option<&'a UpperWatch>,
    ) -> Written<'a> {
        let events = watch
            .filter(|_| settled.is_some())
            .and_then(TwinEvents::new);
        Written {
            upper,
            settled,
            events,
        }
    }

    /// The upper directory.
    pub(crate) fn upper(&self) -> &'a Path {
        self.upper
    }

    /// The bytes written so far. Once the events cannot tell (their queue
    /// overflowed), the whole directory is measured, then and after.
    pub(crate) fn bytes(&mut self) -> u64 {
        if let Some(events) = &mut self.events {
            match events.bytes(self.upper) {
                Some(bytes) => return bytes,
                None => {
                    tracing::debug!("the twins' events cannot tell: measuring every twin");
                    self.events = None;
                }
            }
        }
        tree_bytes(self.upper, self.settled)
    }
}

/// Bytes in a directory tree (file sizes; directories count 0).
///
/// With `settled`, the tree held directories only before that time (an
/// upper directory with twins): a directory with no subdirectory (link
/// count 2) whose ctime is older holds what it held then, nothing, and is
/// not read. Every entry made in a directory since sets its ctime. On a
/// Debian root's upper directory, 363 of the 453 twins.
pub(crate) fn tree_bytes(dir: &Path, settled: Option<SystemTime>) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            // The entry's own type, where the file system records it: an
            // upper directory can hold hundreds of twin directories, which
            // then cost no `statx` unless `settled` asks for one.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if !kind.is_dir() {
                if let Ok(meta) = entry.metadata() {
                    total += meta.len();
                }
                continue;
            }
            let empty_since = settled.is_some_and(|cut| {
                entry.metadata().is_ok_and(|m| {
                    let ctime = (m.ctime(), m.ctime_nsec());
                    m.nlink() == 2 && coarse_clock::stamped_before(ctime, cut)
                })
            });
            if !empty_since {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// What the events of an upper directory's twins said so far.
///
/// A twin none of whose events came holds what it held at the start: its
/// own twins. One that had an entry made, removed, renamed or changed is
/// read, and every directory in it that is not a twin still followed is
/// measured whole. A twin whose watch was lost (it was removed or moved)
/// is not followed, nor is anything below it: whatever is at its path now
/// is measured whole through its parent, whose entry changed, and where
/// it went, through the directory it went to.
struct TwinEvents<'a> {
    inotify: RawFd,
    /// By watch descriptor.
    dirs: Vec<(i32, &'a Path)>,
    /// Had an event, by index in `dirs`.
    touched: Vec<bool>,
    /// Lost their watch, likewise.
    lost: Vec<bool>,
    /// Where the index of `upper/` itself is.
    top: usize,
}

impl<'a> TwinEvents<'a> {
    fn new(watch: &'a UpperWatch) -> Option<TwinEvents<'a>> {
        let Descriptor::Fd(inotify) = watch.inotify else {
            return None;
        };
        let dirs = watch.dirs()?;
        let top = dirs
            .iter()
            .position(|(_, rel)| rel.as_os_str().is_empty())?;
        Some(TwinEvents {
            inotify,
            touched: vec![false; dirs.len()],
            lost: vec![false; dirs.len()],
            dirs,
            top,
        })
    }

    /// Reads the events queued since the last look; `false` when they
    /// cannot tell what changed.
    fn read(&mut self) -> bool {
        let mut trusted = true;
        let read = inotify::read_events(self.inotify, |e| {
            if e.mask & libc::IN_Q_OVERFLOW != 0 {
                trusted = false;
                return;
            }
            match self.dirs.binary_search_by_key(&e.wd, |(wd, _)| *wd) {
                Ok(i) if e.mask & inotify::LOST != 0 => self.lost[i] = true,
                Ok(i) => self.touched[i] = true,
                // A watch removed before the run, its last word late.
                Err(_) if e.mask == libc::IN_IGNORED => {}
                Err(_) => trusted = false,
            }
        });
        trusted && read.is_ok()
    }

    /// The bytes in `upper`; `None` when the events cannot tell.
    fn bytes(&mut self, upper: &Path) -> Option<u64> {
        if !self.read() || self.lost[self.top] {
            return None;
        }
        let lost: Vec<&Path> = (0..self.dirs.len())
            .filter(|&i| self.lost[i])
            .map(|i| self.dirs[i].1)
            .collect();
        let followed = |rel: &Path| !lost.iter().any(|l| rel.starts_with(l));
        let mut twins: Option<HashSet<&Path>> = None;
        let (mut total, mut read) = (0, 0);
        for (i, (_, rel)) in self.dirs.iter().enumerate() {
            if !self.touched[i] || !followed(rel) {
                continue;
            }
            read += 1;
            let Ok(entries) = std::fs::read_dir(upper.join(rel)) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if !kind.is_dir() {
                    total += entry.metadata().map_or(0, |m| m.len());
                    continue;
                }
                let child = rel.join(entry.file_name());
                let twins =
                    twins.get_or_insert_with(|| self.dirs.iter().map(|(_, r)| *r).collect());
                if !(twins.contains(child.as_path()) && followed(&child)) {
                    total += tree_bytes(&entry.path(), None);
                }
            }
        }
        tracing::debug!(read, of = self.dirs.len(), bytes = total, "twins measured");
        Some(total)
    }
}

#[cfg(test)]
mod tests;
