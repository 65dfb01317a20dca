//! Platform matching: what an action asks for, what a worker offers, and
//! whether one fits the other.
//!
//! Values are normalised once, when a request or a worker is parsed, so the
//! matching itself is plain comparison: `OSFamily` is case-insensitive and
//! `ISA` folds the usual aliases (`x86_64`, `amd64` → `x86-64`; `arm64` →
//! `aarch64`). Each key has a [`PropertyPolicy`]; keys with policy `ignore`
//! are dropped here, which is the only way a property is ever dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use corral_proto::reapi;

use crate::config::{PropertyPolicy, SchedulerConfig};
use crate::error::{Error, Result};

/// The platform key under which a worker offers its pool. The farm sets it
/// from the worker's authenticated identity; neither a client's action nor
/// a worker's hello may name it.
pub const POOL_KEY: &str = "corral.pool";

/// One normalised requirement of an action.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    /// Policy `exact`: the worker must offer this value.
    Exact { key: String, value: String },
    /// Policy `any`: the worker must offer this value or `*`.
    Any { key: String, value: String },
    /// Policy `minimum`: the worker's remaining budget must cover `amount`.
    Minimum { key: String, amount: u64 },
    /// Set by the farm, not the client: the worker must offer one of
    /// `values` (sorted), e.g. a pool its tenant may use.
    OneOf { key: String, values: Vec<String> },
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::Exact { key, .. }
            | Requirement::Any { key, .. }
            | Requirement::Minimum { key, .. }
            | Requirement::OneOf { key, .. } => key,
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Exact { key, value } => write!(f, "{key}={value}"),
            Requirement::Any { key, value } => write!(f, "{key}={value} (policy any)"),
            Requirement::Minimum { key, amount } => write!(f, "{key}>={amount} (policy minimum)"),
            Requirement::OneOf { key, values } => write!(f, "{key} in [{}]", values.join(", ")),
        }
    }
}

/// Everything an action requires, sorted: two actions with equal
/// requirements share a queue class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Requirements {
    pub items: Vec<Requirement>,
}

impl Requirements {
    /// Parses the platform of an action (`Action.platform`, else
    /// `Command.platform`, chosen by the caller).
    pub fn parse(platform: Option<&reapi::Platform>, config: &SchedulerConfig) -> Result<Self> {
        let mut items = Vec::new();
        for p in platform.map(|p| p.properties.as_slice()).unwrap_or(&[]) {
            if p.name.is_empty() {
                return Err(Error::invalid(
                    "platform.properties.name",
                    "a platform property has an empty name",
                ));
            }
            refuse_reserved(&p.name, "platform.properties.name")?;
            match config.policy(&p.name) {
                PropertyPolicy::Ignore => {}
                PropertyPolicy::Exact => items.push(Requirement::Exact {
                    key: p.name.clone(),
                    value: normalise(&p.name, &p.value),
                }),
                PropertyPolicy::Any => items.push(Requirement::Any {
                    key: p.name.clone(),
                    value: normalise(&p.name, &p.value),
                }),
                PropertyPolicy::Minimum => items.push(Requirement::Minimum {
                    key: p.name.clone(),
                    amount: parse_amount(&p.name, &p.value, "platform.properties")?,
                }),
            }
        }
        items.sort();
        items.dedup();
        Ok(Requirements { items })
    }

    /// The value of the `container-image` property, if any: used to prefer
    /// workers that already hold the image.
    pub fn image(&self) -> Option<&str> {
        self.items.iter().find_map(|r| match r {
            Requirement::Exact { key, value } | Requirement::Any { key, value }
                if key == "container-image" =>
            {
                Some(value.as_str())
            }
            _ => None,
        })
    }

    /// The numeric budgets this action consumes while it runs.
    pub fn budgets(&self) -> impl Iterator<Item = (&str, u64)> {
        self.items.iter().filter_map(|r| match r {
            Requirement::Minimum { key, amount } => Some((key.as_str(), *amount)),
            _ => None,
        })
    }
}

impl fmt::Display for Requirements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return f.write_str("(no properties)");
        }
        for (i, r) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Refuses a property only the farm may set.
fn refuse_reserved(name: &str, field: &str) -> Result<()> {
    if name == POOL_KEY {
        return Err(Error::invalid(
            field,
            format!(
                "{POOL_KEY} is reserved: the farm assigns worker pools from its tenancy policy"
            ),
        ));
    }
    Ok(())
}

impl Requirements {
    /// Adds the farm's own requirement that the action run in one of
    /// `pools` (its tenant's).
    pub fn restrict_to_pools(&mut self, pools: &[String]) {
        let mut values = pools.to_vec();
        values.sort();
        values.dedup();
        self.items.push(Requirement::OneOf {
            key: POOL_KEY.to_string(),
            values,
        });
        self.items.sort();
    }
}

impl Offer {
    /// Puts the worker in `pool` (from its identity, by the policy).
    pub fn join_pool(&mut self, pool: &str) {
        self.values
            .entry(POOL_KEY.to_string())
            .or_default()
            .insert(pool.to_string());
    }
}

/// What a worker offers: values per key, and totals for `minimum` keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    pub values: BTreeMap<String, BTreeSet<String>>,
    pub budgets: BTreeMap<String, u64>,
}

impl Offer {
    /// Parses the platform a worker announced in its `Hello`.
    pub fn parse(platform: Option<&reapi::Platform>, config: &SchedulerConfig) -> Result<Self> {
        let mut offer = Offer::default();
        for p in platform.map(|p| p.properties.as_slice()).unwrap_or(&[]) {
            if p.name.is_empty() {
                return Err(Error::invalid(
                    "hello.platform.properties.name",
                    "a platform property has an empty name",
                ));
            }
            refuse_reserved(&p.name, "hello.platform.properties.name")?;
            match config.policy(&p.name) {
                PropertyPolicy::Minimum => {
                    let amount = parse_amount(&p.name, &p.value, "hello.platform.properties")?;
                    offer.budgets.insert(p.name.clone(), amount);
                }
                _ => {
                    offer
                        .values
                        .entry(p.name.clone())
                        .or_default()
                        .insert(normalise(&p.name, &p.value));
                }
            }
        }
        Ok(offer)
    }

    /// Whether this worker could ever run a requirement (ignoring what its
    /// running actions consume).
    pub fn satisfies(&self, r: &Requirement) -> bool {
        match r {
            Requirement::Exact { key, value } => {
                self.values.get(key).is_some_and(|v| v.contains(value))
            }
            Requirement::Any { key, value } => self
                .values
                .get(key)
                .is_some_and(|v| v.contains(value) || v.contains("*")),
            Requirement::Minimum { key, amount } => {
                self.budgets.get(key).is_some_and(|total| total >= amount)
            }
            Requirement::OneOf { key, values } => self
                .values
                .get(key)
                .is_some_and(|offered| values.iter().any(|v| offered.contains(v))),
        }
    }

    /// Whether this worker could ever run an action with these requirements.
    pub fn satisfies_all(&self, reqs: &Requirements) -> bool {
        reqs.items.iter().all(|r| self.satisfies(r))
    }
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (k, vs) in &self.values {
            for v in vs {
                parts.push(format!("{k}={v}"));
            }
        }
        for (k, n) in &self.budgets {
            parts.push(format!("{k}={n}"));
        }
        if parts.is_empty() {
            f.write_str("[no properties]")
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

/// Explains why no worker among `offers` can run `reqs`: names the first
/// property nobody offers (or says that no single worker offers the whole
/// combination) and lists what the workers do offer.
pub fn explain_unsatisfiable<'a>(
    reqs: &Requirements,
    offers: impl IntoIterator<Item = &'a Offer>,
) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let offers: Vec<&Offer> = offers.into_iter().collect();
    for o in &offers {
        *counts.entry(o.to_string()).or_default() += 1;
    }
    if offers.is_empty() {
        return format!(
            "no worker is connected or was seen recently to run an action requiring {reqs}"
        );
    }
    let listing = counts
        .iter()
        .map(|(o, n)| format!("{o} ({n} worker{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join("; ");
    match reqs
        .items
        .iter()
        .find(|r| !offers.iter().any(|o| o.satisfies(r)))
    {
        Some(r) => format!("no worker offers platform property {r}; workers offer: {listing}"),
        None => format!(
            "no single worker offers all of the platform properties {reqs}; workers offer: {listing}"
        ),
    }
}

fn normalise(key: &str, value: &str) -> String {
    match key {
        "OSFamily" => value.to_ascii_lowercase(),
        "ISA" => {
            let v = value.to_ascii_lowercase();
            match v.as_str() {
                "x86_64" | "amd64" | "x86-64" => "x86-64".to_string(),
                "arm64" | "aarch64" => "aarch64".to_string(),
                _ => v,
            }
        }
        _ => value.to_string(),
    }
}

fn parse_amount(key: &str, value: &str, field: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| {
        Error::invalid(
            field,
            format!("property {key} has policy minimum and needs a whole number, got {value:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(props: &[(&str, &str)]) -> reapi::Platform {
        reapi::Platform {
            properties: props
                .iter()
                .map(|(n, v)| reapi::platform::Property {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    fn config() -> SchedulerConfig {
        let mut c = SchedulerConfig::default();
        c.property_policies
            .insert("cores".into(), PropertyPolicy::Minimum);
        c.property_policies
            .insert("pool".into(), PropertyPolicy::Ignore);
        c
    }

    #[test]
    fn os_family_case_and_isa_aliases_match() {
        let c = config();
        let offer = Offer::parse(
            Some(&platform(&[("OSFamily", "Linux"), ("ISA", "amd64")])),
            &c,
        )
        .unwrap();
        for isa in ["x86_64", "x86-64", "AMD64"] {
            let r =
                Requirements::parse(Some(&platform(&[("OSFamily", "linux"), ("ISA", isa)])), &c)
                    .unwrap();
            assert!(offer.satisfies_all(&r), "{isa}");
        }
        let arm = Offer::parse(Some(&platform(&[("ISA", "arm64")])), &c).unwrap();
        let r = Requirements::parse(Some(&platform(&[("ISA", "aarch64")])), &c).unwrap();
        assert!(arm.satisfies_all(&r));
        assert!(!offer.satisfies_all(&r));
    }

    #[test]
    fn exact_is_case_sensitive_for_other_keys_and_missing_key_fails() {
        let c = config();
        let offer = Offer::parse(Some(&platform(&[("gpu", "Tesla")])), &c).unwrap();
        let r = Requirements::parse(Some(&platform(&[("gpu", "tesla")])), &c).unwrap();
        assert!(!offer.satisfies_all(&r));
        let r = Requirements::parse(Some(&platform(&[("kernel", "6")])), &c).unwrap();
        assert!(!offer.satisfies_all(&r));
        // Offered but not requested is fine.
        assert!(offer.satisfies_all(&Requirements::default()));
    }

    #[test]
    fn any_policy_accepts_star_and_minimum_compares_numbers() {
        let c = config();
        let offer = Offer::parse(
            Some(&platform(&[("container-image", "*"), ("cores", "8")])),
            &c,
        )
        .unwrap();
        let r = Requirements::parse(
            Some(&platform(&[
                ("container-image", "docker://x:1"),
                ("cores", "8"),
            ])),
            &c,
        )
        .unwrap();
        assert!(offer.satisfies_all(&r));
        assert_eq!(r.image(), Some("docker://x:1"));
        let r = Requirements::parse(Some(&platform(&[("cores", "9")])), &c).unwrap();
        assert!(!offer.satisfies_all(&r));
        // `*` means nothing for an exact key.
        let star = Offer::parse(Some(&platform(&[("OSFamily", "*")])), &c).unwrap();
        let r = Requirements::parse(Some(&platform(&[("OSFamily", "linux")])), &c).unwrap();
        assert!(!star.satisfies_all(&r));
    }

    #[test]
    fn ignore_drops_only_configured_keys_and_bad_numbers_are_named() {
        let c = config();
        let r = Requirements::parse(Some(&platform(&[("pool", "big"), ("x", "1")])), &c).unwrap();
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].key(), "x");
        let err = Requirements::parse(Some(&platform(&[("cores", "lots")])), &c).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cores") && msg.contains("lots"), "{msg}");
        let err = Offer::parse(Some(&platform(&[("cores", "-1")])), &c).unwrap_err();
        assert!(err.to_string().contains("hello.platform"), "{err}");
    }

    #[test]
    fn explanations_name_the_property_and_list_offers() {
        let c = config();
        let a = Offer::parse(
            Some(&platform(&[("ISA", "x86-64"), ("OSFamily", "linux")])),
            &c,
        )
        .unwrap();
        let b = Offer::parse(
            Some(&platform(&[("ISA", "aarch64"), ("OSFamily", "macos")])),
            &c,
        )
        .unwrap();
        let r = Requirements::parse(Some(&platform(&[("ISA", "riscv64")])), &c).unwrap();
        let msg = explain_unsatisfiable(&r, [&a, &a, &b]);
        assert!(msg.contains("ISA=riscv64"), "{msg}");
        assert!(
            msg.contains("[ISA=x86-64, OSFamily=linux] (2 workers)"),
            "{msg}"
        );
        assert!(
            msg.contains("[ISA=aarch64, OSFamily=macos] (1 worker)"),
            "{msg}"
        );
        let r = Requirements::parse(
            Some(&platform(&[("ISA", "aarch64"), ("OSFamily", "linux")])),
            &c,
        )
        .unwrap();
        let msg = explain_unsatisfiable(&r, [&a, &b]);
        assert!(msg.contains("no single worker"), "{msg}");
        let msg = explain_unsatisfiable(&r, []);
        assert!(msg.contains("no worker is connected"), "{msg}");
    }
}
