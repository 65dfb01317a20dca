//! The sandbox: every action runs in its own rootless OCI container, made
//! with youki's libcontainer and hardened with a seccomp filter
//! (seccompiler) and a Landlock ruleset applied just before exec.
//!
//! What other crates use:
//! * [`service::serve_blocking`]: `corral runner --socket`, the runner
//!   protocol (gRPC on a unix socket) over a single-threaded container
//!   helper;
//! * [`exec::run`]: `corral runner exec`, one sandbox by hand, handed to
//!   [`resident`], the service a first `runner exec` starts and leaves
//!   running with warm containers;
//! * [`isolate::run_forked`]: one sandbox from a forked child (the escape
//!   suite);
//! * [`cgroups::delegate`]: `corral runner delegate`;
//! * [`client::connect`]: a client of a runner's socket (the benchmark);
//! * the request and outcome types, [`Host`] and [`RunnerConfig`].
//!
//! Inside, bottom up: the profile and its seccomp programs (what the
//! sandbox forbids); the OCI spec, the executor that runs inside the
//! container, and the limit enforcers behind one trait (cgroup v1, cgroup
//! v2 or rlimits); one run start to finish in a single-threaded process;
//! the forked child that hosts it; and the zygote, forked before any
//! thread, which forks one child per run so that runs are concurrent.

#![deny(missing_docs)]

mod cancel;
pub mod cgroups;
pub mod client;
mod coarse_clock;
mod control;
mod dir_owner;
mod error;
pub mod exec;
mod executor;
mod host;
mod identity;
mod inotify;
mod inside;
pub mod isolate;
mod loopback;
mod nocgroup;
mod packet;
mod plan;
mod profile;
mod request;
pub mod resident;
mod sandbox;
mod seccomp;
pub mod service;
mod spec;
mod syscalls;
#[cfg(test)]
mod testkit;
mod tty;
mod zygote;

pub use error::{Error, Result};
pub use host::{Host, RunnerConfig};
pub use profile::Profile;
pub use request::{
    Descriptor, LimitHit, Limits, Outcome, Rootfs, SandboxRequest, Stdio, UpperWatch,
};
