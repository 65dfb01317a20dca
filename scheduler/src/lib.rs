//! REAPI Execution and Operations services, queues, platform matching and worker sessions.

pub mod clock;
pub mod config;
pub mod core;
pub mod error;
pub mod metrics;
pub mod observer;
pub mod operations;
pub mod platform;
pub mod queue;
mod scheduler;
pub mod service;
pub mod status;
pub mod tenancy;
pub mod view;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{PropertyPolicy, RootfsChoice, SchedulerConfig};
pub use core::{Stats, WorkerInfo};
pub use error::{Error, Result};
pub use scheduler::Scheduler;
pub use tenancy::{Tenancy, Unrestricted};
