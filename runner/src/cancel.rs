//! Cancelling a run whose caller went away.
//!
//! Each run happens in its own child of the zygote. When the runner's
//! caller drops a `Run` call (the worker cancelled the action, or lost its
//! scheduler stream), the service tells the zygote, which sends that child
//! [`SIGNAL`]. The child's handler only sets a flag; its wait loop sees the
//! flag (the signal also interrupts its `poll`) and kills the container's
//! PID 1, which takes the whole PID namespace with it, then cleans up as
//! after any other end. The same happens when the zygote dies (the
//! runner was killed): the signal is also the child's parent-death signal.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::{Error, Result};

/// The signal the zygote sends a run's child to cancel it.
pub const SIGNAL: Signal = Signal::SIGUSR1;

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Installs the handler in a run's child, before anything else happens in
/// it. Without `SA_RESTART`, so a blocking `poll` returns `EINTR`.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; the previous disposition is not needed.
    unsafe { sigaction(SIGNAL, &action) }
        .map(drop)
        .map_err(|e| Error::sys("sigaction for cancel", e))
}

/// [`install`], and ask the kernel to send the cancel signal when the
/// zygote (`parent`) dies: a runner killed outright (its zygote dies with
/// it) must not leave containers running.
pub fn install_with_parent(parent: nix::unistd::Pid) -> Result<()> {
    install()?;
    // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, SIGNAL as libc::c_int) } != 0 {
        return Err(Error::sys(
            "prctl PR_SET_PDEATHSIG",
            nix::errno::Errno::last(),
        ));
    }
    // The zygote may have died before the prctl took effect.
    if nix::unistd::getppid() != parent {
        REQUESTED.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Whether this run was cancelled.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Forgets a cancel: a warm child serving its next run starts afresh.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
