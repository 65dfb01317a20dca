//! The `[action_cache]` table: which backend keeps action results, as a
//! tagged enum (`type = "disk" | "memory" | "remote"`). docs/storage.md
//! documents every field. Like a store table, `type` is optional (disk)
//! and a field of another type is an error naming it.

use std::path::PathBuf;

use serde::Deserialize;

use super::store_spec::{only, MemorySpec, RemoteSpec, REMOTE_FIELDS};
use crate::client_options::{ClientOptions, TlsClientConfig};

/// The action cache's backend. Validation and the completeness check are
/// not configured here: the factory always adds them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawActionCacheSpec")]
pub enum ActionCacheSpec {
    /// One file per entry under a directory. The default.
    Disk(ActionCacheDiskSpec),
    /// A hash map, lost on exit.
    Memory(MemorySpec),
    /// Another server's ActionCache service over REAPI gRPC.
    Remote(RemoteSpec),
}

impl Default for ActionCacheSpec {
    fn default() -> Self {
        ActionCacheSpec::Disk(ActionCacheDiskSpec::default())
    }
}

/// `[action_cache] type = "disk"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionCacheDiskSpec {
    /// Directory of the entries; relative paths are under the data
    /// directory. Default `ac`.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ActionCacheKind {
    Disk,
    Memory,
    Remote,
}

/// The table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionCacheSpec {
    #[serde(rename = "type")]
    kind: Option<ActionCacheKind>,
    path: Option<PathBuf>,
    url: Option<String>,
    instance_name: Option<String>,
    tls: Option<TlsClientConfig>,
    token_file: Option<PathBuf>,
}

impl TryFrom<RawActionCacheSpec> for ActionCacheSpec {
    type Error = String;

    fn try_from(raw: RawActionCacheSpec) -> Result<Self, String> {
        let set: Vec<&str> = [
            ("path", raw.path.is_some()),
            ("url", raw.url.is_some()),
            ("instance_name", raw.instance_name.is_some()),
            ("tls", raw.tls.is_some()),
            ("token_file", raw.token_file.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        Ok(match raw.kind.unwrap_or(ActionCacheKind::Disk) {
            ActionCacheKind::Disk => {
                only("disk", &set, &["path"])?;
                ActionCacheSpec::Disk(ActionCacheDiskSpec { path: raw.path })
            }
            ActionCacheKind::Memory => {
                only("memory", &set, &[])?;
                ActionCacheSpec::Memory(MemorySpec {})
            }
            ActionCacheKind::Remote => {
                only("remote", &set, REMOTE_FIELDS)?;
                ActionCacheSpec::Remote(RemoteSpec {
                    url: raw.url,
                    instance_name: raw.instance_name,
                    client: ClientOptions {
                        tls: raw.tls,
                        token_file: raw.token_file,
                    },
                })
            }
        })
    }
}
