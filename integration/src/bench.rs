//! `corral bench …`: each benchmark measures Corral next to a reference in
//! the same run, so the figures in `docs/benchmarks.md` compare like with like.

pub mod cas;
pub mod e2e;
pub mod execute;
pub mod init_phases;
pub mod overhead;
pub mod sandbox;
pub mod scheduler;
pub mod staging;
pub mod stats;
