//! The escape suite again (`sandbox_escape/suite.rs`), each attempt made as
//! the second run of a container that serves several (the runner's
//! `runs_per_container`, as warm containers serve requests): whatever a
//! container keeps from one run to the next must not open a way out.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Each attempt is a container's second run.
const SECOND_RUN: bool = true;

include!("sandbox_escape/suite.rs");
