//! The one error type of the runner crate.

use std::path::PathBuf;

/// Everything that can go wrong while preparing or running a sandbox.
///
/// The variants a person can act on (a missing rootfs, a command that is not
/// in the root, a profile that does not parse) name the path or value that
/// was wrong, so the message alone says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A lower directory or a `runner exec --root` directory is missing.
    #[error("rootfs directory {0} does not exist or is not a directory")]
    MissingRootfs(PathBuf),
    /// The request's input root is missing.
    #[error("input root {0} does not exist or is not a directory")]
    MissingInputRoot(PathBuf),
    /// The command is not in the sandbox's root.
    #[error("command {command:?} not found in the sandbox root (searched {searched})")]
    CommandNotFound {
        /// `args[0]` as given.
        command: String,
        /// The places looked at, inside the sandbox.
        searched: String,
    },
    /// The working directory is not a directory of the input root.
    #[error("working directory {0:?} is not a directory inside the input root")]
    BadWorkingDirectory(String),
    /// Something else in the request is wrong; the message says what.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A sandbox profile cannot be read or parsed.
    #[error("sandbox profile {path}: {message}")]
    Profile {
        /// The profile's name or path.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The runner configuration file cannot be read or parsed.
    #[error("runner configuration {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request asks for the host network, which this runner forbids.
    #[error("network access was requested but this runner's policy forbids it")]
    NetworkForbidden,
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The error.
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
    CgroupController {
        /// The controller (`memory`, `pids`, `cpu`).
        controller: String,
        /// The parent cgroup directory.
        dir: PathBuf,
    },
    /// libcontainer failed, or the run's process reported an error.
    #[error("container runtime: {0}")]
    Container(String),
    /// The seccomp programs cannot be compiled or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The container helper (zygote) failed or went away.
    #[error("container helper: {0}")]
    Zygote(String),
    /// What `runner exec`'s resident service answered instead of an
    /// outcome: its own error's message, which names what was wrong.
    #[error("{0}")]
    Service(String),
    /// `runner exec`'s resident service closed the connection without
    /// reading the call (it was going away): the command did not run, and
    /// may be sent again.
    #[error("the exec service went away without reading the call ({0})")]
    NotTaken(String),
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

/// The runner's result type.
pub type Result<T> = std::result::Result<T, Error>;
