//! One action's build directory under `builds/`: the runner's scratch
//! directory (the overlay's upper and work directories) and the files for
//! stdout and stderr. It is removed when the action ends, however it ends:
//! by [`BuildDir::remove`] on the normal path, and by the guard's drop when
//! the run is dropped midway (a cancel).

use std::path::{Path, PathBuf};

use corral_proto::reapi;

use crate::error::{Error, Result};
use crate::fsutil::remove_tree;
use crate::outputs::RunLeftovers;
use crate::prepare::prepare_upper;
use crate::stage::StagedInput;

/// A build directory, removed when dropped.
pub struct BuildDir {
    path: PathBuf,
    removed: bool,
}

impl BuildDir {
    /// Names a new build directory for assignment `id` under `builds`
    /// (nothing is created yet).
    pub fn new(builds: &Path, id: &str) -> Self {
        BuildDir {
            path: builds.join(format!("{}-{:08x}", sanitize(id), fastrand::u32(..))),
            removed: false,
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The runner's scratch directory.
    pub fn scratch(&self) -> PathBuf {
        self.path.join("scratch")
    }

    pub fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }

    pub fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }

    /// Creates the overlay's upper directory with what the command needs
    /// that the input root lacks (see [`prepare_upper`]); `owner` is the
    /// sandbox's host uid/gid.
    pub async fn prepare(
        &self,
        staged: &StagedInput,
        command: &reapi::Command,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let (upper, tree, command) = (
            self.scratch().join("upper"),
            staged.staged.clone(),
            command.clone(),
        );
        tokio::task::spawn_blocking(move || prepare_upper(&upper, &tree.tree, &command, owner))
            .await
            .map_err(|e| Error::Internal(format!("preparing a build directory failed: {e}")))?
    }

    /// Where the run left its work: the upper directory the runner names
    /// (its default, `scratch/upper`, when it names none) and the stdio files.
    pub fn leftovers(&self, runner_upper: &str) -> RunLeftovers {
        RunLeftovers {
            upper: match runner_upper {
                "" => self.scratch().join("upper"),
                named => PathBuf::from(named),
            },
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// Removes the directory, waiting for it.
    pub async fn remove(mut self) {
        self.removed = true;
        let path = self.path.clone();
        let _ = tokio::task::spawn_blocking(move || discard(&path)).await;
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || discard(&path));
            }
            Err(_) => discard(&path),
        }
    }
}

fn discard(path: &Path) {
    if let Err(e) = remove_tree(path) {
        tracing::warn!(error = %e, dir = %path.display(), "could not remove a build directory");
    }
}

/// Assignment ids come from the scheduler; keep only safe characters for a
/// directory name.
fn sanitize(id: &str) -> String {
    let s: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if s.is_empty() {
        "action".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_safe_names() {
        let builds = Path::new("/b");
        let dir = BuildDir::new(builds, "../../etc/x y");
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(name.starts_with("etcxy-"), "{name}");
        assert_eq!(dir.path().parent(), Some(builds));
        let dir = BuildDir::new(builds, "///");
        assert!(dir.path().to_str().unwrap().starts_with("/b/action-"));
    }

    #[tokio::test]
    async fn dropped_or_removed_the_directory_goes() {
        let builds = tempfile::tempdir().unwrap();
        let dir = BuildDir::new(builds.path(), "a1");
        std::fs::create_dir_all(dir.scratch().join("upper/deep")).unwrap();
        std::fs::write(dir.stdout(), "x").unwrap();
        let path = dir.path().to_path_buf();
        dir.remove().await;
        assert!(!path.exists());

        let dir = BuildDir::new(builds.path(), "a2");
        std::fs::create_dir_all(dir.scratch()).unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        for _ in 0..200 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!path.exists());
    }
}
