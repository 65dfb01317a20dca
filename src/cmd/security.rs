//! The `[auth]` table made into the pieces the server wires in: the
//! policy with its audit log and quotas, an authenticator per listener,
//! and the policy as the storage layers and the scheduler ask it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use corral_auth::config::AuthConfig;
use corral_auth::{
    build_authenticator, Clock, LocalAuthenticator, Policy, PolicyHandle, Principal, PrincipalKind,
    SystemClock,
};
use corral_cas::factory::Confinement;
use corral_cas::store::{OwnershipIndex, TenantOf};
use corral_cas::{Authorization, Storage};

use super::authenticate::Authenticate;

/// Everything `[auth]` configures, ready to wire.
pub struct Security {
    /// Checks every call; shared by storage, services and scheduler.
    pub authorization: Authorization,
    /// The client port's authentication.
    pub clients: Authenticate,
    /// The workers' listener's authentication.
    pub workers: Authenticate,
    /// Whether a policy is configured (else the zero-config local farm).
    pub has_policy: bool,
}

impl Security {
    /// Loads the policy, the audit log and both authenticators; relative
    /// paths are under `data`. Without a policy: the local farm, where
    /// every loopback caller is the local user and workers are who the
    /// kernel lets onto the workers' socket.
    pub fn load(mut config: AuthConfig, data: &Path) -> anyhow::Result<Security> {
        config.resolve_paths(data);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let policy = config.load_policy().context("[auth] policy")?;
        let has_policy = policy.is_some();
        let audit = corral_auth::open_audit_log(&config.audit).context("[auth.audit]")?;
        let handle = Arc::new(PolicyHandle::new(
            policy.unwrap_or_else(Policy::local),
            config.policy_file.clone(),
        ));
        let client_authenticator = if has_policy {
            build_authenticator(
                config.client_authentication()?,
                PrincipalKind::Person,
                clock.clone(),
                "auth.authentication",
            )?
        } else {
            Arc::new(LocalAuthenticator)
        };
        let worker_authenticator = build_authenticator(
            &config.worker_authentication(),
            PrincipalKind::Worker,
            clock.clone(),
            "auth.worker_authentication",
        )?;
        Ok(Security {
            authorization: Authorization::new(handle, audit.clone(), clock.clone()),
            clients: Authenticate::new(client_authenticator, audit.clone(), clock.clone()),
            workers: Authenticate::new(worker_authenticator, audit, clock),
            has_policy,
        })
    }

    /// `storage` with every call authorized, each tenant seeing only its
    /// own blobs (with a policy; ownership kept under `data/ownership`),
    /// and results of workers the policy no longer lists not served.
    pub fn confine(&self, storage: Storage, data: &Path) -> anyhow::Result<Storage> {
        let trusted = self.authorization.policy_handle().clone();
        storage
            .revoked_workers
            .set_trust(Arc::new(move |identity: &str| {
                let policy = trusted.current();
                policy.is_local()
                    || !policy
                        .worker_pools(&Principal::new(PrincipalKind::Worker, identity, None))
                        .is_empty()
            }));
        let visibility = if self.has_policy {
            let dir = data.join("ownership");
            let index = OwnershipIndex::open(&dir)
                .with_context(|| format!("opening the CAS ownership index {}", dir.display()))?;
            let tenants: Arc<dyn TenantOf> = Arc::new(PolicyTenants(self.authorization.clone()));
            Some((tenants, Arc::new(index)))
        } else {
            None
        };
        storage
            .confine(Confinement {
                authorization: self.authorization.clone(),
                visibility,
            })
            .context("giving recorded CAS ownership back to the store")
    }

    /// On every SIGHUP until `stop`: opens the audit log's file again (so
    /// that logrotate can move it away) and reloads the policy file (a
    /// policy given inline is reloaded with the server).
    pub fn reload_on_sighup(&self, stop: tokio_util::sync::CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; the policy and the audit log are reopened only with the server");
                return;
            }
        };
        let authorization = self.authorization.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hangups.recv() => on_hangup(&authorization),
                }
            }
        });
    }

    /// The policy as the scheduler asks it (tenants, pools).
    pub fn scheduler_tenancy(&self) -> Arc<dyn corral_scheduler::Tenancy> {
        Arc::new(PolicyTenants(self.authorization.clone()))
    }
}

/// What a SIGHUP does; see [`Security::reload_on_sighup`].
fn on_hangup(authorization: &Authorization) {
    match authorization.audit().reopen() {
        Ok(()) => tracing::info!("audit log reopened"),
        Err(e) => tracing::error!(error = %e, "audit log not reopened; events go to the old file"),
    }
    if authorization.policy_handle().file().is_none() {
        return;
    }
    match authorization.reload_policy() {
        Ok(()) => tracing::info!("policy reloaded"),
        Err(e) => tracing::warn!(error = %e, "policy not reloaded; the previous one stays"),
    }
}

/// The policy's tenants and quotas, for the CAS's visibility layer and
/// the scheduler.
struct PolicyTenants(Authorization);

impl TenantOf for PolicyTenants {
    fn tenant_of(&self, instance: &str) -> Option<Arc<str>> {
        self.0
            .policy()
            .tenant_of(instance)
            .map(|t| Arc::from(t.as_str()))
    }

    fn is_shared_readable(&self, tenant: &str) -> bool {
        let policy = self.0.policy();
        policy
            .tenant(tenant)
            .is_some_and(|t| policy.is_shared_readable(t))
    }

    fn shared_readable(&self) -> Vec<Arc<str>> {
        self.0
            .policy()
            .shared_readable_tenants()
            .map(|t| Arc::from(t.as_str()))
            .collect()
    }

    fn check_cas_bytes(&self, tenant: &str, owned: u64, adding: u64) -> corral_cas::Result<()> {
        let policy = self.0.policy();
        let Some(id) = policy.tenant(tenant) else {
            return Ok(());
        };
        Ok(self.0.quotas().check_cas_bytes(id, owned, adding)?)
    }
}

impl corral_scheduler::Tenancy for PolicyTenants {
    fn tenant_of(&self, instance: &str) -> Option<String> {
        self.0.policy().tenant_of(instance).map(|t| t.to_string())
    }

    fn pools_for(&self, instance: &str) -> Option<Vec<String>> {
        let policy = self.0.policy();
        let tenant = policy.tenant_of(instance)?;
        policy.tenant_worker_pools(tenant).map(<[String]>::to_vec)
    }

    fn pools_of_worker(&self, identity: &str) -> Vec<String> {
        let policy = self.0.policy();
        if policy.is_local() {
            return Vec::new();
        }
        policy.worker_pools(&Principal::new(PrincipalKind::Worker, identity, None))
    }

    fn concurrent_executions(&self, tenant: &str) -> Option<u64> {
        let policy = self.0.policy();
        policy.quota(policy.tenant(tenant)?)?.concurrent_executions
    }
}
