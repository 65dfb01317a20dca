//! A value loaded from files and loaded again when they change: the server
//! certificate with its key, and the CRLs. Rotating them is then a matter
//! of replacing the files; no restart, no signal.
//!
//! The files are looked at (one `stat` each) at most once per interval, on
//! the handshake path, so an idle server does no work and a busy one does
//! a few system calls a second. A change is a different device, inode,
//! size, modification or status-change time of any file, which catches an
//! in-place rewrite as well as a new file renamed over the old one. When
//! the new files do not load (half written, key not matching the
//! certificate, garbage) the previous value stays in use and a warning
//! says why; the files are tried again when they change again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Result;

/// How often the files are looked at, at most.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Loads a value from its files.
pub(crate) type Loader<T> = Box<dyn Fn(&[PathBuf]) -> Result<T> + Send + Sync>;

/// A value of type `T` kept up to date with the files it was loaded from.
pub(crate) struct Reloading<T> {
    /// What the value is, for the logs ("server certificate", "CRL").
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    current: Arc<T>,
    /// The files as they were when last loaded (or last tried).
    seen: Vec<Option<FileStamp>>,
    next_check: Instant,
}

impl<T> Reloading<T> {
    /// Loads the value once; unlike a later reload, a failure here is an
    /// error: there is no previous value to keep.
    pub(crate) fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        interval: Duration,
        load: Loader<T>,
    ) -> Result<Self> {
        let seen = stamps(&paths);
        let current = Arc::new(load(&paths)?);
        Ok(Reloading {
            what,
            paths,
            interval,
            load,
            state: Mutex::new(State {
                current,
                seen,
                next_check: Instant::now() + interval,
            }),
        })
    }

    /// The current value, after loading the files again if they changed and
    /// the interval has passed since they were last looked at.
    pub(crate) fn get(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave the state half
        // updated (each field is replaced whole), so a poisoned lock is
        // still good to use.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now < state.next_check {
            return state.current.clone();
        }
        state.next_check = now + self.interval;
        let stamps = stamps(&self.paths);
        if stamps == state.seen {
            return state.current.clone();
        }
        state.seen = stamps;
        match (self.load)(&self.paths) {
            Ok(value) => {
                tracing::info!(files = ?self.paths, "reloaded the {} after its files changed", self.what);
                state.current = Arc::new(value);
            }
            Err(e) => {
                tracing::warn!(
                    files = ?self.paths,
                    "the {} files changed but do not load; keeping the previous {}: {e}",
                    self.what,
                    self.what
                );
            }
        }
        state.current.clone()
    }
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("paths", &self.paths)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamp of each file; `None` for a file that cannot be looked at
/// (missing for a moment during a non-atomic replacement, for example).
fn stamps(paths: &[PathBuf]) -> Vec<Option<FileStamp>> {
    paths.iter().map(|p| stamp(p)).collect()
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// A value that is the file's text, refused when it says "bad".
    fn text_loader() -> Loader<String> {
        Box::new(|paths: &[PathBuf]| {
            let text = std::fs::read_to_string(&paths[0]).map_err(|source| Error::Read {
                what: "test file",
                path: paths[0].clone(),
                source,
            })?;
            if text.contains("bad") {
                return Err(Error::invalid("test file", &paths[0], "says bad"));
            }
            Ok(text)
        })
    }

    #[test]
    fn reloads_on_change_and_keeps_the_old_value_when_the_new_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, "one").unwrap();
        let r = Reloading::new("test", vec![path.clone()], Duration::ZERO, text_loader()).unwrap();
        assert_eq!(*r.get(), "one");

        std::fs::write(&path, "two!").unwrap();
        assert_eq!(*r.get(), "two!");

        std::fs::write(&path, "bad bad").unwrap();
        assert_eq!(*r.get(), "two!", "a broken file keeps the previous value");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(*r.get(), "two!", "a missing file keeps the previous value");

        // A new file renamed over the old name is picked up.
        let tmp = dir.path().join("v.tmp");
        std::fs::write(&tmp, "three").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*r.get(), "three");
    }

    #[test]
    fn looks_at_the_files_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, "one").unwrap();
        let r = Reloading::new(
            "test",
            vec![path.clone()],
            Duration::from_secs(3600),
            text_loader(),
        )
        .unwrap();
        std::fs::write(&path, "two!").unwrap();
        assert_eq!(
            *r.get(),
            "one",
            "within the interval the files are not looked at"
        );
    }

    #[test]
    fn a_first_load_that_fails_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let e = Reloading::new("test", vec![path.clone()], Duration::ZERO, text_loader())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }
}
