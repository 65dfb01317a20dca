//! Scratch directories the service makes ahead of calls: after each call
//! whose scratch directory it made, a spare with the same twins
//! (`dir_owner`) is ready for the next call on the same input, so that it
//! finds its directories made. A `mkdir` on a disk is not free (0.03–0.3
//! ms each on this machine's ext4), and a root-owned root needs one per
//! directory. The spare is the call's own scratch directory, its changed
//! twins made anew ([`Skeleton`]), where the call's run can be told not to
//! have changed the rest; else a new one.
//!
//! Spares live in a directory of the service's own in the temporary
//! directory, each of mode 0700 until it is handed out: the twins in it
//! belong to the sandbox's user, and no one, that user included, may reach
//! them before the run they are for.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::dir_owner::Twins;
use crate::error::{Error, Result};
use crate::host::Host;

use super::skeleton::Skeleton;
use super::twin_watch::{Handed, TwinWatch};
use super::walks::Walks;

/// Spares kept per input: one for each of two calls at once, and one
/// for the next call while the last one's directory is made ready (a call
/// that finds none makes its own: 60–100 ms on a Debian root here).
const KEPT_PER_INPUT: usize = 3;

/// The spares of one service.
pub(super) struct Spares {
    /// Where they live.
    base: PathBuf,
    /// The sandbox's user (host uid, gid), owner of the twins.
    owner: (u32, u32),
    /// Mode of a scratch directory handed out: the sandbox's user must
    /// reach it (as root, another user).
    open_mode: u32,
    /// Spares made, by the name of their twins, oldest first.
    ready: Mutex<HashMap<u64, VecDeque<Spare>>>,
    /// The twins of the inputs seen so far.
    walks: Walks,
    /// Names the next directory.
    next: AtomicU64,
}

/// A scratch directory ready for a call.
struct Spare {
    dir: PathBuf,
    /// Its upper directory's twins as made.
    skeleton: Skeleton,
    /// A watch of them, where one could be made.
    watch: Option<TwinWatch>,
}

/// A scratch directory taken for a call.
pub(super) struct Taken {
    pub(super) dir: PathBuf,
    /// What to refill after the call.
    pub(super) refill: Refill,
    /// A descriptor of the watch of its twins, and what it watches.
    pub(super) watch: Option<Handed>,
}

/// What a scratch directory handed out was made for: the spare to make
/// after its call.
pub(super) struct Refill {
    key: u64,
    twins: Twins,
    /// Its upper directory's twins as they were when handed out.
    skeleton: Skeleton,
    /// When it was handed out.
    handed: SystemTime,
    /// The watch of its twins.
    watch: Option<TwinWatch>,
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
            walks: Walks::default(),
            next: AtomicU64::new(1),
        })
    }

    /// A scratch directory with the twins of `give`'s directories, a
    /// spare if one is ready, else made now.
    pub(super) fn take(&self, give: Option<&Path>) -> Result<Taken> {
        let twins = match give {
            Some(input) => self.walks.twins(input, self.owner)?,
            None => Twins::default(),
        };
        let key = twins.key(give.unwrap_or(Path::new("")), self.owner);
        let spare = self
            .ready
            .lock()
            .ok()
            .and_then(|mut ready| ready.get_mut(&key).and_then(VecDeque::pop_front));
        let Spare {
            dir,
            skeleton,
            watch,
        } = match spare {
            Some(spare) => spare,
            None => self.make(&twins)?,
        };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(self.open_mode))
            .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
        let sent = watch.as_ref().and_then(TwinWatch::hand_out);
        let handed = SystemTime::now();
        Ok(Taken {
            dir,
            refill: Refill {
                key,
                twins,
                skeleton,
                handed,
                watch,
            },
            watch: sent,
        })
    }

    /// After the call `dir` was handed out for: makes it the next call's
    /// spare where its run changed only twins (made anew), else removes it
    /// and makes a new spare.
    pub(super) fn recycle(&self, dir: PathBuf, refill: Refill) {
        let Refill {
            key,
            twins,
            skeleton,
            handed,
            watch,
        } = refill;
        match self.restore(&dir, &twins, skeleton, handed) {
            Ok((skeleton, remade)) => {
                let upper = dir.join("upper");
                let watch = watch.and_then(|w| w.remade(&upper, &remade, &twins));
                let spare = Spare {
                    dir,
                    skeleton,
                    watch,
                };
                self.keep(key, spare)
            }
            Err(why) => {
                tracing::debug!(dir = %dir.display(), why, "scratch directory not reused");
                self.discard(&dir, key, &twins);
            }
        }
    }

    /// Makes the twins of `dir` its run changed anew; the skeleton then,
    /// and the twins made anew, each below none of the others. Says why
    /// not when the run may have changed more than twins.
    fn restore(
        &self,
        dir: &Path,
        twins: &Twins,
        skeleton: Skeleton,
        handed: SystemTime,
    ) -> std::result::Result<(Skeleton, Vec<PathBuf>), String> {
        // The run's scratch directory: `upper/` and the overlay's `work/`.
        let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
        for entry in entries {
            let name = entry.map_err(|e| e.to_string())?.file_name();
            if name != "upper" && name != "work" {
                return Err(format!("it holds {name:?}"));
            }
        }
        let upper = dir.join("upper");
        let checked = skeleton
            .check(&upper, handed)
            .ok_or("its upper directory changed")?;
        for top in &checked.changed {
            corral_proto::scratch::remove_tree(&upper.join(top)).map_err(|e| e.to_string())?;
            twins
                .make_below(&upper, self.owner, top)
                .map_err(|e| e.to_string())?;
        }
        crate::sandbox::dispatch::clear_work(&dir.join("work")).map_err(|e| e.to_string())?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let remade = checked.changed.clone();
        tracing::debug!(dir = %dir.display(), remade = ?remade, "twins made anew");
        let skeleton = checked.settle(&upper).map_err(|e| e.to_string())?;
        Ok((skeleton, remade))
    }

    /// Keeps `spare` for a call on the input `key` names, unless enough
    /// are kept.
    fn keep(&self, key: u64, spare: Spare) {
        let Ok(mut ready) = self.ready.lock() else {
            return;
        };
        let kept = ready.entry(key).or_default();
        if kept.len() < KEPT_PER_INPUT {
            kept.push_back(spare);
            return;
        }
        drop(ready);
        let _ = corral_proto::scratch::remove_tree(&spare.dir);
    }

    /// Makes a spare for the next call like the one `refill` was taken
    /// for, unless one is ready.
    pub(super) fn refill(&self, refill: Refill) {
        self.make_unless_ready(refill.key, &refill.twins);
    }

    /// Removes `dir`, the scratch directory `refill` was taken for, and
    /// makes a spare in its stead unless one is ready.
    pub(super) fn remove(&self, dir: &Path, refill: Refill) {
        self.discard(dir, refill.key, &refill.twins);
    }

    fn discard(&self, dir: &Path, key: u64, twins: &Twins) {
        let _ = corral_proto::scratch::remove_tree(dir);
        self.make_unless_ready(key, twins);
    }

    /// Makes a spare with `twins` for calls on the input `key` names,
    /// unless one is ready.
    fn make_unless_ready(&self, key: u64, twins: &Twins) {
        let has_one = self
            .ready
            .lock()
            .is_ok_and(|ready| ready.get(&key).is_some_and(|v| !v.is_empty()));
        if has_one {
            return;
        }
        match self.make(twins) {
            Ok(spare) => self.keep(key, spare),
            Err(e) => tracing::warn!(error = %e, "make a spare scratch directory"),
        }
    }

    /// A new scratch directory (mode 0700) with `upper/` holding `twins`.
    fn make(&self, twins: &Twins) -> Result<Spare> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let dir = self.base.join(n.to_string());
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let upper = dir.join("upper");
        twins.make(&upper, self.owner)?;
        let skeleton = Skeleton::read(&upper, twins)?;
        let watch = TwinWatch::of(&upper, twins);
        Ok(Spare {
            dir,
            skeleton,
            watch,
        })
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let _ = corral_proto::scratch::remove_tree(&self.base);
    }
}
