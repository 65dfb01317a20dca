//! The disk store's default size bound, from the free space of the file
//! system it lives on.
//!
//! A fixed default (it was 10 GiB) is wrong both ways: too small on a
//! dedicated disk, and on a small one the file system fills before the
//! bound is reached. The default is therefore what the store already holds
//! plus a share of what is free, measured once at open. The store still
//! copes when something else fills the disk later: a write that finds the
//! file system full evicts and tries again (see `writer.rs`).

use std::path::Path;

use crate::error::{Error, Result};

/// How a disk store's bound is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeBound {
    /// At most this many bytes.
    Bytes(u64),
    /// What the store holds at open plus this percentage of the space free
    /// for unprivileged users on its file system.
    FreeSpace { percent: u8 },
}

/// The default share of the free space: 90 %, leaving room for temp files
/// of uploads in progress and for whatever else shares the disk.
pub const DEFAULT_FREE_SPACE_PERCENT: u8 = 90;

impl Default for SizeBound {
    fn default() -> Self {
        SizeBound::FreeSpace {
            percent: DEFAULT_FREE_SPACE_PERCENT,
        }
    }
}

impl SizeBound {
    /// The bound in bytes for a store at `root` that holds `held` bytes.
    pub fn resolve(self, root: &Path, held: u64) -> Result<u64> {
        match self {
            SizeBound::Bytes(n) => Ok(n),
            SizeBound::FreeSpace { percent } => {
                let free = free_bytes(root)?;
                let share = (u128::from(free) * u128::from(percent.min(100)) / 100) as u64;
                Ok(held.saturating_add(share))
            }
        }
    }
}

/// Bytes an unprivileged user may still write on the file system of `path`.
// The statvfs field types differ between platforms (u32 or u64).
#[allow(clippy::useless_conversion)]
pub fn free_bytes(path: &Path) -> Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|e| {
        Error::io(
            format!("measuring the free space of {}", path.display()),
            std::io::Error::from(e),
        )
    })?;
    Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_bound_adds_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let bound = SizeBound::FreeSpace { percent: 50 }
            .resolve(dir.path(), 1000)
            .unwrap();
        // The free space moves a little between the two measurements.
        let expected = 1000 + free / 2;
        assert!(
            bound.abs_diff(expected) < expected / 10,
            "{bound} vs {expected}"
        );
        assert_eq!(SizeBound::Bytes(7).resolve(dir.path(), 1000).unwrap(), 7);
    }
}
