//! Seeing the farm: Prometheus metrics, health endpoints and
//! server-rendered pages, served over HTTP on the same port as gRPC.
//!
//! * [`metrics`]: the process's registry ([`Metrics`]) and `/metrics`.
//!   The counters live where they move (the CAS and action-cache layers
//!   in corral-cas, the scheduler's observer, the worker's executor
//!   layer, [`rpc`] here); each registers into the registry it is given.
//! * [`rpc`]: a tower layer counting gRPC calls by service, method and
//!   code.
//! * [`dispatch`]: gRPC and HTTP on one port, split by content type.
//! * [`health`]: `/healthz` and `/readyz`.
//! * [`router`] and [`pages`]: the farm, operation, action, CAS,
//!   executions and invocations pages, and admin actions with a
//!   confirmation step. Every value is escaped ([`html`]); no page needs
//!   script, and the Content-Security-Policy allows none.
//! * [`access`]: the seams authentication plugs into: who may take admin
//!   actions ([`AdminPolicy`]) and under whose identity pages read the
//!   CAS ([`ContextSource`]).
//! * [`trace_export`]: optional OpenTelemetry trace export over OTLP/gRPC
//!   (`[tracing]`).
//! * [`wiring`]: what `corral server` and `corral up` call.
//!
//! docs/observability.md lists every metric, label and page.

#![deny(missing_docs)]

pub mod access;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod health;
pub mod html;
pub mod links;
pub mod metrics;
pub mod pages;
pub mod router;
pub mod rpc;
pub mod serve;
pub mod trace_export;
pub mod web;
pub mod wiring;

pub use access::{
    AdminAction, AdminPolicy, AuthorizedAdmin, ContextSource, NoAdmin, OpenAdmin, PrincipalContext,
};
pub use config::HttpConfig;
pub use metrics::Metrics;
pub use trace_export::{TraceExport, TracingConfig};
pub use web::{Web, WebBuilder};
pub use wiring::Observability;
