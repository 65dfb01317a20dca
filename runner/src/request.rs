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
    /// This descriptor of the calling process (`runner exec --shell`, a pty;
    /// meaningless through the zygote, which is another process).
    Fd(i32),
}

/// Resource limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<u64>,
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
    pub rootfs: Rootfs,
    /// Host path of the staged input root (read-only lower layer).
    pub input_root: PathBuf,
    /// Host path of an empty directory for upper/, work/ and rootfs/.
    pub scratch_dir: PathBuf,
    pub args: Vec<String>,
    /// Exactly the environment of the command.
    pub env: Vec<(String, String)>,
    /// Relative to the input root; "" is the input root.
    pub cwd: String,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    pub profile: Profile,
    /// Share the host network.
    pub network: bool,
    pub limits: Limits,
    pub uid: u32,
    pub gid: u32,
    /// Relative to the input root; mounted read-only.
    pub read_only_subtrees: Vec<String>,
    /// Relative to the input root, inside a read-only subtree; writable again.
    #[serde(default)]
    pub writable_subtrees: Vec<String>,
    /// Make stdin (a terminal) the command's controlling terminal.
    #[serde(default)]
    pub controlling_tty: bool,
    /// The sandbox's hostname, checked by `corral_proto::hostname::check`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
}

fn default_hostname() -> String {
    corral_proto::hostname::DEFAULT.to_string()
}

/// Which limit stopped the command, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitHit {
    Timeout,
    Memory,
    Pids,
    WrittenBytes,
    CpuTime,
}

/// How a run ended and what it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Exit code when the command exited.
    pub exit_code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub limit_hit: Option<LimitHit>,
    pub user_cpu: Duration,
    pub system_cpu: Duration,
    pub peak_memory_bytes: u64,
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
