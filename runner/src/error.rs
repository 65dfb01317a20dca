//! The one error type of the runner crate.

use std::path::PathBuf;

/// Everything that can go wrong while preparing or running a sandbox.
///
/// The variants a person can act on (a missing rootfs, a command that is not
/// in the root, a profile that does not parse) name the path or value that
/// was wrong, so the message alone says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rootfs directory {0} does not exist or is not a directory")]
    MissingRootfs(PathBuf),
    #[error("input root {0} does not exist or is not a directory")]
    MissingInputRoot(PathBuf),
    #[error("command {command:?} not found in the sandbox root (searched {searched})")]
    CommandNotFound { command: String, searched: String },
    #[error("working directory {0:?} is not a directory inside the input root")]
    BadWorkingDirectory(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("sandbox profile {path}: {message}")]
    Profile { path: String, message: String },
    #[error("runner configuration {path}: {message}")]
    Config { path: String, message: String },
    #[error("network access was requested but this runner's policy forbids it")]
    NetworkForbidden,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    /// The cgroup set-up cannot work as configured or found.
    #[error("cgroups: {0}")]
    Cgroup(String),
    /// A limit needs a cgroup v2 controller that the parent does not offer.
    #[error(
        "the {controller} controller is not offered in {}/cgroup.controllers, so its limit cannot be enforced",
        dir.display()
    )]
    CgroupController { controller: String, dir: PathBuf },
    #[error("container runtime: {0}")]
    Container(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("container helper: {0}")]
    Zygote(String),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a system call error with what was being done.
    pub fn sys(context: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
