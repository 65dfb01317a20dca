//! A container that serves run after run (runner configuration
//! `runs_per_container`): once a run's caller has its answer, the same
//! container is made ready for the next request instead of removed.
//!
//! Only a run that ended as commands end (an exit or a signal of its own,
//! no limit hit, no timeout, no cancel) hands its container on; any other
//! end, or an enforcer that cannot count usage afresh, removes it as after
//! a single run. Its init then forks the next run's process, which makes
//! that run's namespaces and `/dev` ahead of the request (see
//! `executor::serving`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::cleanup::Cleanup;
use super::prepare::Prepared;
use super::watch::{poll_readable, Woke};
use crate::control::{self, NextRun, Report};
use crate::error::{Error, Result};
use crate::request::Outcome;

/// What became of a container after a run.
pub(crate) enum Reuse {
    /// Ready for another run.
    Again(Prepared),
    /// It may not serve another: this clean-up removes it.
    Done(Cleanup),
}

/// Whether `outcome` is an end after which the container may serve again.
pub(crate) fn may_follow(outcome: &Outcome) -> bool {
    (outcome.exit_code.is_some() || outcome.signal.is_some())
        && outcome.limit_hit.is_none()
        && !outcome.timed_out
        && !crate::cancel::requested()
}

/// Asks the init of a container serving several runs for its next run
/// process, and waits until that process has made its namespaces and
/// `/dev` and waits for a plan: a container is offered to a request only
/// once nothing of its making is left for the request's clock.
pub(super) fn next_run_process(control: &OwnedFd) -> Result<()> {
    control::send(control.as_raw_fd(), &NextRun, &[])?;
    match control::recv::<Report>(control.as_raw_fd())? {
        Some((Report::Waiting, _)) => Ok(()),
        Some((Report::Failed(message), _)) => Err(Error::Container(message)),
        Some((other, _)) => Err(Error::Container(format!(
            "the container's init said {other:?} instead of waiting for a plan"
        ))),
        None => Err(Error::Container(
            "the container's init closed its control socket".into(),
        )),
    }
}

/// Whether the process behind `pidfd` still runs (its pidfd is readable
/// once it has exited).
fn alive(pidfd: &OwnedFd) -> bool {
    !matches!(
        poll_readable(pidfd, None, Duration::ZERO),
        Ok(Woke::Exited) | Err(_)
    )
}

impl Reuse {
    /// After the answer to the run `outcome` ended: releases what the run
    /// held, restarts the cgroup's limits and usage and asks the init for
    /// the next run's process; or gives the clean-up back.
    pub(crate) fn after(mut cleanup: Cleanup, outcome: &Outcome) -> Reuse {
        let usable = cleanup.serves_many
            && may_follow(outcome)
            && cleanup.init.as_ref().is_some_and(|(_, pidfd)| alive(pidfd));
        if !usable {
            return Reuse::Done(cleanup);
        }
        // The run's mount namespace: its release waits for a grace period.
        drop(std::mem::take(&mut cleanup.held));
        match cleanup.enforcer.restart(&cleanup.id) {
            Ok(true) => {}
            Ok(false) => return Reuse::Done(cleanup),
            Err(e) => {
                tracing::warn!(run = cleanup.id, error = %e, "could not restart the run's cgroup");
                return Reuse::Done(cleanup);
            }
        }
        let (Some(control), Some((init, pidfd))) = (cleanup.control.take(), cleanup.init.take())
        else {
            return Reuse::Done(cleanup);
        };
        if let Err(e) = next_run_process(&control) {
            tracing::warn!(run = cleanup.id, error = %e, "the container's next run process");
            cleanup.control = Some(control);
            cleanup.init = Some((init, pidfd));
            return Reuse::Done(cleanup);
        }
        Reuse::Again(Prepared {
            init,
            pidfd,
            mount_ns: cleanup.namespaces.pop(),
            control,
            enforcer: cleanup.enforcer,
            id: cleanup.id,
            serves_many: true,
        })
    }
}
