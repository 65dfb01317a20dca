//! The sandbox: every action runs in its own rootless OCI container, made
//! with youki's libcontainer and hardened with a seccomp filter
//! (seccompiler) and a Landlock ruleset applied just before exec.
//!
//! Layers, bottom up:
//! * [`profile`], [`syscalls`], [`seccomp`]: what the sandbox forbids.
//! * [`spec`], [`executor`], [`cgroups`]: how one container is described,
//!   confined and limited (cgroup v1, cgroup v2 or rlimits, behind
//!   [`cgroups::LimitEnforcer`]).
//! * [`sandbox`]: one run, start to finish, in a single-threaded process.
//! * [`isolate`]: runs [`sandbox::run`] in a forked child (for `runner exec`).
//! * [`zygote`]: the single-threaded helper forked before any thread, which
//!   forks one child per run so runs are concurrent.
//! * [`service`]: the runner protocol (gRPC on a unix socket) on top.

pub mod cancel;
pub mod cgroups;
pub mod client;
pub mod error;
pub mod exec;
pub mod executor;
pub mod host;
pub mod identity;
pub mod isolate;
pub mod loopback;
pub mod nocgroup;
pub mod profile;
pub mod request;
pub mod sandbox;
pub mod seccomp;
pub mod service;
pub mod spec;
pub mod syscalls;
pub mod tty;
pub mod zygote;

pub use error::{Error, Result};
pub use host::{Host, RunnerConfig};
pub use profile::Profile;
pub use request::{LimitHit, Limits, Outcome, Rootfs, SandboxRequest, Stdio};
