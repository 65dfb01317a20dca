//! One run, start to finish, in a single-threaded process made for it.
//!
//! Two steps, so that the first can happen before any request exists:
//! * [`prepare`](prepare::prepare): the run's private mount namespace, the
//!   run's cgroup, and a libcontainer container made from a spec that
//!   names nothing of the request and started, its init moved into the
//!   cgroup and waiting for the request;
//! * [`run_prepared`](dispatch::run_prepared): the request's limits, its
//!   plan to the waiting init, the watch (clock, bytes written, cancel),
//!   status and usage.
//!
//! Then [`Cleanup`] removes the cgroup, after the caller has been answered,
//! or, for a container that serves several runs, [`Reuse`] makes it ready
//! for the next.
//! The functions that call libcontainer must be called in a
//! single-threaded process they may disturb: libcontainer clones the
//! caller, `chdir`s it and makes it non-dumpable. The zygote and `runner
//! exec` call them in a freshly forked child.

mod check;
mod cleanup;
pub(crate) mod dispatch;
mod prepare;
mod private_ns;
mod reuse;
mod watch;
mod written;

use std::time::Instant;

pub(crate) use check::check;
pub(crate) use cleanup::Cleanup;
pub(crate) use dispatch::run_prepared;
pub(crate) use prepare::prepare;
pub(crate) use reuse::{may_follow, Reuse};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::request::{Outcome, SandboxRequest, Stdio};
use crate::spec::{Layout, Shape};

/// Milliseconds since `t0`, for the phase timings logged at debug level.
fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

/// The shape of container `req` needs, and the console socket of a
/// terminal.
pub(crate) fn shape_of(req: &SandboxRequest) -> (Shape, Option<&std::path::Path>) {
    let console = match &req.stdin {
        Stdio::Terminal(socket) => Some(socket.as_path()),
        _ => None,
    };
    let shape = Shape {
        network: req.network,
        terminal: console.is_some(),
    };
    (shape, console)
}

/// Kills a prepared container that will not be used and removes its
/// cgroup.
pub(crate) fn discard(prepared: prepare::Prepared) {
    Cleanup::of(prepared).finish();
}

/// Prepares a container for `req` and runs it; returns as soon as the
/// command has ended and leaves the clean-up to the caller.
///
/// # Safety
///
/// The calling process must be single-threaded and made for this run, as
/// for [`prepare`]: libcontainer clones it.
pub(crate) unsafe fn run_deferred(host: &Host, req: &SandboxRequest) -> Result<(Outcome, Cleanup)> {
    check(host, req, &Layout::new(host, req)?)?;
    let (shape, console) = shape_of(req);
    // SAFETY: our caller upholds the same contract.
    let prepared = unsafe { prepare(host, shape, console, false, true) }?;
    run_prepared(prepared, host, req, None)
}

/// Runs `first`, then `req`, in one container serving several runs, as a
/// warm container serves its second request; returns `req`'s outcome and
/// leaves the clean-up to the caller. Both must fit a warm container (no
/// host network, no terminal).
///
/// # Safety
///
/// As for [`run_deferred`].
pub(crate) unsafe fn run_second(
    host: &Host,
    first: &SandboxRequest,
    req: &SandboxRequest,
) -> Result<(Outcome, Cleanup)> {
    for r in [first, req] {
        check(host, r, &Layout::new(host, r)?)?;
        let (shape, console) = shape_of(r);
        if shape.network || console.is_some() {
            return Err(Error::InvalidRequest(
                "a container serving several runs has no host network and no terminal".into(),
            ));
        }
    }
    if host.runs_per_container < 2 {
        return Err(Error::InvalidRequest(
            "this runner gives every run a container of its own (runs_per_container = 1)".into(),
        ));
    }
    let (shape, _) = shape_of(req);
    // SAFETY: our caller upholds the same contract.
    let prepared = unsafe { prepare(host, shape, None, true, false) }?;
    let (outcome, cleanup) = run_prepared(prepared, host, first, None)?;
    match Reuse::after(cleanup, &outcome) {
        Reuse::Again(prepared) => run_prepared(prepared, host, req, None),
        Reuse::Done(cleanup) => {
            cleanup.finish();
            Err(Error::Container(format!(
                "the first run ended so ({outcome:?}) that its container serves no other"
            )))
        }
    }
}
