//! The `[asset]` table of the server's configuration.
//!
//! ```toml
//! [asset]
//! fetch = true                 # serve Fetch (default)
//! push = true                  # serve Push (default)
//! index = "disk"               # or "memory"
//! path = "asset"               # disk index directory, under the data directory
//! ignored_qualifiers = ["bazel.canonical_id"]
//!
//! [asset.download]             # default: download nothing
//! allowed_hosts = ["github.com", "*.example.org", "127.0.0.1:8000"]
//! allowed_url_prefixes = ["https://mirror.example.com/pub/"]
//! max_bytes = 1073741824
//! timeout_secs = 300
//! max_redirects = 5
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

/// Default largest download: 1 GiB.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 1 << 30;
/// Default longest download: 5 minutes.
pub const DEFAULT_DOWNLOAD_TIMEOUT_SECS: u64 = 300;
/// Default number of redirects followed.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// Settings of the Remote Asset services. Every field is optional.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AssetConfig {
    /// Serve the Fetch service (FetchBlob, FetchDirectory). Default true.
    pub fetch: bool,
    /// Serve the Push service (PushBlob, PushDirectory). Default true.
    /// Anyone who can reach the port can then map a URI to content of
    /// their choosing; clients that verify checksums (Bazel) are safe from
    /// that, others trust the server's users.
    pub push: bool,
    /// Where the index lives: `disk` (default; durable, under the data
    /// directory) or `memory` (lost on restart).
    pub index: IndexKind,
    /// The disk index's directory; relative paths are under the server's
    /// data directory. Default `asset`.
    pub path: Option<PathBuf>,
    /// Qualifier names accepted and dropped, so they take no part in
    /// matching (e.g. Bazel's `bazel.canonical_id`). Any other qualifier
    /// the server does not know is refused with INVALID_ARGUMENT. Default
    /// none.
    pub ignored_qualifiers: BTreeSet<String>,
    /// What the server may download itself on a FetchBlob miss.
    pub download: DownloadConfig,
}

impl Default for AssetConfig {
    fn default() -> Self {
        AssetConfig {
            fetch: true,
            push: true,
            index: IndexKind::Disk,
            path: None,
            ignored_qualifiers: BTreeSet::new(),
            download: DownloadConfig::default(),
        }
    }
}

/// The asset index's backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// One file per entry under the data directory; survives restarts.
    #[default]
    Disk,
    /// In memory; lost on restart.
    Memory,
}

/// `[asset.download]`: the download policy. By default nothing is allowed,
/// and a FetchBlob miss is NOT_FOUND.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadConfig {
    /// Hosts the server may download from (http and https). An entry is a
    /// host name or address (`example.com`, `127.0.0.1`, `[::1]`), which
    /// allows every port, or `host:port`, which allows that port only; a
    /// leading `*.` allows every subdomain (`*.example.com`, not
    /// `example.com` itself). Matching ignores case. Default none.
    pub allowed_hosts: Vec<String>,
    /// URL prefixes the server may download from, compared with the
    /// normalised URL (`https://mirror.example.com/pub/`). Default none.
    pub allowed_url_prefixes: Vec<String>,
    /// Largest download in bytes; a larger one is refused (before any byte
    /// when the server announces its length) and nothing is stored.
    /// Default 1 GiB.
    pub max_bytes: u64,
    /// Longest a download may take, in seconds, redirects included; a
    /// request's own `timeout` may only shorten it. Default 300.
    pub timeout_secs: u64,
    /// Redirects followed, each checked against the policy. Default 5.
    pub max_redirects: u32,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            allowed_hosts: Vec::new(),
            allowed_url_prefixes: Vec::new(),
            max_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
            timeout_secs: DEFAULT_DOWNLOAD_TIMEOUT_SECS,
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

impl DownloadConfig {
    /// Whether the policy allows any download at all.
    pub fn enabled(&self) -> bool {
        !self.allowed_hosts.is_empty() || !self.allowed_url_prefixes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_both_and_download_nothing() {
        let c: AssetConfig = toml::from_str("").unwrap();
        assert_eq!(c, AssetConfig::default());
        assert!(c.fetch && c.push);
        assert_eq!(c.index, IndexKind::Disk);
        assert!(!c.download.enabled());
        let c: AssetConfig = toml::from_str(
            "index = \"memory\"\n[download]\nallowed_hosts = [\"127.0.0.1\"]\nmax_bytes = 10\n",
        )
        .unwrap();
        assert_eq!(c.index, IndexKind::Memory);
        assert!(c.download.enabled());
        assert_eq!(c.download.max_bytes, 10);
        assert_eq!(c.download.timeout_secs, DEFAULT_DOWNLOAD_TIMEOUT_SECS);
        let err = toml::from_str::<AssetConfig>("[download]\nallowed_host = []\n").unwrap_err();
        assert!(err.to_string().contains("allowed_host"), "{err}");
    }
}
