//! Enforcing quotas: per tenant, a token bucket per class of call, a
//! counter of queued operations and the check of owned CAS bytes. (The cap
//! on running executions is kept by the scheduler's queue, which knows
//! what runs: over it, actions wait instead of being refused.) Over a quota the
//! caller gets [`QuotaExceeded`] with a retry delay; the services answer
//! RESOURCE_EXHAUSTED with it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::permission::Permission;
use crate::policy::Policy;
use crate::quota::Quota;
use crate::tenant_id::TenantId;
use crate::token_bucket::TokenBucket;

/// The delay suggested when a tenant has too many operations queued: their
/// number changes as actions start and finish.
pub const COUNTER_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The delay suggested when a tenant owns too many CAS bytes: only
/// eviction or an operator frees them.
pub const CAS_BYTES_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Which quota was hit, with its limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QuotaKind {
    /// Calls per second of one class.
    Rate {
        /// The class (the permission the call needs).
        class: Permission,
        /// The configured rate.
        per_second: f64,
    },
    /// Operations queued at once.
    QueuedOperations(u64),
    /// Bytes of CAS blobs owned.
    CasBytes(u64),
}

/// A refused call: which tenant, which quota, and when to try again.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaExceeded {
    /// The tenant over its quota.
    pub tenant: TenantId,
    /// The quota.
    pub quota: QuotaKind,
    /// When a retry may pass (REAPI clients read it from `RetryInfo`).
    pub retry_after: Duration,
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant `{}` is over its quota of ", self.tenant)?;
        match self.quota {
            QuotaKind::Rate { class, per_second } => {
                write!(f, "{per_second} `{class}` calls per second")?
            }
            QuotaKind::QueuedOperations(n) => write!(f, "{n} queued operations")?,
            QuotaKind::CasBytes(n) => write!(f, "{n} CAS bytes")?,
        }
        write!(f, "; retry in {:.3} s", self.retry_after.as_secs_f64())
    }
}

impl std::error::Error for QuotaExceeded {}

#[derive(Debug, Default)]
struct TenantState {
    limits: Quota,
    buckets: HashMap<Permission, TokenBucket>,
    queued: u64,
}

type Shared = Arc<Mutex<TenantState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, TenantState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The quota state of every tenant.
pub struct Quotas {
    clock: Arc<dyn Clock>,
    tenants: RwLock<HashMap<TenantId, Shared>>,
}

/// What one tenant uses now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Queued operations holding a permit.
    pub queued: u64,
}

/// One queued operation, counted until dropped.
#[must_use = "the count is released when the permit is dropped"]
pub struct QuotaPermit {
    state: Shared,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.queued = state.queued.saturating_sub(1);
    }
}

impl Quotas {
    /// The limits of `policy`'s tenants; a tenant it does not define (the
    /// local tenant, for one) is unlimited.
    pub fn new(policy: &Policy, clock: Arc<dyn Clock>) -> Quotas {
        let quotas = Quotas {
            clock,
            tenants: RwLock::new(HashMap::new()),
        };
        quotas.update(policy);
        quotas
    }

    /// Takes the limits of a reloaded policy, keeping the counts and the
    /// buckets' levels.
    pub fn update(&self, policy: &Policy) {
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        for id in policy.tenants() {
            tenants.entry(id.clone()).or_default();
        }
        for (id, state) in tenants.iter() {
            let mut state = lock(state);
            state.limits = policy.quota(id).cloned().unwrap_or_default();
            let limits = state.limits.rates.clone();
            state.buckets.retain(|class, _| limits.contains_key(class));
        }
    }

    fn state(&self, tenant: &TenantId) -> Shared {
        if let Some(state) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return state.clone();
        }
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.clone())
            .or_default()
            .clone()
    }

    /// Counts one call of `class` by `tenant` against its rate.
    pub fn check_rate(&self, tenant: &TenantId, class: Permission) -> Result<(), QuotaExceeded> {
        let state = self.state(tenant);
        let mut state = lock(&state);
        let Some(rate) = state.limits.rates.get(&class).copied() else {
            return Ok(());
        };
        let now = self.clock.monotonic();
        let bucket = state
            .buckets
            .entry(class)
            .or_insert_with(|| TokenBucket::new(&rate, now));
        bucket
            .try_take(&rate, now)
            .map_err(|retry_after| QuotaExceeded {
                tenant: tenant.clone(),
                quota: QuotaKind::Rate {
                    class,
                    per_second: rate.per_second,
                },
                retry_after,
            })
    }

    /// A permit for one more queued operation of `tenant` (Execute asks
    /// for it; over the quota it answers RESOURCE_EXHAUSTED).
    pub fn try_enqueue(&self, tenant: &TenantId) -> Result<QuotaPermit, QuotaExceeded> {
        let shared = self.state(tenant);
        let mut state = lock(&shared);
        if let Some(limit) = state.limits.queued_operations {
            if state.queued >= limit {
                return Err(QuotaExceeded {
                    tenant: tenant.clone(),
                    quota: QuotaKind::QueuedOperations(limit),
                    retry_after: COUNTER_RETRY_AFTER,
                });
            }
        }
        state.queued += 1;
        drop(state);
        Ok(QuotaPermit { state: shared })
    }

    /// Whether `tenant`, owning `owned` CAS bytes, may own `adding` more.
    pub fn check_cas_bytes(
        &self,
        tenant: &TenantId,
        owned: u64,
        adding: u64,
    ) -> Result<(), QuotaExceeded> {
        let state = self.state(tenant);
        let limit = lock(&state).limits.cas_bytes;
        match limit {
            Some(limit) if owned.saturating_add(adding) > limit => Err(QuotaExceeded {
                tenant: tenant.clone(),
                quota: QuotaKind::CasBytes(limit),
                retry_after: CAS_BYTES_RETRY_AFTER,
            }),
            _ => Ok(()),
        }
    }

    /// What `tenant` uses now.
    pub fn usage(&self, tenant: &TenantId) -> QuotaUsage {
        let state = self.state(tenant);
        let state = lock(&state);
        QuotaUsage {
            queued: state.queued,
        }
    }
}

#[cfg(test)]
mod tests;
