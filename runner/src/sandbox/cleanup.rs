//! The end of a run, kept apart so that the zygote can answer its caller
//! before paying for it.

use std::path::PathBuf;
use std::time::Instant;

use super::ms;
use crate::cgroups::LimitEnforcer;

/// What is left to do once the command has ended: delete the container
/// (its cgroups and state), the run's cgroup and the bundle. Deferred so
/// that the caller can answer first; nothing here touches the scratch
/// directory. Also what undoes a run that failed half-way.
pub struct Cleanup {
    /// `None` before libcontainer made the container, and under nocgroup.
    pub(super) container: Option<libcontainer::container::Container>,
    pub(super) state_dir: PathBuf,
    pub(super) bundle: PathBuf,
    pub(super) enforcer: Box<dyn LimitEnforcer>,
    /// The run's id: its container's and its cgroup's name.
    pub(super) id: String,
}

impl Cleanup {
    /// Does the clean-up; errors are logged, never fatal.
    pub fn finish(mut self) {
        let t0 = Instant::now();
        match self.container.take() {
            Some(mut container) => {
                if let Err(e) = container.delete(true) {
                    tracing::warn!(container = container.id(), error = %e, "could not delete container");
                }
            }
            // Under nocgroup, libcontainer's delete would kill the stale pids
            // it wrote into the stand-in cgroup.procs files; the init is dead,
            // its PID namespace with it, so only the state directory is left.
            // Without a container at all, at most a partial state is.
            None => {
                let _ = std::fs::remove_dir_all(&self.state_dir);
            }
        }
        // Usually gone with libcontainer's delete; not if create failed.
        if let Err(e) = self.enforcer.remove(&self.id) {
            tracing::warn!(run = self.id, error = %e, "could not remove the run's cgroup");
        }
        let _ = std::fs::remove_dir_all(&self.bundle);
        tracing::debug!(ms = ms(t0), "delete");
    }
}
