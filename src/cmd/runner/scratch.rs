//! The scratch directory of a `runner exec` run that the caller prepares
//! (the overlay's upper directory filled before the run) and so owns.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{bail, Context};

/// A new, empty directory in the temporary directory (like plain `runner
/// exec`'s), reachable by the sandbox's user when run as root.
pub fn create(is_root: bool) -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "corral-exec-{}-{:08x}",
            std::process::id(),
            nanos.wrapping_add(attempt)
        ));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let mode = if is_root { 0o755 } else { 0o700 };
                fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("chmod {}", dir.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!("could not create a scratch directory in {}", base.display())
}
