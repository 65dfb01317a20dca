//! What the scheduler asks of the farm's tenancy policy.
//!
//! Fair share is kept between tenants: a tenant with many instance names
//! gets no more of the farm than one with a single name.
//!
//! A tenant may be confined to pools of workers, so that one tenant's
//! actions never run on another's machines. The scheduler does not read
//! the policy itself: it asks a [`Tenancy`] which pools an instance name's
//! actions may use and which pool an authenticated worker belongs to, and
//! turns the answers into platform matching (the reserved
//! [`crate::platform::POOL_KEY`] property), so queues, classes and
//! fairness need nothing new.

/// The tenancy questions the scheduler asks.
pub trait Tenancy: Send + Sync + 'static {
    /// The tenant `instance` belongs to; fair share is kept between
    /// tenants (between instance names when `None`).
    fn tenant_of(&self, instance: &str) -> Option<String>;
    /// The pools actions of `instance` may run in; `None`: any worker.
    fn pools_for(&self, instance: &str) -> Option<Vec<String>>;
    /// The pools of the worker whose connection proved `identity`; none:
    /// the worker is in no pool (only unrestricted actions reach it).
    fn pools_of_worker(&self, identity: &str) -> Vec<String>;
    /// How many of `tenant`'s actions may run at once (its
    /// `concurrent_executions` quota); more wait in the queue while other
    /// tenants' actions run. Default: no cap.
    fn concurrent_executions(&self, tenant: &str) -> Option<u64> {
        let _ = tenant;
        None
    }
}

/// No tenancy: every action may run on every worker.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unrestricted;

impl Tenancy for Unrestricted {
    fn tenant_of(&self, _: &str) -> Option<String> {
        None
    }
    fn pools_for(&self, _: &str) -> Option<Vec<String>> {
        None
    }
    fn pools_of_worker(&self, _: &str) -> Vec<String> {
        Vec::new()
    }
}

/// A tenant's place in its `queued_operations` quota, held by a queued job
/// and given back when the job starts or goes away.
pub struct QueuePermit(pub corral_auth::QuotaPermit);

impl std::fmt::Debug for QueuePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueuePermit")
    }
}
