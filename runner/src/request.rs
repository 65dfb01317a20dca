//! What one sandboxed run needs and what it reports. These types cross the
//! socketpair between the async service and the single-threaded container
//! helper, so they are plain serde data.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// What becomes `/` inside the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Rootfs {
    /// The input root itself (under an overlay) is `/`.
    InputRoot,
    /// The host's system directories from the profile, read-only; the input
    /// root is at the runner's exec path.
    Host,
    /// These read-only directories stacked (lowest first); the input root is
    /// at the runner's exec path.
    Lower(Vec<PathBuf>),
}

/// Where a standard stream of the command goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stdio {
    /// /dev/null.
    Null,
    /// A host file the runner creates (truncating it).
    File(PathBuf),
    /// The runner's own stream of the same number (`runner exec`).
    Inherit,
    /// This descriptor of the calling process (meaningless through the
    /// zygote, which is another process).
    Fd(i32),
    /// The descriptor at this index among those sent with the request (as
    /// `SCM_RIGHTS`, see `packet`): how `runner exec` hands its own streams
    /// to its resident service, and how they travel on through the zygote.
    /// Each process that receives the request makes it [`Stdio::Fd`] of
    /// its own copy ([`SandboxRequest::take_passed`]).
    Passed(usize),
    /// A terminal made in the container's own devpts (`runner exec
    /// --shell`); libcontainer sends its master to the unix socket at this
    /// path. Given as stdin, it is all three streams.
    Terminal(PathBuf),
}

/// Resource limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time from the command's start.
    pub timeout: Option<Duration>,
    /// Memory of the whole process tree (per process with rlimits only).
    pub memory_bytes: Option<u64>,
    /// Processes and threads of the whole tree.
    pub max_pids: Option<u64>,
    /// CPU bandwidth in thousandths of a CPU.
    pub cpu_millis: Option<u64>,
    /// Bytes the action may write: the overlay upper directory as a whole,
    /// any single file, and /tmp.
    pub max_written_bytes: Option<u64>,
}

/// One command to run in a fresh sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRequest {
    /// What becomes `/`.
    pub rootfs: Rootfs,
    /// Host path of the staged input root (read-only lower layer).
    pub input_root: PathBuf,
    /// Host path of an empty directory for upper/, work/ and rootfs/.
    pub scratch_dir: PathBuf,
    /// The command and its arguments; `args[0]` is looked up along the
    /// environment's `PATH` unless it contains a `/`.
    pub args: Vec<String>,
    /// Exactly the environment of the command.
    pub env: Vec<(String, String)>,
    /// Relative to the input root; "" is the input root.
    pub cwd: String,
    /// The command's standard input.
    pub stdin: Stdio,
    /// The command's standard output.
    pub stdout: Stdio,
    /// The command's standard error.
    pub stderr: Stdio,
    /// What the seccomp filter and Landlock forbid.
    pub profile: Profile,
    /// Share the host network.
    pub network: bool,
    /// Limits; unset ones take the runner's defaults.
    pub limits: Limits,
    /// uid the command runs as inside the sandbox.
    pub uid: u32,
    /// gid likewise.
    pub gid: u32,
    /// Relative to the input root; mounted read-only.
    pub read_only_subtrees: Vec<String>,
    /// Relative to the input root, inside a read-only subtree; writable again.
    #[serde(default)]
    pub writable_subtrees: Vec<String>,
    /// Make stdin (a terminal) the command's controlling terminal, in a
    /// session of its own.
    #[serde(default)]
    pub controlling_tty: bool,
    /// The sandbox's hostname, checked by `corral_proto::hostname::check`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// The scratch directory's `upper/` holds directories only, if it is
    /// there when the run starts (twins made by Corral, `dir_owner`): a
    /// directory without subdirectories that the run did not change is
    /// then empty, and the written-bytes measurement skips it.
    #[serde(default)]
    pub upper_holds_only_directories: bool,
    /// An inotify instance watching those directories, where the exec
    /// service keeps one on its spare scratch directories: the
    /// measurement then reads only the directories it saw change, not
    /// every one. Given with `upper_holds_only_directories` only.
    #[serde(default)]
    pub upper_watch: Option<UpperWatch>,
}

/// An inotify instance watching the directories of a scratch directory's
/// `upper/` (`resident::twin_watch`), and what it watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpperWatch {
    /// The instance: one of the descriptors sent with the request.
    pub inotify: Descriptor,
    /// The watch descriptors, ascending.
    pub wds: Vec<i32>,
    /// The path of each watched directory relative to `upper/` ("" for
    /// `upper/` itself), one a line, in the order of `wds`: one string
    /// rather than a list of 453 (a Debian root's), whose JSON cost 0.17
    /// ms of every call, twice written and twice read on the way.
    pub dirs: String,
}

impl UpperWatch {
    /// The watch of `dirs` (watch descriptors, ascending, and paths) on
    /// `inotify`; `None` where a path is not UTF-8 or holds a newline.
    pub(crate) fn of(inotify: Descriptor, dirs: &[(i32, PathBuf)]) -> Option<UpperWatch> {
        let mut lines = String::with_capacity(dirs.len() * 24);
        for (i, (_, rel)) in dirs.iter().enumerate() {
            let rel = rel.to_str().filter(|r| !r.contains('\n'))?;
            if i > 0 {
                lines.push('\n');
            }
            lines.push_str(rel);
        }
        Some(UpperWatch {
            inotify,
            wds: dirs.iter().map(|(wd, _)| *wd).collect(),
            dirs: lines,
        })
    }

    /// Each watched directory's watch descriptor and path, ascending;
    /// `None` when they do not match one for one, or are out of order.
    pub(crate) fn dirs(&self) -> Option<Vec<(i32, &std::path::Path)>> {
        let paths: Vec<&std::path::Path> =
            self.dirs.split('\n').map(std::path::Path::new).collect();
        let ascending = self.wds.windows(2).all(|w| w[0] < w[1]);
        (paths.len() == self.wds.len() && ascending)
            .then(|| self.wds.iter().copied().zip(paths).collect())
    }
}

/// A descriptor a request names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Descriptor {
    /// The one at this index among those sent with the request, as
    /// [`Stdio::Passed`].
    Passed(usize),
    /// This descriptor of the process that took it
    /// ([`SandboxRequest::take_passed`]).
    Fd(i32),
}

impl SandboxRequest {
    /// The streams given as [`Stdio::Passed`] made [`Stdio::Fd`] of `fds`
    /// (the descriptors received with this request), which must then
    /// outlive the run, and the upper directory's watch likewise. An
    /// index with no descriptor is an error naming it.
    pub(crate) fn take_passed(&mut self, fds: &[std::os::fd::OwnedFd]) -> crate::Result<()> {
        use std::os::fd::AsRawFd;
        let missing = |name: &str, i: usize| {
            crate::Error::InvalidRequest(format!(
                "{name} is descriptor {i} of those sent, but {} were sent",
                fds.len()
            ))
        };
        if let Some(watch) = &mut self.upper_watch {
            if let Descriptor::Passed(i) = watch.inotify {
                let fd = fds.get(i).ok_or_else(|| missing("the upper watch", i))?;
                watch.inotify = Descriptor::Fd(fd.as_raw_fd());
            }
        }
        for (name, stream) in [
            ("stdin", &mut self.stdin),
            ("stdout", &mut self.stdout),
            ("stderr", &mut self.stderr),
        ] {
            if let Stdio::Passed(i) = *stream {
                let fd = fds.get(i).ok_or_else(|| missing(name, i))?;
                *stream = Stdio::Fd(fd.as_raw_fd());
            }
        }
        Ok(())
    }
}

fn default_hostname() -> String {
    corral_proto::hostname::DEFAULT.to_string()
}

/// Which limit stopped the command, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitHit {
    /// The wall-clock limit.
    Timeout,
    /// The memory limit (the kernel's OOM killer in the run's cgroup).
    Memory,
    /// The pids limit (a fork failed).
    Pids,
    /// The bound on bytes written.
    WrittenBytes,
    /// The CPU time rlimit.
    CpuTime,
}

/// How a run ended and what it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Exit code when the command exited.
    pub exit_code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    /// The wall-clock limit ended it.
    pub timed_out: bool,
    /// The limit that stopped it, if one did.
    pub limit_hit: Option<LimitHit>,
    /// CPU time in user mode, every process of the run counted where a
    /// cgroup measures it.
    pub user_cpu: Duration,
    /// CPU time in the kernel, likewise.
    pub system_cpu: Duration,
    /// Highest memory use seen (see `docs/sandbox.md`, Limits).
    pub peak_memory_bytes: u64,
    /// From the command's start to its end.
    pub wall_time: Duration,
    /// The overlay's upper directory: the files the action changed.
    pub upper_dir: PathBuf,
}

impl Outcome {
    /// The exit status a shell would report: the code, or 128 + signal.
    pub fn shell_status(&self) -> i32 {
        match (self.exit_code, self.signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}
