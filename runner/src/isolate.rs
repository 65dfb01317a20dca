//! Runs one sandbox in a forked child so that libcontainer's side effects
//! (cloning, `chdir`, non-dumpable) stay out of the caller, and returns the
//! child's verdict through a pipe.
//!
//! The caller must be single-threaded (no tokio runtime yet) when it calls
//! `spawn`; it may start threads afterwards (`runner exec --shell` does,
//! to copy the terminal).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::request::{Outcome, SandboxRequest};
use crate::sandbox;

/// The child's answer: the outcome or the error message.
type Verdict = std::result::Result<Outcome, String>;

/// A sandbox running in a forked child.
pub(crate) struct Running {
    child: Pid,
    answer: OwnedFd,
    /// The directory the child removes once it has answered (see
    /// [`spawn_removing`]), removed here if it died without answering.
    remove_after: Option<PathBuf>,
}

/// Forks a child that runs `req`.
///
/// # Safety
///
/// The calling process must be single-threaded (no tokio runtime, no
/// other thread alive): the forked child runs libcontainer, which allocates
/// and clones, and could deadlock on a lock another thread held at the
/// fork. [`crate::exec::wait_single_threaded`] checks this.
pub(crate) unsafe fn spawn(host: &Host, req: &SandboxRequest) -> Result<Running> {
    // SAFETY: our caller upholds the same contract.
    unsafe { spawn_removing(host, req, None) }
}

/// [`spawn`], and the child removes directory `remove_after` (a throwaway
/// scratch directory) after it has answered and cleaned up, so that its
/// removal is not on the caller's clock.
///
/// # Safety
///
/// As for [`spawn`].
pub(crate) unsafe fn spawn_removing(
    host: &Host,
    req: &SandboxRequest,
    remove_after: Option<&Path>,
) -> Result<Running> {
    // SAFETY: our caller upholds the same contract; the closure runs in
    // the forked child.
    unsafe { spawn_running(remove_after, || sandbox::run_deferred(host, req)) }
}

/// Forks a child that calls `run` (which makes and runs sandboxes) and
/// answers its outcome.
///
/// # Safety
///
/// As for [`spawn`]; `run` must be sound to call in the forked child.
unsafe fn spawn_running(
    remove_after: Option<&Path>,
    run: impl FnOnce() -> Result<(Outcome, sandbox::Cleanup)>,
) -> Result<Running> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: the caller is single-threaded (this fn's `# Safety`
    // contract), so the child cannot inherit a lock held by another thread.
    match unsafe { fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(r);
            let (verdict, cleanup) = match run() {
                Ok((outcome, cleanup)) => (Ok(outcome), Some(cleanup)),
                Err(e) => (Err(e.to_string()), None),
            };
            let verdict: Verdict = verdict;
            let mut file = std::fs::File::from(w);
            let code = match serde_json::to_vec(&verdict) {
                Ok(bytes) if file.write_all(&bytes).is_ok() => 0,
                _ => 1,
            };
            // The caller has its answer at EOF; the clean-up is off its clock.
            drop(file);
            if let Some(cleanup) = cleanup {
                cleanup.finish();
            }
            if let Some(dir) = remove_after {
                let _ = corral_proto::scratch::remove_tree(dir);
            }
            // SAFETY: _exit skips the parent's atexit handlers and buffers,
            // which belong to the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            Ok(Running {
                child,
                answer: r,
                remove_after: remove_after.map(Path::to_path_buf),
            })
        }
    }
}

impl Running {
    /// The pipe the answer arrives on (readable once the run has ended).
    pub(crate) fn answer(&self) -> &OwnedFd {
        &self.answer
    }

    /// Waits for the child's answer. The child may still be cleaning up
    /// (removing the run's cgroup, releasing the container's namespaces):
    /// it is reaped here if it is done, else left to finish on its own.
    pub(crate) fn wait(self) -> Result<Outcome> {
        let mut bytes = Vec::new();
        let read = std::fs::File::from(self.answer).read_to_end(&mut bytes);
        let _ = waitpid(self.child, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        read.map_err(|e| Error::io("read the sandbox child's answer", e))?;
        let verdict: Verdict = match serde_json::from_slice(&bytes) {
            Ok(verdict) => verdict,
            Err(e) => {
                if let Some(dir) = &self.remove_after {
                    let _ = corral_proto::scratch::remove_tree(dir);
                }
                return Err(Error::Zygote(format!(
                    "sandbox child died without an answer ({e})"
                )));
            }
        };
        verdict.map_err(Error::Container)
    }
}

/// Runs `req` in a forked child and waits for it.
///
/// # Safety
///
/// The calling process must be single-threaded (no tokio runtime, no
/// other thread alive): the forked child runs libcontainer, which allocates
/// and clones, and could deadlock on a lock another thread held at the
/// fork. [`crate::exec::wait_single_threaded`] checks this.
pub unsafe fn run_forked(host: &Host, req: &SandboxRequest) -> Result<Outcome> {
    // SAFETY: our caller upholds spawn's contract (single-threaded).
    unsafe { spawn(host, req) }?.wait()
}

/// Runs `first`, then `req`, in one container serving several runs (see
/// the runner configuration's `runs_per_container`), from a forked child,
/// and returns `req`'s outcome: `req` runs as a warm container's second
/// request does. For tests that must hold of every run, not only of a
/// container's first (the escape suite).
///
/// # Safety
///
/// As for [`run_forked`].
pub unsafe fn run_forked_second(
    host: &Host,
    first: &SandboxRequest,
    req: &SandboxRequest,
) -> Result<Outcome> {
    // SAFETY: our caller upholds spawn's contract (single-threaded); the
    // closure runs in the child forked from it, which has one thread.
    unsafe { spawn_running(None, || sandbox::run_second(host, first, req)) }?.wait()
}
