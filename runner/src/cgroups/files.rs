//! Reading and writing cgroup interface files, shared by the v1 and v2
//! managers.
//!
//! cgroupfs files are small text files the kernel makes; they cannot be
//! created, so a write to a missing one is an error that names the file.
//! Reads that feed usage figures are lenient (a missing file or field reads
//! as `None`): a run's outcome must not fail because a kernel lacks a
//! statistic.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// How long [`remove_dir`] waits for a cgroup's last processes to exit.
const RMDIR_PATIENCE: Duration = Duration::from_secs(2);
/// Pause between two attempts of [`remove_dir`].
const RMDIR_PAUSE: Duration = Duration::from_millis(20);

/// Writes `value` to an interface file.
pub fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// The file's text, or `None` if it cannot be read (absent on this kernel).
pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A file holding one number, such as `memory.peak`.
pub fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// The value of `key` in a flat keyed file (`key value` per line), such as
/// `memory.events` or `cpu.stat`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Checks a cgroup parent: a non-empty relative path (a leading `/` is
/// allowed) without `..`. Returns it without its outer slashes.
pub fn check_parent(parent: &str) -> Result<&str> {
    let parent = parent.trim_matches('/');
    if parent.is_empty() || !normal(Path::new(parent)) {
        return Err(Error::Cgroup(format!(
            "cgroup parent {parent:?} must be a non-empty relative path without '..'"
        )));
    }
    Ok(parent)
}

/// `parent/id` as a relative path, refusing anything that could leave the
/// parent or name the parent itself: a run's cgroup is always a child, and
/// removing it kills what is in it.
pub fn run_relative(parent: &str, id: &str) -> Result<PathBuf> {
    let parent = check_parent(parent)?;
    Ok(Path::new(parent).join(check_id(id)?))
}

/// Checks a run id: one plain path component.
pub fn check_id(id: &str) -> Result<&str> {
    if id.is_empty() || id.contains('/') || !normal(Path::new(id)) {
        return Err(Error::Cgroup(format!("run id {id:?} cannot name a cgroup")));
    }
    Ok(id)
}

/// Opens directory `dir` to reach it later through [`through`], even from
/// a mount namespace where its path is gone.
pub fn pin(dir: &Path) -> Result<std::os::fd::OwnedFd> {
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open {}", dir.display()), e))?;
    // SAFETY: open just returned this descriptor to us alone.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// The path through which a pinned directory is reached.
pub fn through(fd: &std::os::fd::OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Whether every component of `path` is a plain name (no `/`, `.`, `..`).
fn normal(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// SIGKILLs every process listed in `procs` (a `cgroup.procs` file).
pub fn kill_listed(procs: &Path) {
    let Some(text) = read(procs) else { return };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if pid > 0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The names of `dir`'s subdirectories (none if it cannot be read).
pub fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Removes the cgroup directory `dir`; an absent one is already removed.
/// While processes are still exiting the kernel answers EBUSY, so that is
/// retried for a while, killing what `cgroup.procs` still lists.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        let err = match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match err.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOENT) => return Ok(()),
            Some(Errno::EBUSY) if started.elapsed() < RMDIR_PATIENCE => {
                kill_listed(&dir.join("cgroup.procs"));
                std::thread::sleep(RMDIR_PAUSE);
            }
            _ => return Err(Error::io(format!("remove cgroup {}", dir.display()), err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_read_by_key() {
        let text = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 2\n";
        assert_eq!(keyed(text, "oom_kill"), Some(2));
        assert_eq!(keyed(text, "oom"), Some(1));
        assert_eq!(keyed(text, "absent"), None);
    }

    #[test]
    fn run_paths_stay_below_the_parent() {
        assert_eq!(
            run_relative("/corral/", "corral-1-2").unwrap(),
            Path::new("corral/corral-1-2")
        );
        assert_eq!(run_relative("a/b", "x").unwrap(), Path::new("a/b/x"));
        for (parent, id) in [
            ("", "x"),
            ("/", "x"),
            ("a/../b", "x"),
            ("a", ""),
            ("a", ".."),
            ("a", "x/y"),
            ("a", "."),
        ] {
            assert!(
                matches!(run_relative(parent, id), Err(Error::Cgroup(_))),
                "{parent:?} {id:?}"
            );
        }
    }
}
