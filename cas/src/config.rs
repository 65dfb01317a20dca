//! Settings of the storage services, read from the `[cas]` table of the
//! server's TOML file (and its sub-tables `[cas.store]`, `[cas.stores.*]`,
//! `[cas.message_limits]`), plus the `[action_cache]` table's type. Every
//! field is optional; the defaults suit a single machine.

mod action_cache_spec;
mod store_spec;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use action_cache_spec::{ActionCacheDiskSpec, ActionCacheSpec};
pub use store_spec::{DiskSpec, MemorySpec, RemoteSpec, ShardedSpec, StoreSpec};

use crate::error::{Error, Result};
use crate::message::MessageLimits;

/// The namespace name that means "the default store" in `[cas] namespaces`.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default advertised batch limit: 4 MiB, what Bazel and most clients
/// expect from a gRPC server.
pub const DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES: u64 = 4 << 20;
/// Default time an interrupted ByteStream upload is kept for resumption.
pub const DEFAULT_UPLOAD_RESUME_SECS: u64 = 600;
/// Default bound on ByteStream uploads open at once (being written or
/// waiting to be resumed). Each holds a temp file and its descriptor.
pub const DEFAULT_MAX_OPEN_UPLOADS: u64 = 10_000;
/// Default bound on the bytes those uploads hold: 4 GiB.
pub const DEFAULT_MAX_OPEN_UPLOAD_BYTES: u64 = 4 << 30;
/// Default and largest number of directories in one GetTree page.
pub const DEFAULT_GET_TREE_PAGE_SIZE: u32 = 1000;

/// The `[cas]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Upper bound on the bytes the default disk store keeps; least
    /// recently used blobs are evicted beyond it. Overrides `max_bytes` of
    /// a disk `[cas.store]`, and is an error with any other type. Default:
    /// see `DiskSpec::max_bytes` (it follows the free space).
    /// `--max-cas-bytes` sets it.
    pub max_cas_bytes: Option<u64>,
    /// Largest total blob size of one BatchUpdateBlobs/BatchReadBlobs call,
    /// advertised in Capabilities; the gRPC message limit is set from it.
    /// Default 4 MiB.
    pub max_batch_total_size_bytes: Option<u64>,
    /// Seconds an interrupted ByteStream upload is kept so that the client
    /// can resume it after QueryWriteStatus. Default 600.
    pub upload_resume_secs: Option<u64>,
    /// Most ByteStream uploads open at once, counting both those being
    /// written and interrupted ones kept for resumption; a new upload past
    /// it is refused with RESOURCE_EXHAUSTED until some finish or expire.
    /// Bounds what clients that abandon uploads can pin. Default 10,000.
    pub max_open_uploads: Option<u64>,
    /// Bytes the open uploads may hold (in `tmp/` for the disk store) before
    /// new uploads are refused with RESOURCE_EXHAUSTED; uploads already open
    /// may finish. Default 4 GiB.
    pub max_open_upload_bytes: Option<u64>,
    /// Largest number of directories returned in one GetTree page (a smaller
    /// `page_size` in the request wins). Default 1000.
    pub get_tree_page_size: Option<u32>,
    /// The backend of every instance name no namespace claims
    /// (`[cas.store]`). Default: a disk store under `<data>/cas`.
    pub store: Option<StoreSpec>,
    /// Backends of namespaces, by namespace name (`[cas.stores.<name>]`).
    #[serde(default)]
    pub stores: BTreeMap<String, StoreSpec>,
    /// Instance-name prefix → namespace name. The longest prefix ending at
    /// a `/` boundary wins; the name is a key of `stores` or `"default"`.
    /// Default: none, every instance name shares the default store.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Size caps of messages decoded from client-named blobs
    /// (`[cas.message_limits]`).
    #[serde(default)]
    pub message_limits: MessageLimits,
}

impl Config {
    /// The default store's backend (`[cas.store]`, or a disk store).
    pub fn default_store(&self) -> StoreSpec {
        self.store.clone().unwrap_or_default()
    }

    /// Refuses settings the factory could not build, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.max_cas_bytes.is_some() && !matches!(self.default_store(), StoreSpec::Disk(_)) {
            return Err(Error::invalid(
                "cas.max_cas_bytes",
                format!(
                    "applies to a disk [cas.store], not to type = {:?}; set the bound in the store's table",
                    self.default_store().kind()
                ),
            ));
        }
        validate_spec(&self.default_store(), "cas.store")?;
        for (name, spec) in &self.stores {
            if name == DEFAULT_NAMESPACE {
                return Err(Error::invalid(
                    format!("cas.stores.{name}"),
                    "\"default\" names [cas.store]; pick another name",
                ));
            }
            validate_spec(spec, &format!("cas.stores.{name}"))?;
            if !self.namespaces.values().any(|n| n == name) {
                return Err(Error::invalid(
                    format!("cas.stores.{name}"),
                    "no entry of cas.namespaces uses it",
                ));
            }
        }
        for (prefix, name) in &self.namespaces {
            if name != DEFAULT_NAMESPACE && !self.stores.contains_key(name) {
                return Err(Error::invalid(
                    format!("cas.namespaces.{prefix:?}"),
                    format!("names {name:?}, which is neither a [cas.stores.{name}] table nor \"default\""),
                ));
            }
        }
        Ok(())
    }

    pub fn max_batch_total_size_bytes(&self) -> u64 {
        self.max_batch_total_size_bytes
            .unwrap_or(DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES)
            .max(1)
    }

    pub fn upload_resume_secs(&self) -> u64 {
        self.upload_resume_secs
            .unwrap_or(DEFAULT_UPLOAD_RESUME_SECS)
    }

    pub fn max_open_uploads(&self) -> u64 {
        self.max_open_uploads
            .unwrap_or(DEFAULT_MAX_OPEN_UPLOADS)
            .max(1)
    }

    pub fn max_open_upload_bytes(&self) -> u64 {
        self.max_open_upload_bytes
            .unwrap_or(DEFAULT_MAX_OPEN_UPLOAD_BYTES)
            .max(1)
    }

    pub fn get_tree_page_size(&self) -> u32 {
        self.get_tree_page_size
            .unwrap_or(DEFAULT_GET_TREE_PAGE_SIZE)
            .max(1)
    }

    /// The gRPC message size limit (both directions) that lets a full batch
    /// through: the batch plus room for per-blob framing.
    pub fn max_message_bytes(&self) -> usize {
        let batch = self.max_batch_total_size_bytes();
        usize::try_from(batch.saturating_mul(2).saturating_add(1 << 20)).unwrap_or(usize::MAX)
    }
}

fn validate_spec(spec: &StoreSpec, field: &str) -> Result<()> {
    match spec {
        StoreSpec::Disk(d) => {
            if let Some(p) = d.free_space_percent {
                if !(1..=100).contains(&p) {
                    return Err(Error::invalid(
                        format!("{field}.free_space_percent"),
                        format!("{p} is not between 1 and 100"),
                    ));
                }
            }
            Ok(())
        }
        StoreSpec::Memory(_) => Ok(()),
        StoreSpec::Remote(r) => match &r.url {
            Some(_) => Ok(()),
            None => Err(Error::invalid(
                format!("{field}.url"),
                "a remote store needs the url of the other CAS",
            )),
        },
        StoreSpec::Sharded(s) => {
            if s.shards.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.shards"),
                    "a sharded store needs at least one shard",
                ));
            }
            for (i, shard) in s.shards.iter().enumerate() {
                validate_spec(shard, &format!("{field}.shards[{i}]"))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_fields_and_refuses_unknown_ones() {
        let c: Config = toml::from_str(
            "max_cas_bytes = 1000\nget_tree_page_size = 5\nmax_open_uploads = 7\nmax_open_upload_bytes = 9",
        )
        .unwrap();
        assert_eq!(c.max_cas_bytes, Some(1000));
        assert_eq!(c.get_tree_page_size(), 5);
        assert_eq!((c.max_open_uploads(), c.max_open_upload_bytes()), (7, 9));
        assert_eq!(
            Config::default().max_open_uploads(),
            DEFAULT_MAX_OPEN_UPLOADS
        );
        assert_eq!(
            Config::default().max_open_upload_bytes(),
            DEFAULT_MAX_OPEN_UPLOAD_BYTES
        );
        assert_eq!(
            c.max_batch_total_size_bytes(),
            DEFAULT_MAX_BATCH_TOTAL_SIZE_BYTES
        );
        let err = toml::from_str::<Config>("max_cas_byte = 1").unwrap_err();
        assert!(err.to_string().contains("max_cas_byte"), "{err}");
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
    }

    #[test]
    fn store_tables_are_tagged_and_checked() {
        let c: Config = toml::from_str(
            r#"
            namespaces = { "team-a" = "a", "team-a/shared" = "default" }
            [store]
            type = "sharded"
            [[store.shards]]
            type = "disk"
            path = "/srv/cas-0"
            max_bytes = 100
            [[store.shards]]
            type = "memory"
            [stores.a]
            type = "remote"
            url = "https://cas-a:8980"
            token_file = "/etc/corral/upstream.token"
            tls = { ca = "/etc/corral/ca.pem" }
            [message_limits]
            action = 1000
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let StoreSpec::Sharded(sharded) = c.default_store() else {
            panic!("{:?}", c.store);
        };
        assert_eq!(sharded.shards.len(), 2);
        let StoreSpec::Remote(remote) = &c.stores["a"] else {
            panic!("{:?}", c.stores["a"]);
        };
        assert_eq!(
            remote.client.token_file.as_deref(),
            Some(std::path::Path::new("/etc/corral/upstream.token"))
        );
        assert!(remote.client.tls.as_ref().is_some_and(|t| t.ca.is_some()));
        assert_eq!(c.message_limits.action, Some(1000));
        assert_eq!(Config::default().default_store(), StoreSpec::default());

        for (text, names) in [
            (
                "[store]
type = \"disk\"
max_byte = 1",
                "max_byte",
            ),
            (
                "[store]
type = \"tape\"",
                "tape",
            ),
            (
                "[store]
type = \"memory\"
path = \"x\"",
                "path",
            ),
            (
                "[store]
type = \"disk\"
token_file = \"x\"",
                "token_file",
            ),
            (
                "[store]
type = \"remote\"
url = \"https://x\"
tls = { ca = \"a\", cipher = \"b\" }",
                "cipher",
            ),
            (
                "[message_limits]
actions = 1",
                "actions",
            ),
        ] {
            let e = toml::from_str::<Config>(text).unwrap_err();
            assert!(e.to_string().contains(names), "{text}: {e}");
        }
        for (text, names) in [
            (
                "[store]
type = \"remote\"",
                "cas.store.url",
            ),
            (
                "[store]
type = \"sharded\"",
                "cas.store.shards",
            ),
            ("namespaces = { x = \"nope\" }", "cas.namespaces"),
            (
                "[stores.unused]
type = \"memory\"",
                "cas.stores.unused",
            ),
            (
                "max_cas_bytes = 1
[store]
type = \"memory\"",
                "cas.max_cas_bytes",
            ),
            (
                "[store]
type = \"disk\"
free_space_percent = 0",
                "free_space_percent",
            ),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(names), "{text}: {e}");
        }
        let untyped: Config = toml::from_str("[store]\nmax_bytes = 5").unwrap();
        assert_eq!(
            untyped.default_store(),
            StoreSpec::Disk(DiskSpec {
                max_bytes: Some(5),
                ..Default::default()
            })
        );
        let ac: ActionCacheSpec = toml::from_str("type = \"memory\"").unwrap();
        assert_eq!(
            toml::from_str::<ActionCacheSpec>("").unwrap(),
            ActionCacheSpec::default()
        );
        assert_eq!(ac, ActionCacheSpec::Memory(MemorySpec {}));
        assert!(toml::from_str::<ActionCacheSpec>(
            "type = \"disk\"
url = \"x\""
        )
        .is_err());
    }
}
