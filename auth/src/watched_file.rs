//! A file parsed into a value and re-read when its bytes change: the JWKS
//! file (key rotation) and the static-token file (adding and revoking
//! tokens) change without a restart, and so does the token a client reads
//! from a file (renewal).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Parses a file's bytes (the path is for error messages).
pub type Parser<T> = Box<dyn Fn(&Path, &[u8]) -> Result<T> + Send + Sync>;

/// The file, its current value, and when it was last looked at.
pub struct WatchedFile<T> {
    path: PathBuf,
    parse: Parser<T>,
    check_every: Duration,
    clock: Arc<dyn Clock>,
    current: RwLock<Arc<T>>,
    check: Mutex<Check>,
}

struct Check {
    last: Duration,
    /// SHA-256 of the bytes last parsed (or last refused): comparing
    /// contents catches a rewrite that keeps the size and the mtime tick.
    digest: [u8; 32],
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl<T> WatchedFile<T> {
    /// Reads and parses the file; an error here is a configuration error.
    /// The file is looked at again at most every `check_every` (zero:
    /// at every [`WatchedFile::get`]).
    pub fn open(
        path: &Path,
        parse: Parser<T>,
        check_every: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let bytes = read(path)?;
        let value = parse(path, &bytes)?;
        let last = clock.monotonic();
        Ok(WatchedFile {
            path: path.to_path_buf(),
            parse,
            check_every,
            clock,
            current: RwLock::new(Arc::new(value)),
            check: Mutex::new(Check {
                last,
                digest: Sha256::digest(&bytes).into(),
            }),
        })
    }

    /// The current value, after re-reading the file if the check interval
    /// has passed. A file that cannot be read or parsed any more keeps the
    /// last good value (logged): a half-written file must not lock everyone
    /// out, and revoking means writing a file without the entry.
    pub fn get(&self) -> Arc<T> {
        self.refresh();
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The file it reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn refresh(&self) {
        // One caller checks; the others use the current value meanwhile.
        let Ok(mut check) = self.check.try_lock() else {
            return;
        };
        let now = self.clock.monotonic();
        if now.saturating_sub(check.last) < self.check_every && !self.check_every.is_zero() {
            return;
        }
        check.last = now;
        let bytes = match read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!("{e}; keeping the last good version");
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if digest == check.digest {
            return;
        }
        check.digest = digest;
        match (self.parse)(&self.path, &bytes) {
            Ok(value) => {
                tracing::info!("reloaded {}", self.path.display());
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
            }
            Err(e) => tracing::warn!("{e}; keeping the last good version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn lines(_: &Path, b: &[u8]) -> Result<usize> {
        let text = String::from_utf8_lossy(b);
        if text.contains("bad") {
            return Err(Error::Setting {
                field: "f".into(),
                reason: "bad".into(),
            });
        }
        Ok(text.lines().count())
    }

    #[test]
    fn rereads_on_change_after_the_interval_and_keeps_good_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "a\n").unwrap();
        let clock = Arc::new(ManualClock::at_unix(0));
        let file = WatchedFile::open(
            &path,
            Box::new(lines),
            Duration::from_secs(2),
            clock.clone(),
        )
        .unwrap();
        assert_eq!(*file.get(), 1);
        std::fs::write(&path, "a\nb\n").unwrap();
        assert_eq!(*file.get(), 1, "not before the interval");
        clock.advance(Duration::from_secs(2));
        assert_eq!(*file.get(), 2);
        std::fs::write(&path, "bad\n").unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(*file.get(), 2, "a bad file keeps the last good value");
        std::fs::remove_file(&path).unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(*file.get(), 2, "so does a missing one");
        std::fs::write(&path, "x\ny\nz\n").unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(*file.get(), 3);
        assert!(WatchedFile::open(
            &dir.path().join("none"),
            Box::new(lines),
            Duration::ZERO,
            clock
        )
        .is_err());
    }
}
