//! The audit log: one JSON object per line for each denial, action-cache
//! write, worker registration, loss and refused report, policy reload and
//! admin action, with who, which tenant and instance, which digest, from
//! which peer, with which credential.
//!
//! Services build an [`AuditEvent`] and hand it to an [`AuditSink`]: the
//! server's is a [`FileAuditLog`]; tests collect events in a
//! [`MemoryAuditLog`].

mod file_audit_log;
mod memory_audit_log;
mod timestamp;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use file_audit_log::FileAuditLog;
pub use memory_audit_log::MemoryAuditLog;

use crate::authenticator::AuthError;
use crate::config::AuditConfig;
use crate::credentials::Credentials;
use crate::denied::Denied;
use crate::error::Result;
use crate::permission::Permission;
use crate::principal::{Principal, PrincipalKind};
use crate::tenant_id::TenantId;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A call without a valid credential (UNAUTHENTICATED).
    Unauthenticated,
    /// A call refused by the policy (PERMISSION_DENIED).
    Denied,
    /// A result written to the action cache: by the farm after an
    /// execution (with its provenance in `fields`) or by a client holding
    /// `ac.write`.
    AcWrite,
    /// A worker registered on the worker protocol.
    WorkerRegistered,
    /// A worker's stream ended or timed out.
    WorkerLost,
    /// A worker reported a result for an action it does not hold.
    ReportRefused,
    /// A worker's credentials were revoked.
    WorkerRevoked,
    /// The policy was reloaded (or a reload failed: see `detail`).
    PolicyReload,
    /// An admin action (drain, kill, audit read).
    Admin,
}

/// One audit line. Empty fields are left out of the JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When, as RFC 3339 UTC with nanoseconds.
    #[serde(with = "timestamp")]
    pub time: SystemTime,
    /// What happened.
    pub event: AuditKind,
    /// Who (the principal's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The principal's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_kind: Option<PrincipalKind>,
    /// The credential that proved the principal (token id, certificate
    /// fingerprint, uid, JWT key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// The tenant concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The instance name of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The digest concerned (an action's, a blob's), `hash/size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The peer: `ADDR:PORT`, or `unix` (with `uid=N` when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The permission asked for (denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Permission>,
    /// A sentence: why a call was refused, what an admin did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Event-specific values, e.g. an action-cache write's provenance
    /// (`worker`, `sandbox_profile`, `corral_version`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl AuditEvent {
    /// An event with only its time and kind; the builder methods add the
    /// rest.
    pub fn new(event: AuditKind, time: SystemTime) -> Self {
        AuditEvent {
            time,
            event,
            principal: None,
            principal_kind: None,
            credential_id: None,
            tenant: None,
            instance: None,
            digest: None,
            peer: None,
            permission: None,
            detail: None,
            fields: BTreeMap::new(),
        }
    }

    /// A denial: principal, permission, instance, tenant and reason.
    pub fn denied(time: SystemTime, denied: &Denied) -> Self {
        let mut event = Self::new(AuditKind::Denied, time)
            .principal(&denied.principal)
            .permission(denied.permission)
            .detail(denied.to_string());
        event.instance = denied.instance.clone();
        event.tenant = denied.tenant.as_ref().map(|t| t.to_string());
        event
    }

    /// A call without a valid credential, from `credentials`' peer.
    pub fn unauthenticated(time: SystemTime, error: &AuthError, credentials: &Credentials) -> Self {
        Self::new(AuditKind::Unauthenticated, time)
            .detail(error.to_string())
            .peer_of(credentials)
    }

    /// Sets who: name, kind and credential id.
    pub fn principal(mut self, principal: &Principal) -> Self {
        self.principal = Some(principal.name().to_string());
        self.principal_kind = Some(principal.kind());
        self.credential_id = principal.credential_id().map(str::to_string);
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: &TenantId) -> Self {
        self.tenant = Some(tenant.to_string());
        self
    }

    /// Sets the instance name.
    pub fn instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_string());
        self
    }

    /// Sets the digest.
    pub fn digest(mut self, digest: impl Display) -> Self {
        self.digest = Some(digest.to_string());
        self
    }

    /// Sets the peer.
    pub fn peer(mut self, peer: impl Display) -> Self {
        self.peer = Some(peer.to_string());
        self
    }

    /// Sets the peer from a request's credentials.
    pub fn peer_of(mut self, credentials: &Credentials) -> Self {
        self.peer = credentials.peer_label();
        self
    }

    /// Sets the permission.
    pub fn permission(mut self, permission: Permission) -> Self {
        self.permission = Some(permission);
        self
    }

    /// Sets the detail sentence.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds an event-specific field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The event as one JSON line, without the newline.
    pub fn to_json(&self) -> String {
        // Serialising this struct cannot fail: every field is a string, a
        // number or a map of strings.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    /// Records one event. It does not fail the call being audited: a sink
    /// that cannot write logs the failure and counts it.
    fn record(&self, event: &AuditEvent);

    /// Opens the log's file again, after a rotation moved the old one away
    /// (the server does it on SIGHUP). Sinks without a file do nothing.
    fn reopen(&self) -> Result<()> {
        Ok(())
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, event: &AuditEvent) {
        (**self).record(event)
    }

    fn reopen(&self) -> Result<()> {
        (**self).reopen()
    }
}

/// A sink that drops every event (`[auth.audit] enabled = false`).
#[derive(Debug, Default)]
pub struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, _: &AuditEvent) {}
}

/// The sink `[auth.audit]` asks for; call [`crate::config::AuthConfig::resolve_paths`]
/// first so that a relative path is under the data directory.
pub fn open_audit_log(config: &AuditConfig) -> Result<Arc<dyn AuditSink>> {
    if !config.enabled() {
        return Ok(Arc::new(DiscardAudit));
    }
    Ok(Arc::new(FileAuditLog::open(&config.path())?))
}

#[cfg(test)]
mod tests;
