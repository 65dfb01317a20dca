//! The audit log file: JSON lines appended, one `write` per event, so that
//! each line reaches the kernel whole before the audited call goes on.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{AuditEvent, AuditSink};
use crate::error::{Error, Result};

/// Appends events to a file (created with mode 0600: lines name principals
/// and peers).
#[derive(Debug)]
pub struct FileAuditLog {
    path: PathBuf,
    file: Mutex<File>,
    failures: AtomicU64,
}

fn open(path: &Path) -> Result<File> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io)
}

impl FileAuditLog {
    /// Opens (or creates) the file for appending.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(FileAuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(open(path)?),
            failures: AtomicU64::new(0),
        })
    }

    /// Events that could not be written since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AuditSink for FileAuditLog {
    fn record(&self, event: &AuditEvent) {
        let mut line = event.to_json().into_bytes();
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = file.write_all(&line).and_then(|()| file.flush()) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "audit log {}: an event was not written: {e}",
                self.path.display()
            );
        }
    }

    /// Opens the path again, after log rotation moved the old file away.
    fn reopen(&self) -> Result<()> {
        let file = open(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(())
    }
}
