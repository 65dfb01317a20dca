//! The scheduler's configuration: a `[scheduler]` table in the server's TOML.
//!
//! Every field is optional; the defaults suit `corral up` on one machine.
//! Durations are written in whole milliseconds or seconds (the unit is in the
//! field name) so the file needs no duration parser.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_cas::store::namespaced::longest_prefix;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How one platform property key is matched between an action and a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyPolicy {
    /// The worker must offer exactly the requested value (after the
    /// normalisation of `OSFamily` and `ISA`). The default for every key.
    Exact,
    /// Numeric budget: the worker offers a number, each running action
    /// consumes what it requested, and an action fits only while the rest
    /// of the budget covers its request (`cores`, `memory-mb`, …).
    Minimum,
    /// Like `exact`, but a worker offering the value `*` accepts every value
    /// (`container-image`: a worker that can pull any image).
    Any,
    /// The key plays no part in matching. Only keys named here are ignored:
    /// a key nobody configured is never silently dropped.
    Ignore,
}

/// Scheduler settings. See `docs/scheduler.md` for what each one changes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Interval between keepalive updates on open Execute and WaitExecution
    /// streams, in milliseconds. Clients such as BuildStream treat a silent
    /// stream as lost. Default 10 000.
    pub client_keepalive_ms: u64,
    /// Interval at which both sides of a worker stream send a keepalive when
    /// silent, in milliseconds. Default 5 000.
    pub worker_keepalive_ms: u64,
    /// A worker silent for this long (milliseconds) is treated as lost and
    /// its actions are requeued. Default 30 000.
    pub worker_timeout_ms: u64,
    /// How many times an action lost with its worker is requeued before it
    /// fails with UNAVAILABLE. Default 3.
    pub max_retries: u32,
    /// Timeout for actions that set none, in seconds. Default 3 600.
    pub default_timeout_s: u64,
    /// Upper bound on any action's timeout, in seconds. Default 10 800.
    pub max_timeout_s: u64,
    /// Extra time (milliseconds) the scheduler gives a worker past an
    /// action's timeout before it cancels the action itself and reports
    /// DEADLINE_EXCEEDED. Default 30 000.
    pub timeout_grace_ms: u64,
    /// How long (milliseconds) an action no worker can satisfy waits for a
    /// matching worker to connect before it fails with FAILED_PRECONDITION.
    /// Default 30 000.
    pub unsatisfiable_grace_ms: u64,
    /// How long (milliseconds) the platform of a disconnected worker still
    /// counts as "recently seen" when deciding that a request can never be
    /// satisfied. Default 300 000.
    pub lost_worker_memory_ms: u64,
    /// How long (milliseconds) a completed operation can still be fetched
    /// with WaitExecution or GetOperation. Default 600 000.
    pub completed_retention_ms: u64,
    /// Upper bound on the number of completed operations kept; the oldest go
    /// first. Default 100 000.
    pub max_completed_operations: usize,
    /// How often (milliseconds) the background task checks timeouts,
    /// keepalives and retention. Default 1 000.
    pub tick_ms: u64,
    /// Matching policy per platform property key; keys not listed are
    /// `exact`. Default: `any` for `container-image`, `unixUID` and
    /// `unixGID`.
    pub property_policies: BTreeMap<String, PropertyPolicy>,
    /// What forms `/` for actions without a `container-image`, by instance
    /// name: the longest key that equals the instance name or is a prefix of
    /// it ending at a `/` wins. Default: `buildstream = "input-root"`
    /// (BuildStream cannot ask for it with a property).
    pub rootfs_by_instance: BTreeMap<String, RootfsChoice>,
    /// The rootfs for instance names no key of `rootfs_by_instance` covers.
    /// Default `host`, so Bazel's host-configured toolchains work.
    pub default_rootfs: RootfsChoice,
    /// The sandbox's hostname by instance name, matched like
    /// `rootfs_by_instance`. Default: `buildstream = "buildbox"`, the name
    /// BuildStream's own local sandbox gives, so a build that records its
    /// build host is the same remotely as locally.
    pub hostname_by_instance: BTreeMap<String, String>,
    /// The hostname for instance names no key of `hostname_by_instance`
    /// covers. Default `corral`.
    pub default_hostname: String,
}

/// What forms an action's `/` when it names no image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsChoice {
    /// The host's system directories read-only, the input root at the exec
    /// path.
    Host,
    /// The input root is `/` (BuildStream).
    InputRoot,
}

impl RootfsChoice {
    /// The worker-protocol value.
    pub fn to_wire(self) -> corral_proto::worker::v1::RootfsMode {
        match self {
            RootfsChoice::Host => corral_proto::worker::v1::RootfsMode::Host,
            RootfsChoice::InputRoot => corral_proto::worker::v1::RootfsMode::InputRoot,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            client_keepalive_ms: 10_000,
            worker_keepalive_ms: 5_000,
            worker_timeout_ms: 30_000,
            max_retries: 3,
            default_timeout_s: 3_600,
            max_timeout_s: 10_800,
            timeout_grace_ms: 30_000,
            unsatisfiable_grace_ms: 30_000,
            lost_worker_memory_ms: 300_000,
            completed_retention_ms: 600_000,
            max_completed_operations: 100_000,
            tick_ms: 1_000,
            property_policies: BTreeMap::from([
                ("container-image".to_string(), PropertyPolicy::Any),
                // BuildStream's uid/gid for the command: workers that can
                // give any offer `*`.
                ("unixUID".to_string(), PropertyPolicy::Any),
                ("unixGID".to_string(), PropertyPolicy::Any),
            ]),
            rootfs_by_instance: BTreeMap::from([(
                "buildstream".to_string(),
                RootfsChoice::InputRoot,
            )]),
            default_rootfs: RootfsChoice::Host,
            hostname_by_instance: BTreeMap::from([(
                "buildstream".to_string(),
                "buildbox".to_string(),
            )]),
            default_hostname: corral_proto::hostname::DEFAULT.to_string(),
        }
    }
}

impl SchedulerConfig {
    /// The rootfs for `instance`: the longest key of `rootfs_by_instance`
    /// that is the instance name or a `/`-separated prefix of it.
    pub fn rootfs_for(&self, instance: &str) -> RootfsChoice {
        longest_prefix(&self.rootfs_by_instance, instance)
            .copied()
            .unwrap_or(self.default_rootfs)
    }

    /// The sandbox hostname for `instance`, matched like [`Self::rootfs_for`].
    pub fn hostname_for(&self, instance: &str) -> &str {
        longest_prefix(&self.hostname_by_instance, instance).unwrap_or(&self.default_hostname)
    }

    /// Parses a `[scheduler]` table given as TOML text and checks it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: SchedulerConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that would make the scheduler misbehave, naming the
    /// field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("client_keepalive_ms", self.client_keepalive_ms),
            ("worker_keepalive_ms", self.worker_keepalive_ms),
            ("worker_timeout_ms", self.worker_timeout_ms),
            ("default_timeout_s", self.default_timeout_s),
            ("max_timeout_s", self.max_timeout_s),
            ("tick_ms", self.tick_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be greater than 0")));
            }
        }
        if self.default_timeout_s > self.max_timeout_s {
            return Err(Error::Config(format!(
                "default_timeout_s ({}) exceeds max_timeout_s ({})",
                self.default_timeout_s, self.max_timeout_s
            )));
        }
        let hostnames = self.hostname_by_instance.iter();
        for (field, name) in
            hostnames.chain([(&"default_hostname".to_string(), &self.default_hostname)])
        {
            if let Err(reason) = corral_proto::hostname::check(name) {
                return Err(Error::Config(format!(
                    "hostname {name:?} for {field:?}: {reason}"
                )));
            }
        }
        if self.worker_timeout_ms <= self.worker_keepalive_ms {
            return Err(Error::Config(format!(
                "worker_timeout_ms ({}) must exceed worker_keepalive_ms ({})",
                self.worker_timeout_ms, self.worker_keepalive_ms
            )));
        }
        Ok(())
    }

    /// The policy for one property key.
    pub fn policy(&self, key: &str) -> PropertyPolicy {
        self.property_policies
            .get(key)
            .copied()
            .unwrap_or(PropertyPolicy::Exact)
    }

    /// The timeout an action runs under: its own, else the default, capped
    /// at the maximum. A zero or negative request counts as "none".
    pub fn effective_timeout(&self, requested: Option<Duration>) -> Duration {
        let max = Duration::from_secs(self.max_timeout_s);
        match requested {
            Some(t) if !t.is_zero() => t.min(max),
            _ => Duration::from_secs(self.default_timeout_s).min(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_follows_the_longest_instance_prefix() {
        let c = SchedulerConfig::from_toml(
            r#"
            default_rootfs = "host"
            [rootfs_by_instance]
            buildstream = "input-root"
            "buildstream/bazel" = "host"
            "#,
        )
        .unwrap();
        assert_eq!(c.rootfs_for("buildstream"), RootfsChoice::InputRoot);
        assert_eq!(c.rootfs_for("buildstream/x"), RootfsChoice::InputRoot);
        assert_eq!(c.rootfs_for("buildstream/bazel/y"), RootfsChoice::Host);
        // Not a prefix at a `/`: a different name.
        assert_eq!(c.rootfs_for("buildstreamer"), RootfsChoice::Host);
        assert_eq!(c.rootfs_for(""), RootfsChoice::Host);
        let d = SchedulerConfig::default();
        assert_eq!(d.rootfs_for("buildstream"), RootfsChoice::InputRoot);
        assert_eq!(d.rootfs_for("main"), RootfsChoice::Host);
        assert!(SchedulerConfig::from_toml("default_rootfs = \"chroot\"").is_err());
    }

    #[test]
    fn hostname_follows_the_longest_instance_prefix_and_is_checked() {
        let d = SchedulerConfig::default();
        assert_eq!(d.hostname_for("buildstream"), "buildbox");
        assert_eq!(d.hostname_for("buildstream/team-a"), "buildbox");
        assert_eq!(d.hostname_for("buildstreamer"), "corral");
        assert_eq!(d.hostname_for(""), "corral");
        let c = SchedulerConfig::from_toml(
            "default_hostname = \"farm\"\n[hostname_by_instance]\n\"bst/x\" = \"builder-1\"\n",
        )
        .unwrap();
        assert_eq!(c.hostname_for("bst/x/y"), "builder-1");
        assert_eq!(c.hostname_for("buildstream"), "farm");
        for bad in ["", "-x", "has space", "a/b", &"x".repeat(65)] {
            let toml = format!("default_hostname = {bad:?}");
            let err = SchedulerConfig::from_toml(&toml).unwrap_err();
            assert!(
                err.to_string().contains("default_hostname"),
                "{bad:?}: {err}"
            );
        }
        let err = SchedulerConfig::from_toml("[hostname_by_instance]\nteam = \"a_b\"").unwrap_err();
        assert!(err.to_string().contains("\"team\""), "{err}");
    }

    #[test]
    fn empty_table_gives_defaults() {
        let c = SchedulerConfig::from_toml("").unwrap();
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.policy("container-image"), PropertyPolicy::Any);
        assert_eq!(c.policy("OSFamily"), PropertyPolicy::Exact);
    }

    #[test]
    fn policies_parse_and_unknown_fields_are_refused() {
        let c = SchedulerConfig::from_toml(
            "max_retries = 1\n[property_policies]\ncores = \"minimum\"\npool = \"ignore\"\n",
        )
        .unwrap();
        assert_eq!(c.policy("cores"), PropertyPolicy::Minimum);
        assert_eq!(c.policy("pool"), PropertyPolicy::Ignore);
        assert_eq!(c.max_retries, 1);
        let err = SchedulerConfig::from_toml("max_retry = 1").unwrap_err();
        assert!(err.to_string().contains("max_retry"), "{err}");
        let err = SchedulerConfig::from_toml("[property_policies]\nx = \"fuzzy\"").unwrap_err();
        assert!(err.to_string().contains("fuzzy"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let err =
            SchedulerConfig::from_toml("default_timeout_s = 100\nmax_timeout_s = 10").unwrap_err();
        assert!(err.to_string().contains("default_timeout_s"), "{err}");
        let err = SchedulerConfig::from_toml("tick_ms = 0").unwrap_err();
        assert!(err.to_string().contains("tick_ms"), "{err}");
    }

    #[test]
    fn timeout_is_own_else_default_capped_at_max() {
        let c = SchedulerConfig {
            default_timeout_s: 60,
            max_timeout_s: 120,
            ..Default::default()
        };
        assert_eq!(c.effective_timeout(None), Duration::from_secs(60));
        assert_eq!(
            c.effective_timeout(Some(Duration::ZERO)),
            Duration::from_secs(60)
        );
        assert_eq!(
            c.effective_timeout(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.effective_timeout(Some(Duration::from_secs(500))),
            Duration::from_secs(120)
        );
    }
}
