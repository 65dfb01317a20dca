//! Where a resident exec service lives: a directory only its user can
//! enter, and in it a socket, a lock and a log named after everything that
//! decides how the service runs (the program that serves, the
//! configuration, `$TMPDIR`), so that a caller never reaches a service that
//! would run its command otherwise.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The files of one resident service.
#[derive(Debug, Clone)]
pub struct Place {
    /// Its unix socket.
    pub socket: PathBuf,
    /// Held while a caller starts the service, so that two callers start
    /// one.
    pub lock: PathBuf,
    /// The service's stderr.
    pub log: PathBuf,
    /// The program started as the service (`PROGRAM runner resident`).
    pub program: PathBuf,
}

/// The directory of this user's resident services:
/// `$XDG_RUNTIME_DIR/corral-exec` when that is set and this user's, else
/// `/run/corral/exec` as root, else `/tmp/corral-exec-<uid>`.
fn directory() -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .filter(|dir| std::fs::metadata(dir).is_ok_and(|m| m.uid() == uid && m.is_dir()));
    match runtime {
        Some(dir) => dir.join("corral-exec"),
        None if uid == 0 => PathBuf::from("/run/corral/exec"),
        None => PathBuf::from(format!("/tmp/corral-exec-{uid}")),
    }
}

/// Makes `dir` (mode 0700) or checks the one there: a directory, not a
/// link, this user's, closed to everyone else. Anything else is an error
/// naming what is wrong, for another user could otherwise put a socket
/// there that answers for the service.
fn private_directory(dir: &Path) -> Result<()> {
    // Looked at first: once made, it is only ever looked at (on this
    // machine's ext4 a mkdir, even one that fails, costs 0.1–0.3 ms).
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(_) => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
            }
            std::fs::symlink_metadata(dir)
                .map_err(|e| Error::io(format!("inspect {}", dir.display()), e))?
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    let problem = if !meta.file_type().is_dir() {
        Some("is not a directory".to_string())
    } else if meta.uid() != uid {
        Some(format!("belongs to uid {}, not {uid}", meta.uid()))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:o}: others may enter it",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::InvalidRequest(format!(
            "the exec service's directory {} {problem}",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// What identifies the program that serves: a rebuilt or upgraded
/// `corral-farm` gets a service of its own.
fn binary_identity(program: &Path, hasher: &mut impl Hasher) -> Result<()> {
    let exe = std::fs::metadata(program)
        .map_err(|e| Error::io(format!("inspect {}", program.display()), e))?;
    (
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime(),
        exe.mtime_nsec(),
    )
        .hash(hasher);
    Ok(())
}

impl Place {
    /// The place of the service that `program` (a `corral-farm`) runs for
    /// `config` (the runner configuration file, if any), made ready to
    /// use. A configuration is named by its
    /// path, its bytes and the caller's working directory, against which
    /// its relative paths resolve. The temporary directory (`$TMPDIR`)
    /// counts too: the service makes its scratch directories there.
    pub fn for_config(program: &Path, config: Option<&Path>) -> Result<Place> {
        let mut hasher = std::hash::DefaultHasher::new();
        binary_identity(program, &mut hasher)?;
        std::env::temp_dir().hash(&mut hasher);
        if let Some(path) = config {
            let bytes = std::fs::read(path).map_err(|e| Error::Config {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let cwd =
                std::env::current_dir().map_err(|e| Error::io("find the working directory", e))?;
            (std::path::absolute(path).ok(), bytes, cwd).hash(&mut hasher);
        }
        let dir = directory();
        private_directory(&dir)?;
        let key = format!("{:016x}", hasher.finish());
        Ok(Place {
            socket: dir.join(format!("{key}.sock")),
            lock: dir.join(format!("{key}.lock")),
            log: dir.join(format!("{key}.log")),
            program: program.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_directory_others_may_enter_is_refused_with_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exec");
        private_directory(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private_directory(&dir).unwrap_err().to_string();
        assert!(
            e.contains("mode 755") && e.contains("others may enter"),
            "{e}"
        );
    }

    #[test]
    fn a_link_in_its_place_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("elsewhere");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&target)
            .unwrap();
        let dir = tmp.path().join("exec");
        std::os::unix::fs::symlink(&target, &dir).unwrap();
        let e = private_directory(&dir).unwrap_err().to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }

    #[test]
    fn another_configuration_gets_another_service() {
        let tmp = tempfile::tempdir().unwrap();
        let program = std::env::current_exe().unwrap();
        let a = tmp.path().join("a.toml");
        std::fs::write(&a, "warm_sandboxes = 1\n").unwrap();
        let place = |config| Place::for_config(&program, config).unwrap().socket;
        let first = place(Some(&a));
        assert_eq!(first, place(Some(&a)));
        std::fs::write(&a, "warm_sandboxes = 2\n").unwrap();
        assert_ne!(first, place(Some(&a)));
        assert_ne!(first, place(None));
    }

    #[test]
    fn another_program_gets_another_service() {
        let tmp = tempfile::tempdir().unwrap();
        let one = tmp.path().join("one");
        let other = tmp.path().join("other");
        std::fs::write(&one, "a build").unwrap();
        std::fs::write(&other, "another build").unwrap();
        let first = Place::for_config(&one, None).unwrap();
        assert_eq!(first.program, one);
        assert_eq!(first.socket, Place::for_config(&one, None).unwrap().socket);
        assert_ne!(
            first.socket,
            Place::for_config(&other, None).unwrap().socket
        );
        let e = Place::for_config(&tmp.path().join("gone"), None).unwrap_err();
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
