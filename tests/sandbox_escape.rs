//! The escape suite: from inside an action, try what an attacker would.
//! Each attempt must fail, be reported (in the outcome or in the action's
//! own output), and leave the host unchanged.
//!
//! Runs as root (CI does) with Debian's busybox-static, bubblewrap's
//! neighbours and python3 installed; a missing prerequisite fails the test
//! with a message naming it. Each test forks its sandbox from the test
//! process (nextest runs one test per process, so it is single-threaded
//! enough: the forked child only runs the sandbox code).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Each attempt runs in a container of its own.
const SECOND_RUN: bool = false;

include!("sandbox_escape/suite.rs");
