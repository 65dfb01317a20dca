//! From [`PolicyConfig`] to [`Policy`], refusing what would make the
//! policy ambiguous or unsafe: overlapping prefixes of two tenants, grants
//! of unknown tenants, a worker with `ac.write`.

use std::collections::{BTreeMap, HashMap};

use super::{
    Grant, GrantScope, Policy, Tenant, WorkerEntry, DEFAULT_POOL, DEFAULT_WORKER_PERMISSIONS,
};
use crate::config::{GrantConfig, PolicyConfig, TenantConfig, WorkerConfig};
use crate::error::{Error, Result};
use crate::instance_prefix::InstancePrefix;
use crate::pattern::Pattern;
use crate::permission::{Permission, PermissionSet};
use crate::quota::Quota;
use crate::tenant_id::TenantId;

/// Permissions a worker entry may never give.
const FORBIDDEN_TO_WORKERS: [Permission; 2] = [Permission::AcWrite, Permission::Admin];

pub(super) fn compile(config: &PolicyConfig) -> Result<Policy> {
    let mut tenants = BTreeMap::new();
    for (name, tenant) in &config.tenants {
        let id = TenantId::new(name)?;
        tenants.insert(id, compile_tenant(name, tenant, config)?);
    }
    let owners = owners(&tenants)?;
    let grants = config
        .grants
        .iter()
        .enumerate()
        .map(|(i, g)| compile_grant(i, g, &tenants))
        .collect::<Result<Vec<_>>>()?;
    let workers = config
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| compile_worker(i, w))
        .collect::<Result<Vec<_>>>()?;
    let shared_readable = tenants
        .iter()
        .filter(|(_, t)| t.shared_readable)
        .map(|(id, _)| id.clone())
        .collect();
    Ok(Policy {
        local: false,
        tenants,
        owners,
        shared_readable,
        grants,
        workers,
    })
}

fn compile_tenant(name: &str, tenant: &TenantConfig, config: &PolicyConfig) -> Result<Tenant> {
    let mut prefixes = Vec::new();
    for text in &tenant.instances {
        let prefix = InstancePrefix::new(text).map_err(|reason| Error::BadPrefix {
            tenant: name.to_string(),
            prefix: text.clone(),
            reason,
        })?;
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
    if let Some(pools) = &tenant.worker_pools {
        if pools.is_empty() {
            return Err(Error::Setting {
                field: format!("tenants.{name}.worker_pools"),
                reason: "an empty list lets no worker run the tenant's actions; leave it out to \
                         allow every pool"
                    .to_string(),
            });
        }
    }
    Ok(Tenant {
        prefixes,
        shared_readable: tenant.shared_readable,
        worker_pools: tenant.worker_pools.clone(),
        quota: Quota::resolve(
            &tenant.quotas,
            &config.default_quotas,
            &format!("tenants.{name}.quotas"),
        )?,
    })
}

/// The prefix → tenant map, after checking that no two tenants' prefixes
/// overlap (the error names both tenants and both prefixes).
fn owners(tenants: &BTreeMap<TenantId, Tenant>) -> Result<HashMap<String, TenantId>> {
    let all: Vec<(&TenantId, &InstancePrefix)> = tenants
        .iter()
        .flat_map(|(id, t)| t.prefixes.iter().map(move |p| (id, p)))
        .collect();
    for (i, (tenant_a, prefix_a)) in all.iter().enumerate() {
        for (tenant_b, prefix_b) in &all[i + 1..] {
            if tenant_a != tenant_b && prefix_a.overlaps(prefix_b) {
                return Err(Error::PrefixOverlap {
                    tenant_a: tenant_a.to_string(),
                    prefix_a: prefix_a.to_string(),
                    tenant_b: tenant_b.to_string(),
                    prefix_b: prefix_b.to_string(),
                });
            }
        }
    }
    Ok(all
        .into_iter()
        .map(|(id, p)| (p.as_str().to_string(), id.clone()))
        .collect())
}

fn patterns(texts: &[String], field: &str) -> Result<Vec<Pattern>> {
    if texts.is_empty() {
        return Err(Error::Setting {
            field: field.to_string(),
            reason: "required: list at least one principal pattern".to_string(),
        });
    }
    texts
        .iter()
        .map(|t| {
            Pattern::new(t).map_err(|e| Error::Setting {
                field: field.to_string(),
                reason: e.to_string(),
            })
        })
        .collect()
}

fn compile_grant(
    index: usize,
    grant: &GrantConfig,
    tenants: &BTreeMap<TenantId, Tenant>,
) -> Result<Grant> {
    let entry = format!("grants[{index}]");
    let principals = patterns(&grant.principals, &format!("{entry}.principals"))?;
    let scope = match grant.tenant.as_deref() {
        None => {
            return Err(Error::Setting {
                field: format!("{entry}.tenant"),
                reason: "required: a tenant name, or \"*\" for every tenant and the farm".into(),
            })
        }
        Some("*") => GrantScope::Farm,
        Some(name) => match tenants.get_key_value(name) {
            Some((id, _)) => GrantScope::Tenant(id.clone()),
            None => {
                return Err(Error::UnknownTenant {
                    entry,
                    tenant: name.to_string(),
                })
            }
        },
    };
    if grant.permissions.is_empty() {
        return Err(Error::Setting {
            field: format!("{entry}.permissions"),
            reason: "required: list at least one permission".to_string(),
        });
    }
    if grant.permissions.contains(&Permission::Worker) {
        return Err(Error::Setting {
            field: format!("{entry}.permissions"),
            reason: "`worker` is never granted to people: list worker principals under \
                     [[workers]]"
                .to_string(),
        });
    }
    if grant.permissions.contains(&Permission::Admin) && !matches!(scope, GrantScope::Farm) {
        return Err(Error::Setting {
            field: format!("{entry}.permissions"),
            reason: "`admin` acts on the whole farm: grant it with tenant = \"*\"".to_string(),
        });
    }
    Ok(Grant {
        principals,
        scope,
        permissions: PermissionSet::of(&grant.permissions),
    })
}

fn compile_worker(index: usize, worker: &WorkerConfig) -> Result<WorkerEntry> {
    let entry = format!("workers[{index}]");
    let principals = patterns(&worker.principals, &format!("{entry}.principals"))?;
    let permissions = worker
        .permissions
        .as_deref()
        .unwrap_or(&DEFAULT_WORKER_PERMISSIONS);
    if let Some(bad) = FORBIDDEN_TO_WORKERS
        .iter()
        .find(|p| permissions.contains(p))
    {
        return Err(Error::WorkerPermissionForbidden {
            entry: index,
            permission: *bad,
        });
    }
    let pools = worker
        .pools
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_POOL.to_string()]);
    if pools.is_empty() {
        return Err(Error::Setting {
            field: format!("{entry}.pools"),
            reason: "an empty list puts the workers in no pool; leave it out for \"default\""
                .to_string(),
        });
    }
    Ok(WorkerEntry {
        principals,
        pools,
        permissions: PermissionSet::of(permissions),
    })
}
