//! Who may do what: the farm's policy as the services and storage layers
//! ask it, with denials audited and rate quotas applied.
//!
//! Every call is checked against the identity in its [`RequestContext`]
//! and its instance name. The farm's own calls pass. A caller no
//! authentication layer identified (`Anonymous`: in-process tests and
//! tools) passes only while the policy is the zero-config local one.

use std::sync::Arc;

use corral_auth::{AuditEvent, AuditSink, Clock, Permission, Policy, PolicyHandle, Quotas};

use crate::context::{Identity, RequestContext};
use crate::error::{Error, Result};

/// The policy, the audit log and the quotas, shared by every listener.
#[derive(Clone)]
pub struct Authorization {
    policy: Arc<PolicyHandle>,
    audit: Arc<dyn AuditSink>,
    quotas: Arc<Quotas>,
    clock: Arc<dyn Clock>,
    /// Counts the reloads that replaced the policy; long-lived sessions
    /// (workers) watch it to check their credentials again.
    reloads: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Authorization {
    /// Checks calls against `policy`, writing denials to `audit`.
    pub fn new(
        policy: Arc<PolicyHandle>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let quotas = Arc::new(Quotas::new(&policy.current(), clock.clone()));
        Authorization {
            policy,
            audit,
            quotas,
            clock,
            reloads: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// The zero-config farm: one local user who may do everything.
    pub fn local() -> Self {
        Authorization::new(
            Arc::new(PolicyHandle::new(Policy::local(), None)),
            Arc::new(corral_auth::DiscardAudit),
            Arc::new(corral_auth::SystemClock::default()),
        )
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// The handle, for reloads.
    pub fn policy_handle(&self) -> &Arc<PolicyHandle> {
        &self.policy
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<dyn AuditSink> {
        &self.audit
    }

    /// The quotas (counters for executions and queued operations).
    pub fn quotas(&self) -> &Arc<Quotas> {
        &self.quotas
    }

    /// The clock audit events are stamped with.
    pub fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// Whether the call may hold `permission` on its instance, without
    /// auditing or counting it (Capabilities' `update_enabled`).
    pub fn may(&self, ctx: &RequestContext, permission: Permission) -> bool {
        match ctx.identity() {
            Identity::Farm => true,
            Identity::Anonymous => self.policy().is_local(),
            Identity::Authenticated(p) => self
                .policy()
                .authorize(p, permission, ctx.instance_name())
                .is_ok(),
        }
    }

    /// Checks that the call may hold `permission` on its instance and is
    /// within its tenant's rate for that class of call, charged once per
    /// request however often the request reaches storage. A denial is
    /// PERMISSION_DENIED naming the permission and the instance, and one
    /// audit line; over the rate, RESOURCE_EXHAUSTED with the delay.
    pub fn check(&self, ctx: &RequestContext, permission: Permission) -> Result<()> {
        let policy = self.policy();
        let principal = match ctx.identity() {
            Identity::Farm => return Ok(()),
            Identity::Anonymous if policy.is_local() => return Ok(()),
            Identity::Anonymous => {
                return Err(Error::PermissionDenied(format!(
                    "permission `{permission}` denied on instance {:?}: the caller is not \
                     authenticated",
                    ctx.instance_name()
                )))
            }
            Identity::Authenticated(p) => p,
        };
        let tenant = match policy.authorize(principal, permission, ctx.instance_name()) {
            Ok(tenant) => tenant,
            Err(denied) => {
                let mut event = AuditEvent::denied(self.clock.now(), &denied);
                if let Some(peer) = ctx.peer() {
                    event = event.peer(peer);
                }
                self.audit.record(&event);
                return Err(Error::PermissionDenied(denied.to_string()));
            }
        };
        if !ctx.first_use_of(permission) {
            return Ok(());
        }
        self.quotas
            .check_rate(&tenant, permission)
            .map_err(Error::from)
    }

    /// Checks a farm-wide permission (`worker` to register on the worker
    /// protocol, `admin`), auditing a denial.
    pub fn check_farm(&self, identity: &Identity, permission: Permission) -> Result<()> {
        let policy = self.policy();
        match identity {
            Identity::Farm => Ok(()),
            Identity::Anonymous if policy.is_local() => Ok(()),
            Identity::Anonymous => Err(Error::PermissionDenied(format!(
                "permission `{permission}` denied on the farm: the caller is not authenticated"
            ))),
            Identity::Authenticated(p) => policy.authorize_farm(p, permission).map_err(|denied| {
                self.audit
                    .record(&AuditEvent::denied(self.clock.now(), &denied));
                Error::PermissionDenied(denied.to_string())
            }),
        }
    }

    /// Writes one audit event of `kind` about `identity`, with `detail`.
    pub fn record(&self, kind: corral_auth::AuditKind, identity: &Identity, detail: &str) {
        let mut event = AuditEvent::new(kind, self.clock.now()).detail(detail);
        if let Identity::Authenticated(p) = identity {
            event = event.principal(p);
        }
        self.audit.record(&event);
    }

    /// Reads the policy file again (an inline policy stays as it is): a
    /// policy that loads replaces the one in force, one that does not
    /// leaves it; either way one audit line says which.
    pub fn reload_policy(&self) -> std::result::Result<(), corral_auth::Error> {
        self.policy
            .reload(self.audit.as_ref(), self.clock.as_ref())?;
        self.quotas.update(&self.policy());
        self.reloads.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes each time a reload replaces the policy: a session that
    /// outlives one call (a worker's) checks its principal again then.
    pub fn policy_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization").finish_non_exhaustive()
    }
}
