//! The policy as written in TOML: under `[auth.policy]` of the server's
//! file, or at the top level of `[auth] policy_file`. [`crate::Policy`]
//! compiles and checks it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::permission::Permission;

/// The policy table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Tenants by name (`[tenants.NAME]`). Default: none, so no instance
    /// name belongs to anyone and every call is denied.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// What people may do (`[[grants]]`). Default: nothing.
    pub grants: Vec<GrantConfig>,
    /// Which worker principals may serve, in which pools (`[[workers]]`).
    /// Default: none, so no worker may register.
    pub workers: Vec<WorkerConfig>,
    /// Quotas of every tenant that does not set its own
    /// (`[default_quotas]`, field by field). Default: unlimited.
    pub default_quotas: QuotaConfig,
}

/// One tenant (`[tenants.NAME]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Instance-name prefixes the tenant owns, matched per `/` component
    /// (`team-a` owns `team-a` and `team-a/x`, not `team-ab`; `""` owns only
    /// the empty instance name). No prefix may overlap another tenant's.
    /// Default: none.
    pub instances: Vec<String>,
    /// Blobs this tenant owns are readable by every tenant (a shared
    /// toolchain tenant, say). Default false.
    pub shared_readable: bool,
    /// Worker pools this tenant's actions may run in. Default: any pool.
    pub worker_pools: Option<Vec<String>>,
    /// This tenant's quotas; each field left out falls back to
    /// `[default_quotas]`.
    pub quotas: QuotaConfig,
}

/// One grant (`[[grants]]`): principals matching any of `principals` get
/// `permissions` on the instances of `tenant`. Grants apply to people
/// (build clients) only; workers get theirs from `[[workers]]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrantConfig {
    /// Principal-name patterns; `*` matches any run of characters.
    /// Required, not empty.
    pub principals: Vec<String>,
    /// The tenant whose instances the grant covers, or `"*"` for every
    /// tenant and the farm itself (needed for `admin`). Required.
    pub tenant: Option<String>,
    /// Permissions granted; `worker` is refused here. Required, not empty.
    pub permissions: Vec<Permission>,
}

/// One worker entry (`[[workers]]`): worker principals matching any of
/// `principals` may register, serve tenants whose pools include one of
/// `pools`, and hold `permissions` on those tenants' instances.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Worker-principal patterns (`uid:1001`, `spiffe://farm/worker/*`).
    /// Required, not empty.
    pub principals: Vec<String>,
    /// Pools these workers belong to. Default `["default"]`.
    pub pools: Option<Vec<String>>,
    /// Permissions. Default `["worker", "cas.read", "cas.write"]`;
    /// `ac.write` and `admin` are refused.
    pub permissions: Option<Vec<Permission>>,
}

/// Quotas of one tenant (`[tenants.NAME.quotas]` or `[default_quotas]`).
/// Every field is optional; a quota left out is unlimited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Request rate per class of call, keyed by the permission the call
    /// needs (`rate."cas.read" = { per_second = 500, burst = 1000 }`).
    pub rate: BTreeMap<Permission, RateConfig>,
    /// Actions of the tenant running at once; more wait in the queue.
    pub concurrent_executions: Option<u64>,
    /// Operations of the tenant queued at once; an Execute past it gets
    /// RESOURCE_EXHAUSTED.
    pub queued_operations: Option<u64>,
    /// Bytes of CAS blobs the tenant owns; an upload past it gets
    /// RESOURCE_EXHAUSTED.
    pub cas_bytes: Option<u64>,
}

/// A token bucket: `per_second` calls on average, up to `burst` at once.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained calls per second. Required, above 0.
    pub per_second: f64,
    /// Calls allowed at once after a quiet period. Default: `per_second`,
    /// at least 1.
    pub burst: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_fields() {
        let text = r#"
            [tenants.team-a]
            instances = ["team-a"]
            worker_pools = ["a"]
            [tenants.team-a.quotas]
            concurrent_executions = 4
            rate."execute" = { per_second = 2.5 }
            [[grants]]
            principals = ["alice"]
            tenant = "team-a"
            permissions = ["cas.read", "execute"]
            [[workers]]
            principals = ["uid:*"]
        "#;
        let c: PolicyConfig = toml::from_str(text).unwrap();
        let a = &c.tenants["team-a"];
        assert_eq!(a.quotas.concurrent_executions, Some(4));
        assert_eq!(a.quotas.rate[&Permission::Execute].per_second, 2.5);
        assert_eq!(
            c.grants[0].permissions,
            [Permission::CasRead, Permission::Execute]
        );
        assert_eq!(c.workers[0].pools, None);
        let err = toml::from_str::<PolicyConfig>("[tenants.a]\ninstance = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `instance`"), "{err}");
        assert!(toml::from_str::<PolicyConfig>(
            "[default_quotas.rate.\"delete\"]\nper_second = 1\n"
        )
        .is_err());
    }
}
