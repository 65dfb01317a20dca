//! Identity, authentication, per-tenant authorization, quotas and the audit
//! log of a multi-tenant Corral farm. A leaf crate: it depends on no other
//! Corral crate, so that the storage crate can carry its identity types.
//!
//! The flow of one call, as the services wire it:
//!
//! 1. [`Credentials::from_request`] gathers what the connection proves (the
//!    `authorization` header, the [`PeerCertificates`] the TLS layer
//!    inserted, UNIX peer credentials, the peer address).
//! 2. An [`Authenticator`] (built by [`build_authenticator`] from
//!    `[auth.authentication]`, or [`LocalAuthenticator`] when no policy is
//!    configured) turns them into a [`Principal`], or an [`AuthError`]
//!    (UNAUTHENTICATED).
//! 3. [`Policy::authorize`] says whether the principal holds a
//!    [`Permission`] on the instance name, and which [`TenantId`] owns it,
//!    or [`Denied`] (PERMISSION_DENIED naming both).
//! 4. [`Quotas`] counts the call against the tenant's rate and counters, or
//!    answers [`QuotaExceeded`] with a retry delay (RESOURCE_EXHAUSTED).
//! 5. Denials and the other events worth keeping go to an [`AuditSink`] as
//!    [`AuditEvent`]s.
//!
//! Configuration is the `[auth]` table ([`config::AuthConfig`]), documented
//! in docs/security.md.
#![deny(missing_docs)]

mod audit;
mod authenticator;
mod authn;
mod clock;
pub mod config;
mod credentials;
mod denied;
mod error;
mod instance_prefix;
mod pattern;
mod permission;
mod policy;
mod policy_handle;
mod principal;
mod quota;
mod quotas;
mod tenant_id;
mod token_bucket;
mod watched_file;

pub use audit::{
    open_audit_log, AuditEvent, AuditKind, AuditSink, DiscardAudit, FileAuditLog, MemoryAuditLog,
};
pub use authenticator::{
    build_authenticator, AllOf, AnyOf, AuthError, Authenticator, LocalAuthenticator,
};
pub use authn::{
    JwtAuthenticator, MtlsAuthenticator, PeerCredentialsAuthenticator, StaticTokenAuthenticator,
    DEFAULT_CERT_FIELDS, MIN_TOKEN_LEN,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use credentials::{Credentials, PeerAddress, PeerCertificates};
pub use denied::{Denied, DenyReason};
pub use error::{Error, Result};
pub use instance_prefix::InstancePrefix;
pub use pattern::Pattern;
pub use permission::{Permission, PermissionSet};
pub use policy::{Policy, DEFAULT_POOL, DEFAULT_WORKER_PERMISSIONS};
pub use policy_handle::PolicyHandle;
pub use principal::{Principal, PrincipalKind, FARM_PRINCIPAL, LOCAL_PRINCIPAL};
pub use quota::{Quota, Rate};
pub use quotas::{
    QuotaExceeded, QuotaKind, QuotaPermit, QuotaUsage, Quotas, CAS_BYTES_RETRY_AFTER,
    COUNTER_RETRY_AFTER,
};
pub use tenant_id::{TenantId, LOCAL_TENANT};
pub use watched_file::{Parser, WatchedFile};
