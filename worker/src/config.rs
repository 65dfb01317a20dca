//! The worker's TOML configuration. Every field is optional; `corral up`
//! needs none. Flags of `corral worker` override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The image cache's directory under a worker's data directory.
pub const IMAGES_DIR: &str = "images";

/// The local CAS's bound when `max_cas_bytes` is not set; its executable
/// copies get a quarter of it again.
pub const DEFAULT_MAX_CAS_BYTES: u64 = 10 << 30;

/// `corral worker --config FILE`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Scheduler URL (`unix:/PATH`, `http://HOST:PORT` or
    /// `https://HOST:PORT`); `--scheduler` overrides it.
    pub scheduler: Option<String>,
    /// TLS towards the scheduler and the CAS (`[tls]`: `ca`, `cert`, `key`,
    /// `server_name`), for `https://` URLs: the farm's CA and this
    /// worker's client certificate, whose name the farm's policy lists
    /// under `[[workers]]`. `--tls-ca`, `--tls-cert` and `--tls-key`
    /// override it. Default: none.
    pub tls: Option<corral_cas::client_options::TlsClientConfig>,
    /// File with a bearer token sent on every call to the scheduler and
    /// the CAS (re-read when it changes); `--token-file` overrides it.
    /// Default: none.
    pub token_file: Option<PathBuf>,
    /// CAS URL; default: the scheduler's URL (one server serves both).
    pub cas: Option<String>,
    /// Data directory for the local CAS, staged input trees, build
    /// directories and the runner's socket; `--data` overrides it.
    pub data: Option<PathBuf>,
    /// Name shown in the scheduler and in ExecutedActionMetadata.
    /// Default: the host name.
    pub name: Option<String>,
    /// Actions run at once. Default: the number of cores.
    pub slots: Option<u32>,
    /// Platform properties offered, added to (and overriding) the detected
    /// ones: `OSFamily` (`linux`), `ISA` (e.g. `x86-64`), and `*` for
    /// `unixUID` and `unixGID` (any uid/gid is honoured).
    pub platform: BTreeMap<String, String>,
    /// Bytes the local CAS keeps before it evicts least-recently-used
    /// blobs. Default 10 GiB.
    pub max_cas_bytes: Option<u64>,
    /// Files the staged-tree cache keeps (summed over trees) before
    /// least-recently-used trees not in use are removed. Default 1,000,000.
    pub max_staged_files: Option<u64>,
    /// Connect to a runner already serving on this socket instead of
    /// starting `corral runner` as a child.
    pub runner_socket: Option<PathBuf>,
    /// Runner configuration file handed to the runner the worker starts.
    pub runner_config: Option<PathBuf>,
    /// Sandbox profile for every action ("" = the runner's default).
    pub profile: String,
    /// Blob fetches and uploads in flight at once. Default 8.
    pub parallel_transfers: Option<usize>,
    /// Run actions that name a `container-image` (the worker then offers
    /// `container-image=*`). Default true.
    pub images_enabled: Option<bool>,
    /// The image cache (`[worker.images]` in `corral up`, `[images]` here):
    /// size bound, registries and credentials, allowed repositories,
    /// offline use. See docs/images.md. Kept under DATA/images.
    pub images: corral_images::ImagesConfig,
    /// Serve `/metrics` (the worker's metrics, Prometheus text format) and
    /// `/healthz` over HTTP on this address, e.g. `127.0.0.1:9101`.
    /// Default: none. Only for a standalone `corral worker`: under
    /// `corral up` the worker's metrics are on the server's port.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    /// Reads and parses `path`, naming it in any error.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("parsing config {}: {e}", path.display())))
    }

    /// What the worker presents to the scheduler and the CAS.
    pub fn client_options(&self) -> corral_cas::ClientOptions {
        corral_cas::ClientOptions {
            tls: self.tls.clone(),
            token_file: self.token_file.clone(),
        }
    }

    /// Files an action must never read: the client key and the token
    /// file (the runner hides them; see `WorkerSettings::hidden`).
    pub fn private_files(&self) -> Vec<PathBuf> {
        let key = self.tls.as_ref().and_then(|t| t.key.clone());
        key.into_iter().chain(self.token_file.clone()).collect()
    }

    /// Whether actions may name a `container-image`.
    pub fn images_enabled(&self) -> bool {
        self.images_enabled.unwrap_or(true)
    }

    /// The platform the worker offers: detected defaults, then the
    /// configured ones on top.
    pub fn platform(&self) -> Vec<(String, String)> {
        let mut props = detected_platform();
        if self.images_enabled() {
            props.insert(crate::images::PROPERTY.to_string(), "*".to_string());
        }
        for (k, v) in &self.platform {
            props.insert(k.clone(), v.clone());
        }
        props.into_iter().collect()
    }
}

/// `OSFamily`, `ISA` in the spelling BuildStream uses, and `*` for the ids
/// the runner can give the command.
pub fn detected_platform() -> BTreeMap<String, String> {
    let isa = match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "aarch64",
        other => other,
    };
    BTreeMap::from([
        ("OSFamily".to_string(), std::env::consts::OS.to_string()),
        ("ISA".to_string(), isa.to_string()),
        ("unixUID".to_string(), "*".to_string()),
        ("unixGID".to_string(), "*".to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_properties_override_detected_ones() {
        let c: WorkerConfig = toml::from_str(
            r#"
            slots = 3
            [platform]
            ISA = "x86_64"
            pool = "big"
            "#,
        )
        .unwrap();
        let p: BTreeMap<_, _> = c.platform().into_iter().collect();
        assert_eq!(p["ISA"], "x86_64");
        assert_eq!(p["pool"], "big");
        assert_eq!(p["OSFamily"], "linux");
        assert_eq!(c.slots, Some(3));
    }

    #[test]
    fn tls_and_token_file_make_the_client_options() {
        let c: WorkerConfig = toml::from_str(
            r#"
            scheduler = "https://farm.example:8981"
            token_file = "/etc/corral/worker.token"
            [tls]
            ca = "/etc/corral/ca.pem"
            cert = "/etc/corral/w1.pem"
            key = "/etc/corral/w1.key"
            "#,
        )
        .unwrap();
        let options = c.client_options();
        assert_eq!(
            options.token_file.as_deref(),
            Some(Path::new("/etc/corral/worker.token"))
        );
        let tls = options.tls.unwrap();
        assert_eq!(tls.cert.as_deref(), Some(Path::new("/etc/corral/w1.pem")));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = toml::from_str::<WorkerConfig>("slot = 3").unwrap_err();
        assert!(e.to_string().contains("slot"), "{e}");
    }
}
