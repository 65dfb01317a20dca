//! Where every command keeps its data when no flag or file says otherwise:
//! one place, so that `corral images list` looks where `corral up`'s worker
//! pulled its images, and `corral runner exec --action` caches beside them.
//!
//! ```text
//! DATA                     $XDG_CACHE_HOME/corral, else /var/cache/corral as
//!                          root, else ~/.cache/corral
//! DATA/server/             corral up's server (CAS, action cache)
//! DATA/worker/             corral up's worker (local CAS, trees, builds, runner socket)
//! DATA/worker/images/      its image and layer cache: `corral images`' default
//! DATA/exec/               `corral runner exec --action`'s local CAS and inputs
//! ```
//!
//! Root's default is not under its home because the sandbox's user must be
//! able to traverse every directory above the staged inputs, and root's
//! home is usually closed.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The data directory of `corral up` and the root of every default below.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    // The XDG spec says a relative path is to be ignored.
    let absolute = |v: &std::ffi::OsString| Path::new(v).is_absolute();
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(absolute) {
        return Ok(PathBuf::from(cache).join("corral"));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/cache/corral"));
    }
    let home = std::env::var_os("HOME")
        .filter(absolute)
        .context("neither XDG_CACHE_HOME nor HOME is set: name a directory with a flag")?;
    Ok(PathBuf::from(home).join(".cache").join("corral"))
}

/// `corral up`'s server data under `data`.
pub fn server_dir(data: &Path) -> PathBuf {
    data.join("server")
}

/// `corral up`'s worker data under `data`.
pub fn worker_dir(data: &Path) -> PathBuf {
    data.join("worker")
}

/// The image cache of the worker whose data directory is `worker`.
pub fn images_dir(worker: &Path) -> PathBuf {
    worker.join(corral_worker::config::IMAGES_DIR)
}

/// `corral images`' default cache: that of `corral up`'s worker.
pub fn default_images_dir() -> anyhow::Result<PathBuf> {
    Ok(images_dir(&worker_dir(&data_dir()?)))
}

/// `corral runner exec --action`'s default cache.
pub fn exec_cache_dir() -> anyhow::Result<PathBuf> {
    Ok(data_dir()?.join("exec"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_of_up_are_where_images_list_looks() {
        let data = Path::new("/d");
        assert_eq!(images_dir(&worker_dir(data)), Path::new("/d/worker/images"));
        assert_eq!(server_dir(data), Path::new("/d/server"));
    }
}
