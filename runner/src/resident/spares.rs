//! Scratch directories the service makes ahead of calls: after each call
//! whose scratch directory it made, it makes a spare with the same twins
//! (`dir_owner`), so that the next call on the same input finds its
//! directories made. A `mkdir` on a disk is not free (0.03–0.3 ms each on
//! this machine's ext4), and a root-owned root needs one per directory.
//!
//! Spares live in a directory of the service's own in the temporary
//! directory, each of mode 0700 until it is handed out: the twins in it
//! belong to the sandbox's user, and no one, that user included, may reach
//! them before the run they are for.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::dir_owner::Twins;
use crate::error::{Error, Result};
use crate::host::Host;

/// The spares of one service.
pub(super) struct Spares {
    /// Where they live.
    base: PathBuf,
    /// The sandbox's user (host uid, gid), owner of the twins.
    owner: (u32, u32),
    /// Mode of a scratch directory handed out: the sandbox's user must
    /// reach it (as root, another user).
    open_mode: u32,
    /// Spares made, by the name of their twins.
    ready: Mutex<HashMap<u64, Vec<PathBuf>>>,
    /// Names the next directory.
    next: AtomicU64,
}

/// What a scratch directory handed out was made for: the spare to make
/// after its call.
pub(super) struct Refill {
    key: u64,
    twins: Twins,
}

impl Spares {
    /// A new, empty home for the spares of the service of `host`.
    pub(super) fn new(host: &Host) -> Result<Spares> {
        let base = std::env::temp_dir().join(format!(
            "corral-exec-scratch-{}-{}",
            nix::unistd::geteuid(),
            std::process::id()
        ));
        let _ = corral_proto::scratch::remove_tree(&base);
        // Others must pass through it to a handed-out scratch directory
        // (as root, the sandbox's user); they can list nothing in it.
        let mode = if host.is_root { 0o711 } else { 0o700 };
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(&base)
            .map_err(|e| Error::io(format!("create {}", base.display()), e))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", base.display()), e))?;
        Ok(Spares {
            base,
            owner: (host.map_uid, host.map_gid),
            open_mode: if host.is_root { 0o755 } else { 0o700 },
            ready: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    /// A scratch directory with the twins of `give`'s directories, a
    /// spare if one is ready, else made now; and what to refill after its
    /// call.
    pub(super) fn take(&self, give: Option<&Path>) -> Result<(PathBuf, Refill)> {
        let twins = match give {
            Some(input) => Twins::of(input, self.owner)?,
            None => Twins::default(),
        };
        let key = twins.key(give.unwrap_or(Path::new("")), self.owner);
        let spare = self
            .ready
            .lock()
            .ok()
            .and_then(|mut ready| ready.get_mut(&key).and_then(Vec::pop));
        let dir = match spare {
            Some(dir) => dir,
            None => self.make(&twins)?,
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(self.open_mode))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        Ok((dir, Refill { key, twins }))
    }

    /// Makes a spare for the next call like the one `refill` was taken
    /// for, unless one is ready.
    pub(super) fn refill(&self, refill: Refill) {
        let has_one = self
            .ready
            .lock()
            .is_ok_and(|ready| ready.get(&refill.key).is_some_and(|v| !v.is_empty()));
        if has_one {
            return;
        }
        match self.make(&refill.twins) {
            Ok(dir) => {
                if let Ok(mut ready) = self.ready.lock() {
                    ready.entry(refill.key).or_default().push(dir);
                }
            }
            Err(e) => tracing::warn!(error = %e, "make a spare scratch directory"),
        }
    }

    /// A new scratch directory (mode 0700) with `upper/` holding `twins`.
    fn make(&self, twins: &Twins) -> Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let dir = self.base.join(n.to_string());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        twins.make(&dir.join("upper"), self.owner)?;
        Ok(dir)
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let _ = corral_proto::scratch::remove_tree(&self.base);
    }
}
