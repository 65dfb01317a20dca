//! `corral runner exec`'s resident service: a runner that a first `runner
//! exec` starts and leaves running, which keeps warm containers (as `corral
//! runner --socket` does for a worker) so that the next `runner exec` only
//! hands it a command, instead of making a container of its own (most of a
//! cold exec's time: libcontainer's create and its clones of this binary).
//! It leaves after `exec_service_idle_secs` without a run, when its socket
//! is removed or replaced, or on SIGTERM.
//!
//! A call is one connection on a `SOCK_SEQPACKET` socket in a directory
//! only its user may enter ([`Place`]): the caller sends a [`Call`] as JSON
//! with its own standard streams attached (`SCM_RIGHTS`), so the command
//! writes to the caller's very terminal, pipe or file; the service answers
//! with the outcome or an error, then removes the throwaway scratch
//! directory if asked. The service serves only its own user (the peer's
//! credentials); a caller that goes away cancels its run, as a worker's
//! does. Its runs are those of the zygote, with every layer of the
//! sandbox: the service changes where a container is made, not what it is.

mod client;
mod dir_watch;
mod place;
mod server;
mod skeleton;
mod spares;
mod twin_watch;
mod walks;

use serde::{Deserialize, Serialize};

use crate::request::{Outcome, SandboxRequest};

pub use client::{call, connect_or_start};
pub use place::Place;
pub use server::serve_blocking;

/// The largest call the service reads (the zygote's own bound: requests
/// carry argv and environment).
const MAX_CALL: usize = 4 << 20;

/// What a caller sends.
#[derive(Debug, Serialize, Deserialize)]
struct Call {
    /// The run, its streams [`crate::Stdio::Passed`] (the descriptors sent
    /// with the call), [`crate::Stdio::Null`] or files.
    request: SandboxRequest,
    /// Where its scratch directory comes from.
    scratch: Scratch,
}

/// Where a call's scratch directory comes from.
#[derive(Debug, Serialize, Deserialize)]
pub enum Scratch {
    /// The caller's, named in the request, and left to the caller.
    Given,
    /// The service makes it, ahead of the call where it can (a spare made
    /// after the last call with the same twins), with owned twins of the
    /// directories of `give` ([`crate::dir_owner`]); the outcome's
    /// `upper_dir` is in it. It is removed after the answer unless `keep`.
    Made {
        /// The input directory whose directories get owned twins.
        give: Option<std::path::PathBuf>,
        /// Leave it for the caller.
        keep: bool,
    },
}

/// What the service answers.
type Answer = std::result::Result<Outcome, String>;
