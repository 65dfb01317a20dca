//! A tenant's quotas, resolved from its `[tenants.NAME.quotas]` and
//! `[default_quotas]`. [`crate::Quotas`] enforces them.

use std::collections::BTreeMap;

use crate::config::{QuotaConfig, RateConfig};
use crate::error::{Error, Result};
use crate::permission::Permission;

/// A token bucket's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained calls per second (> 0).
    pub per_second: f64,
    /// Calls allowed at once (≥ 1).
    pub burst: f64,
}

/// One tenant's quotas; `None` is unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quota {
    /// Request rate per class of call.
    pub rates: BTreeMap<Permission, Rate>,
    /// Actions running at once.
    pub concurrent_executions: Option<u64>,
    /// Operations queued at once.
    pub queued_operations: Option<u64>,
    /// Bytes of CAS blobs owned.
    pub cas_bytes: Option<u64>,
}

impl Quota {
    /// The tenant's settings, each missing one taken from `defaults`.
    /// `field` names the table in errors (e.g. `tenants.team-a.quotas`).
    pub(crate) fn resolve(own: &QuotaConfig, defaults: &QuotaConfig, field: &str) -> Result<Quota> {
        let mut rates = BTreeMap::new();
        for (class, rate) in defaults.rate.iter().chain(own.rate.iter()) {
            // The tenant's own entry comes second and wins.
            rates.insert(
                *class,
                Self::rate(rate, &format!("{field}.rate.\"{class}\""))?,
            );
        }
        Ok(Quota {
            rates,
            concurrent_executions: own.concurrent_executions.or(defaults.concurrent_executions),
            queued_operations: own.queued_operations.or(defaults.queued_operations),
            cas_bytes: own.cas_bytes.or(defaults.cas_bytes),
        })
    }

    fn rate(config: &RateConfig, field: &str) -> Result<Rate> {
        if !(config.per_second.is_finite() && config.per_second > 0.0) {
            return Err(Error::Setting {
                field: format!("{field}.per_second"),
                reason: format!("{} is not a positive number of calls", config.per_second),
            });
        }
        let burst = config.burst.unwrap_or(config.per_second.max(1.0));
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(Error::Setting {
                field: format!("{field}.burst"),
                reason: format!("{burst} is below 1: no call could ever pass"),
            });
        }
        Ok(Rate {
            per_second: config.per_second,
            burst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_settings_override_defaults_field_by_field() {
        let defaults: QuotaConfig = toml::from_str(
            "queued_operations = 100\ncas_bytes = 10\nrate.\"cas.read\" = { per_second = 10 }\nrate.\"execute\" = { per_second = 1 }",
        )
        .unwrap();
        let own: QuotaConfig =
            toml::from_str("cas_bytes = 20\nrate.\"execute\" = { per_second = 0.5, burst = 3 }")
                .unwrap();
        let q = Quota::resolve(&own, &defaults, "tenants.a.quotas").unwrap();
        assert_eq!(q.queued_operations, Some(100));
        assert_eq!(q.cas_bytes, Some(20));
        assert_eq!(q.concurrent_executions, None);
        assert_eq!(
            q.rates[&Permission::CasRead],
            Rate {
                per_second: 10.0,
                burst: 10.0
            }
        );
        assert_eq!(
            q.rates[&Permission::Execute],
            Rate {
                per_second: 0.5,
                burst: 3.0
            }
        );
    }

    #[test]
    fn bad_rates_are_named() {
        let own: QuotaConfig = toml::from_str("rate.\"execute\" = { per_second = 0 }").unwrap();
        let err = Quota::resolve(&own, &QuotaConfig::default(), "tenants.a.quotas")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenants.a.quotas.rate.\"execute\".per_second"),
            "{err}"
        );
        let own: QuotaConfig =
            toml::from_str("rate.\"execute\" = { per_second = 5, burst = 0.5 }").unwrap();
        let err = Quota::resolve(&own, &QuotaConfig::default(), "q")
            .unwrap_err()
            .to_string();
        assert!(err.contains("burst"), "{err}");
        // A fractional rate gets a burst of one call.
        let own: QuotaConfig = toml::from_str("rate.\"execute\" = { per_second = 0.1 }").unwrap();
        let q = Quota::resolve(&own, &QuotaConfig::default(), "q").unwrap();
        assert_eq!(q.rates[&Permission::Execute].burst, 1.0);
    }
}
