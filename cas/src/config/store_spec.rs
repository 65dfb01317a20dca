//! The `[cas.store]` and `[cas.stores.<name>]` tables: which backend keeps
//! the blobs, as a tagged enum (`type = "disk" | "memory" | "remote" |
//! "sharded"`). docs/storage.md documents every field.
//!
//! `type` is optional too (a table without it is a disk store), which
//! serde's internally tagged enums cannot express; so a table is read into
//! [`RawStoreSpec`], which has every field of every type, and then checked:
//! a field that does not belong to the table's type is an error naming it,
//! just as an unknown field is.

use std::path::PathBuf;

use serde::Deserialize;

use crate::client_options::{ClientOptions, TlsClientConfig};

/// One backend of the CAS. The layers above it (verification, namespaces,
/// message bounds) are not configured here: the factory always adds them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawStoreSpec")]
pub enum StoreSpec {
    /// One file per blob under a directory; bounded, least recently used
    /// evicted. The default.
    Disk(DiskSpec),
    /// A hash map: unbounded, lost on exit. For tests and throw-away farms.
    Memory(MemorySpec),
    /// Another CAS over REAPI gRPC.
    Remote(RemoteSpec),
    /// Several child stores; each blob lives in the one its hash picks.
    Sharded(ShardedSpec),
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec::Disk(DiskSpec::default())
    }
}

impl StoreSpec {
    /// The `type` value, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSpec::Disk(_) => "disk",
            StoreSpec::Memory(_) => "memory",
            StoreSpec::Remote(_) => "remote",
            StoreSpec::Sharded(_) => "sharded",
        }
    }
}

/// `type = "disk"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskSpec {
    /// Directory of the store; relative paths are under the data directory
    /// (`--data`). Default: `cas` for `[cas.store]`, `cas-<name>` for
    /// `[cas.stores.<name>]`, and `shard-<i>` inside the parent's path for
    /// the shards of a sharded store.
    pub path: Option<PathBuf>,
    /// Upper bound on the bytes kept. Default: what the store holds at
    /// start plus `free_space_percent` of the free space of its file
    /// system.
    pub max_bytes: Option<u64>,
    /// Share of the free space the default bound takes, in percent
    /// (1–100). Default 90. Ignored when `max_bytes` is set.
    pub free_space_percent: Option<u8>,
}

/// `type = "memory"`: no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySpec {}

/// `type = "remote"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `http://host:port` of the other CAS. Required: there is no safe
    /// default, so a missing `url` is an error that names it.
    pub url: Option<String>,
    /// Instance name sent with every call. Default: the caller's own
    /// instance name, passed through.
    pub instance_name: Option<String>,
    /// What this server presents to the other one: `tls` (a table with
    /// `ca`, `cert`, `key`, `server_name`, for an `https://` url) and
    /// `token_file` (a bearer token sent on every call, re-read when it
    /// changes), as for `corral worker`. Default: plaintext for `http://`,
    /// the system's CAs for `https://`, no token.
    pub client: ClientOptions,
}

/// The fields a remote store or action cache takes.
pub(super) const REMOTE_FIELDS: &[&str] = &["url", "instance_name", "tls", "token_file"];

/// `type = "sharded"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardedSpec {
    /// The child stores, in order (`[[cas.store.shards]]`). Each blob goes
    /// to shard `first 8 bytes of its hash mod the number of shards`, so
    /// reordering or resizing the list loses most blobs (clients upload
    /// them again). At least one.
    pub shards: Vec<StoreSpec>,
}

/// The `type` values.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Disk,
    Memory,
    Remote,
    Sharded,
}

/// A store table as written: every field of every type, all optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreSpec {
    #[serde(rename = "type")]
    kind: Option<StoreKind>,
    path: Option<PathBuf>,
    max_bytes: Option<u64>,
    free_space_percent: Option<u8>,
    url: Option<String>,
    instance_name: Option<String>,
    tls: Option<TlsClientConfig>,
    token_file: Option<PathBuf>,
    shards: Option<Vec<StoreSpec>>,
}

impl RawStoreSpec {
    /// The names of the fields that are set.
    fn set_fields(&self) -> Vec<&'static str> {
        [
            ("path", self.path.is_some()),
            ("max_bytes", self.max_bytes.is_some()),
            ("free_space_percent", self.free_space_percent.is_some()),
            ("url", self.url.is_some()),
            ("instance_name", self.instance_name.is_some()),
            ("tls", self.tls.is_some()),
            ("token_file", self.token_file.is_some()),
            ("shards", self.shards.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Refuses the first of `set` that is not in `allowed` for type `kind`.
pub(super) fn only(kind: &str, set: &[&str], allowed: &[&str]) -> Result<(), String> {
    match set.iter().find(|f| !allowed.contains(f)) {
        Some(field) => Err(format!(
            "`{field}` is not a field of a store of type = \"{kind}\" (it takes: {})",
            if allowed.is_empty() {
                "nothing".to_string()
            } else {
                allowed.join(", ")
            }
        )),
        None => Ok(()),
    }
}

impl TryFrom<RawStoreSpec> for StoreSpec {
    type Error = String;

    fn try_from(raw: RawStoreSpec) -> Result<Self, String> {
        let set = raw.set_fields();
        Ok(match raw.kind.unwrap_or(StoreKind::Disk) {
            StoreKind::Disk => {
                only("disk", &set, &["path", "max_bytes", "free_space_percent"])?;
                StoreSpec::Disk(DiskSpec {
                    path: raw.path,
                    max_bytes: raw.max_bytes,
                    free_space_percent: raw.free_space_percent,
                })
            }
            StoreKind::Memory => {
                only("memory", &set, &[])?;
                StoreSpec::Memory(MemorySpec {})
            }
            StoreKind::Remote => {
                only("remote", &set, REMOTE_FIELDS)?;
                StoreSpec::Remote(RemoteSpec {
                    url: raw.url,
                    instance_name: raw.instance_name,
                    client: ClientOptions {
                        tls: raw.tls,
                        token_file: raw.token_file,
                    },
                })
            }
            StoreKind::Sharded => {
                only("sharded", &set, &["shards"])?;
                StoreSpec::Sharded(ShardedSpec {
                    shards: raw.shards.unwrap_or_default(),
                })
            }
        })
    }
}
