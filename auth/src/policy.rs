//! The compiled policy: which tenant owns an instance name, and whether a
//! principal holds a permission there.
//!
//! Deny by default: an instance name under no tenant's prefix, a person
//! matching no grant, a worker matching no `[[workers]]` entry all get
//! nothing. Only [`Policy::local`], the zero-config policy, gives anything
//! without being told to.

mod compile;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::PolicyConfig;
use crate::denied::{Denied, DenyReason};
use crate::error::{Error, Result};
use crate::instance_prefix::{candidate_prefixes, InstancePrefix};
use crate::pattern::Pattern;
use crate::permission::{Permission, PermissionSet};
use crate::principal::{Principal, PrincipalKind};
use crate::quota::Quota;
use crate::tenant_id::TenantId;

/// The pool of a worker entry that names none, and of every worker under
/// the zero-config policy.
pub const DEFAULT_POOL: &str = "default";

/// What a worker holds when its entry lists no permissions.
pub const DEFAULT_WORKER_PERMISSIONS: [Permission; 3] = [
    Permission::Worker,
    Permission::CasRead,
    Permission::CasWrite,
];

/// A checked policy. Cheap to share behind an `Arc`; a reload builds a new
/// one.
#[derive(Debug)]
pub struct Policy {
    /// The zero-config policy: one tenant owning every instance name.
    local: bool,
    tenants: BTreeMap<TenantId, Tenant>,
    /// Prefix → owner, so that [`Policy::tenant_of`] costs one lookup per
    /// component of the instance name.
    owners: HashMap<String, TenantId>,
    /// The tenants marked `shared_readable`, found once: every CAS call
    /// of a farm with tenants asks for them.
    shared_readable: Vec<TenantId>,
    grants: Vec<Grant>,
    workers: Vec<WorkerEntry>,
}

#[derive(Debug, Default)]
struct Tenant {
    prefixes: Vec<InstancePrefix>,
    shared_readable: bool,
    worker_pools: Option<Vec<String>>,
    quota: Quota,
}

#[derive(Debug)]
enum GrantScope {
    /// `tenant = "*"`: every tenant and the farm itself.
    Farm,
    Tenant(TenantId),
}

#[derive(Debug)]
struct Grant {
    principals: Vec<Pattern>,
    scope: GrantScope,
    permissions: PermissionSet,
}

#[derive(Debug)]
struct WorkerEntry {
    principals: Vec<Pattern>,
    pools: Vec<String>,
    permissions: PermissionSet,
}

fn any_match(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

impl Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Policy {
    /// The zero-config policy, for a farm with no policy configured (which
    /// the server allows on loopback only): every instance name belongs to
    /// the one tenant `local`; the local user holds every permission but
    /// `worker`; workers hold the default worker permissions in the default
    /// pool; no quotas.
    pub fn local() -> Policy {
        let mut tenants = BTreeMap::new();
        tenants.insert(TenantId::local(), Tenant::default());
        Policy {
            local: true,
            tenants,
            owners: HashMap::new(),
            shared_readable: Vec::new(),
            grants: Vec::new(),
            workers: vec![WorkerEntry {
                principals: vec![Pattern::everything()],
                pools: vec![DEFAULT_POOL.to_string()],
                permissions: PermissionSet::of(&DEFAULT_WORKER_PERMISSIONS),
            }],
        }
    }

    /// Compiles and checks a policy table.
    pub fn from_config(config: &PolicyConfig) -> Result<Policy> {
        compile::compile(config)
    }

    /// Parses and compiles a policy document; `what` names it in errors.
    pub fn from_toml(text: &str, what: &str) -> Result<Policy> {
        let config: PolicyConfig = toml::from_str(text).map_err(|source| Error::Toml {
            what: what.to_string(),
            source,
        })?;
        Self::from_config(&config)
    }

    /// Reads, parses and compiles a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Whether this is the zero-config policy.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The tenant owning `instance`, if any.
    pub fn tenant_of(&self, instance: &str) -> Option<&TenantId> {
        if self.local {
            return self.tenants.keys().next();
        }
        candidate_prefixes(instance).find_map(|prefix| self.owners.get(prefix))
    }

    /// Every tenant, by name.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants.keys()
    }

    /// The tenant called `name`, if the policy defines it.
    pub fn tenant(&self, name: &str) -> Option<&TenantId> {
        self.tenants.get_key_value(name).map(|(id, _)| id)
    }

    /// The instance prefixes `tenant` owns (none for the local tenant,
    /// which owns every name).
    pub fn prefixes(&self, tenant: &TenantId) -> &[InstancePrefix] {
        self.tenants
            .get(tenant)
            .map(|t| t.prefixes.as_slice())
            .unwrap_or_default()
    }

    /// Whether every tenant may read the blobs `tenant` owns.
    pub fn is_shared_readable(&self, tenant: &TenantId) -> bool {
        self.tenants.get(tenant).is_some_and(|t| t.shared_readable)
    }

    /// The tenants marked `shared_readable`.
    pub fn shared_readable_tenants(&self) -> impl Iterator<Item = &TenantId> {
        self.shared_readable.iter()
    }

    /// `tenant`'s quotas (`None` for a tenant the policy does not define).
    pub fn quota(&self, tenant: &TenantId) -> Option<&Quota> {
        self.tenants.get(tenant).map(|t| &t.quota)
    }

    /// The worker pools `tenant`'s actions may run in; `None` is any pool.
    pub fn tenant_worker_pools(&self, tenant: &TenantId) -> Option<&[String]> {
        self.tenants
            .get(tenant)
            .and_then(|t| t.worker_pools.as_deref())
    }

    fn worker_entries<'a>(
        &'a self,
        worker: &'a Principal,
    ) -> impl Iterator<Item = &'a WorkerEntry> {
        let is_worker = worker.kind() == PrincipalKind::Worker;
        self.workers
            .iter()
            .filter(move |e| is_worker && any_match(&e.principals, worker.name()))
    }

    /// The pools a worker principal belongs to, sorted; empty for anyone
    /// who is not a worker the policy lists.
    pub fn worker_pools(&self, worker: &Principal) -> Vec<String> {
        let mut pools: Vec<String> = self
            .worker_entries(worker)
            .flat_map(|e| e.pools.iter().cloned())
            .collect();
        pools.sort();
        pools.dedup();
        pools
    }

    /// Whether `worker` may run `tenant`'s actions: it is a listed worker
    /// and one of its pools is among the tenant's (or the tenant allows
    /// any pool).
    pub fn worker_may_serve(&self, worker: &Principal, tenant: &TenantId) -> bool {
        let pools = self.worker_pools(worker);
        if pools.is_empty() {
            return false;
        }
        match self.tenant_worker_pools(tenant) {
            None => true,
            Some(allowed) => pools.iter().any(|p| allowed.contains(p)),
        }
    }

    /// Every permission `principal` holds on `instance` (for Capabilities'
    /// `update_enabled`, which is `contains(Permission::AcWrite)`).
    pub fn permissions(&self, principal: &Principal, instance: &str) -> PermissionSet {
        match self.tenant_of(instance) {
            Some(tenant) => self.held(principal, tenant).0,
            None => PermissionSet::EMPTY,
        }
    }

    /// What `principal` holds on `tenant`'s instances, and if that is
    /// nothing because of the principal's kind or pools, why.
    fn held(&self, principal: &Principal, tenant: &TenantId) -> (PermissionSet, DenyReason) {
        match principal.kind() {
            PrincipalKind::Farm => (PermissionSet::of(&Permission::ALL), DenyReason::NotGranted),
            PrincipalKind::Local if self.local => (
                PermissionSet::all_but_worker(),
                DenyReason::WrongKind(PrincipalKind::Local),
            ),
            PrincipalKind::Local => (
                PermissionSet::EMPTY,
                DenyReason::WrongKind(PrincipalKind::Local),
            ),
            PrincipalKind::Person => {
                let set = self
                    .grants
                    .iter()
                    .filter(|g| match &g.scope {
                        GrantScope::Farm => true,
                        GrantScope::Tenant(t) => t == tenant,
                    })
                    .filter(|g| any_match(&g.principals, principal.name()))
                    .fold(PermissionSet::EMPTY, |set, g| set.union(g.permissions));
                (set, DenyReason::NotGranted)
            }
            PrincipalKind::Worker => {
                let set = self
                    .worker_entries(principal)
                    .fold(PermissionSet::EMPTY, |set, e| set.union(e.permissions));
                if !set.is_empty() && !self.worker_may_serve(principal, tenant) {
                    return (PermissionSet::EMPTY, DenyReason::PoolNotAllowed);
                }
                (set, DenyReason::NotGranted)
            }
        }
    }

    /// Checks that `principal` holds `permission` on `instance`, and
    /// returns the tenant that owns it. The error names the permission and
    /// the instance (the services answer PERMISSION_DENIED with it).
    pub fn authorize(
        &self,
        principal: &Principal,
        permission: Permission,
        instance: &str,
    ) -> Result<TenantId, Denied> {
        let deny = |tenant: Option<&TenantId>, reason| Denied {
            permission,
            instance: Some(instance.to_string()),
            tenant: tenant.cloned(),
            principal: principal.clone(),
            reason,
        };
        let Some(tenant) = self.tenant_of(instance) else {
            return Err(deny(None, DenyReason::NoTenant));
        };
        if permission == Permission::Worker && principal.kind() == PrincipalKind::Person {
            return Err(deny(
                Some(tenant),
                DenyReason::WrongKind(PrincipalKind::Person),
            ));
        }
        let (held, reason) = self.held(principal, tenant);
        if held.contains(permission) {
            Ok(tenant.clone())
        } else {
            Err(deny(Some(tenant), reason))
        }
    }

    /// Checks a farm-wide permission, one tied to no instance: `admin`
    /// (drain, kill, audit) needs a grant with `tenant = "*"`; `worker`
    /// (registering on the worker protocol) needs a `[[workers]]` entry.
    pub fn authorize_farm(
        &self,
        principal: &Principal,
        permission: Permission,
    ) -> Result<(), Denied> {
        let reason = match principal.kind() {
            PrincipalKind::Farm => return Ok(()),
            PrincipalKind::Local if self.local && permission != Permission::Worker => return Ok(()),
            PrincipalKind::Local => DenyReason::WrongKind(PrincipalKind::Local),
            PrincipalKind::Person if permission == Permission::Worker => {
                DenyReason::WrongKind(PrincipalKind::Person)
            }
            PrincipalKind::Person => {
                let granted = self.grants.iter().any(|g| {
                    matches!(g.scope, GrantScope::Farm)
                        && g.permissions.contains(permission)
                        && any_match(&g.principals, principal.name())
                });
                if granted {
                    return Ok(());
                }
                DenyReason::NotGranted
            }
            PrincipalKind::Worker => {
                if self
                    .worker_entries(principal)
                    .any(|e| e.permissions.contains(permission))
                {
                    return Ok(());
                }
                DenyReason::NotGranted
            }
        };
        Err(Denied {
            permission,
            instance: None,
            tenant: None,
            principal: principal.clone(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests;
