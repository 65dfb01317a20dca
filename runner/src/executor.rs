//! The code that runs inside the container, in libcontainer's `Executor`
//! hook, after pivot_root and after capabilities are dropped, right before
//! the command starts.
//!
//! It confines the process (capabilities dropped, Landlock, then seccomp),
//! then forks: the parent stays as PID 1 of the sandbox's PID namespace and
//! reaps every orphan, the child execs the command. Before all that, it
//! takes the uid/gid the action asked for (see [`crate::identity`]). When the command exits, PID 1 reports its
//! wait status on the status pipe and exits, and the kernel kills whatever
//! the command left behind in the namespace.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI};
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Spec;

use crate::seccomp::Filters;

/// File descriptor (inherited through libcontainer's preserved fds) on which
/// PID 1 writes the command's wait status.
pub const STATUS_FD: RawFd = 3;

/// What PID 1 reports: 8 bytes, a kind (0 = exited, 1 = signalled) and the
/// code or signal number, both little-endian i32.
pub fn encode_status(status: WaitStatus) -> Option<[u8; 8]> {
    let (kind, value) = match status {
        WaitStatus::Exited(_, code) => (0i32, code),
        WaitStatus::Signaled(_, sig, _) => (1i32, sig as i32),
        _ => return None,
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&kind.to_le_bytes());
    out[4..].copy_from_slice(&value.to_le_bytes());
    Some(out)
}

/// The inverse of [`encode_status`]: (exit code, signal).
pub fn decode_status(bytes: &[u8]) -> Option<(Option<i32>, Option<i32>)> {
    let kind = i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let value = i32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    match kind {
        0 => Some((Some(value), None)),
        1 => Some((None, Some(value))),
        _ => None,
    }
}

/// The executor handed to libcontainer. Cloned into the container process.
#[derive(Clone)]
pub struct SandboxExecutor {
    pub filters: Filters,
    pub landlock: bool,
    pub writable: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Make stdin the controlling terminal of a new session (`--shell`).
    pub controlling_tty: bool,
    /// The network namespace is private: bring `lo` up (the init still holds
    /// the capabilities of [`crate::loopback::INIT_CAPS`] for this).
    pub loopback_up: bool,
    /// uid and gid the command runs as (see [`crate::identity`]).
    pub identity: (u32, u32),
}

fn fail(msg: String) -> ExecutorError {
    ExecutorError::Other(msg)
}

impl SandboxExecutor {
    fn restrict_writes(&self) -> Result<(), ExecutorError> {
        let abi = ABI::V5;
        let all = AccessFs::from_all(abi);
        let read = AccessFs::from_read(abi);
        let mut ruleset = Ruleset::default()
            .handle_access(all)
            .and_then(|r| r.create())
            .map_err(|e| fail(format!("landlock ruleset: {e}")))?;
        ruleset = ruleset
            .add_rules(landlock::path_beneath_rules(["/"], read))
            .map_err(|e| fail(format!("landlock read rule: {e}")))?;
        let writable: Vec<&PathBuf> = self.writable.iter().filter(|p| p.exists()).collect();
        ruleset = ruleset
            .add_rules(landlock::path_beneath_rules(writable, all))
            .map_err(|e| fail(format!("landlock write rule: {e}")))?;
        let status = ruleset
            .restrict_self()
            .map_err(|e| fail(format!("landlock restrict_self: {e}")))?;
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(fail("landlock is not supported by this kernel".into()));
        }
        Ok(())
    }

    /// Drops every capability, then applies Landlock and seccomp.
    fn lock_down(&self) -> Result<(), ExecutorError> {
        crate::loopback::drop_all_capabilities().map_err(|e| fail(e.to_string()))?;
        if self.landlock {
            self.restrict_writes()?;
        }
        self.filters.install().map_err(|e| fail(e.to_string()))
    }

    /// The command's process: closes the status pipe, takes the terminal
    /// if asked, execs. Never returns.
    fn run_command(&self, program: &CString, argv: &[CString]) -> ! {
        // SAFETY: closing our own copy of the status pipe; the command must
        // not be able to forge a status.
        unsafe { libc::close(STATUS_FD) };
        if self.controlling_tty {
            // A new session whose controlling terminal is the pty on stdin:
            // job control and /dev/tty work in the shell.
            let _ = nix::unistd::setsid();
            // SAFETY: TIOCSCTTY on fd 0 with argument 0 (no stealing).
            unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
        }
        let err = nix::unistd::execvp(program, argv).unwrap_err();
        eprintln!("corral sandbox: cannot execute {:?}: {err}", self.args[0]);
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(127) }
    }

    /// PID 1: reap everything until the command itself is gone, report its
    /// status, exit. Never returns.
    fn reap(&self, command: Pid) -> ! {
        loop {
            match waitpid(None, None) {
                Ok(status) if status.pid() == Some(command) => {
                    if let Some(bytes) = encode_status(status) {
                        // SAFETY: STATUS_FD is the status pipe's write end,
                        // kept open by libcontainer's preserved fds; bytes is
                        // a valid 8-byte buffer.
                        unsafe { libc::write(STATUS_FD, bytes.as_ptr().cast(), bytes.len()) };
                        // SAFETY: _exit never returns and is always safe.
                        unsafe { libc::_exit(0) };
                    }
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                // SAFETY: as above.
                Err(_) => unsafe { libc::_exit(125) },
            }
        }
    }
}

impl Executor for SandboxExecutor {
    fn exec(&self, _spec: &Spec) -> Result<(), ExecutorError> {
        if self.loopback_up {
            crate::loopback::bring_up().map_err(|e| fail(e.to_string()))?;
        }
        let program = CString::new(self.args.first().cloned().unwrap_or_default())
            .map_err(|_| ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = self
            .args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| ExecutorError::InvalidArg)?;
        // The `/dev/core` link every other Linux sandbox has (bubblewrap,
        // runc); `/proc/kcore` itself is masked. Made while still the
        // container's root, which owns `/dev`.
        match std::os::unix::fs::symlink("/proc/kcore", "/dev/core") {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(fail(format!("linking /dev/core: {e}")));
            }
            _ => {}
        }
        let (uid, gid) = self.identity;
        crate::identity::become_ids(uid, gid).map_err(|e| fail(e.to_string()))?;
        self.lock_down()?;
        // SAFETY: this process is libcontainer's single-threaded container
        // init, so fork cannot leave another thread's lock held in the
        // child.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => self.run_command(&program, &argv),
            Ok(ForkResult::Parent { child }) => self.reap(child),
            Err(e) => Err(fail(format!("fork of the command: {e}"))),
        }
    }

    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        if self.args.is_empty() {
            return Err(ExecutorValidationError::ArgValidationError(
                "empty command".into(),
            ));
        }
        Ok(())
    }

    /// Exactly the requested environment: libcontainer would add HOME.
    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        for (key, _) in std::env::vars_os() {
            std::env::remove_var(key);
        }
        for (key, value) in &self.env {
            std::env::set_var(key, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        let pid = Pid::from_raw(7);
        let e = encode_status(WaitStatus::Exited(pid, 3)).unwrap();
        assert_eq!(decode_status(&e), Some((Some(3), None)));
        let s = encode_status(WaitStatus::Signaled(
            pid,
            nix::sys::signal::Signal::SIGKILL,
            false,
        ))
        .unwrap();
        assert_eq!(decode_status(&s), Some((None, Some(9))));
        assert_eq!(decode_status(&[1, 2]), None);
    }
}
