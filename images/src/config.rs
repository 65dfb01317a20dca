//! The `[images]` configuration: cache bound, platform, policy and
//! per-registry credentials. Every field is optional; the defaults are safe
//! (any registry, TLS except on loopback, 10 GiB of layers, and bounds on
//! what one layer or image may unpack to).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::platform::Platform;

/// Default bound of the layer cache: 10 GiB.
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 10 << 30;

/// Default bound of the uncompressed bytes of one layer: 8 GiB. Real layers
/// rarely pass a few GiB; a gzip or zstd bomb passes any bound quickly.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 8 << 30;

/// Default bound of the uncompressed bytes of one image, all layers
/// together: 32 GiB, above the largest toolchain images (CUDA development
/// images unpack to 10 to 20 GiB) yet far below a disk's size.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 32 << 30;

/// Default bound of the tar entries of one layer: a full Debian with
/// compilers has about 100,000 files, so 1,000,000 leaves ample room while
/// keeping a tar of millions of empty entries from exhausting inodes.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 1_000_000;

/// Configuration of an [`crate::ImageCache`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Upper bound, in bytes, of the unpacked layers kept on disk. Layers not
    /// in use are evicted, least recently used first, once it is exceeded.
    /// Default: 10 GiB.
    pub max_cache_bytes: Option<u64>,
    /// The platform chosen from image indexes, as `os/arch[/variant]`.
    /// Default: this machine's (`linux/amd64` on x86-64).
    pub platform: Option<String>,
    /// Never contact a registry: only images already in the cache (pulled or
    /// imported) can be used, and tags resolve through the cache's records.
    /// Default: false.
    pub offline: Option<bool>,
    /// Unpack without root: skip device nodes, do not keep file owners.
    /// Default: true unless the process runs as uid 0.
    pub rootless: Option<bool>,
    /// Registries or repositories actions may use, each `REGISTRY` (all of its
    /// repositories) or `REGISTRY/REPO` (that repository and those below it).
    /// Default: every registry is allowed.
    pub allowed: Option<Vec<String>>,
    /// Seconds to wait for a registry connection. Default: 10.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds a registry read may stall before the pull fails. Default: 60.
    pub read_timeout_secs: Option<u64>,
    /// Bound of the uncompressed bytes of one layer (the tar stream, plus
    /// what its sparse files and hard-link copies expand to). A layer that
    /// passes it is refused while it is being decompressed, and nothing of
    /// it is kept. Default: 8 GiB.
    pub max_layer_bytes: Option<u64>,
    /// Bound of the uncompressed bytes of one image, all its layers together
    /// (layers already in the cache count with their unpacked size).
    /// Default: 32 GiB.
    pub max_image_bytes: Option<u64>,
    /// Bound of the tar entries (files, directories, links…) of one layer.
    /// Default: 1,000,000.
    pub max_layer_entries: Option<u64>,
    /// Per-registry settings, keyed by `host[:port]` as written in references.
    pub registries: Option<BTreeMap<String, RegistryConfig>>,
}

/// Settings of one registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// User name for basic or token authentication. Default: anonymous.
    pub username: Option<String>,
    /// Password or token, inline. Prefer `password_file`.
    pub password: Option<String>,
    /// File whose content (trailing newline removed) is the password.
    pub password_file: Option<PathBuf>,
    /// Allow plain HTTP to this registry although it is not on a loopback
    /// address. Default: false (loopback registries may always use HTTP).
    pub insecure: Option<bool>,
}

impl ImagesConfig {
    /// Parses TOML text; unknown fields are errors.
    pub fn from_toml(text: &str) -> Result<ImagesConfig> {
        let cfg: ImagesConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<ImagesConfig> {
        let text = std::fs::read_to_string(path).map_err(Error::io("read images config", path))?;
        let in_file = |e: &dyn std::fmt::Display| Error::Config(format!("{}: {e}", path.display()));
        let cfg: ImagesConfig = toml::from_str(&text).map_err(|e| in_file(&e))?;
        match cfg.validate() {
            Err(Error::Config(reason)) => Err(in_file(&reason)),
            other => other.map(|()| cfg),
        }
    }

    /// Checks the fields that can be checked without the network.
    pub fn validate(&self) -> Result<()> {
        self.platform()?;
        let bounds = [
            ("max_layer_bytes", self.max_layer_bytes),
            ("max_image_bytes", self.max_image_bytes),
            ("max_layer_entries", self.max_layer_entries),
        ];
        for (key, value) in bounds {
            if value == Some(0) {
                return Err(Error::Config(format!(
                    "{key} = 0 would refuse every layer; leave it out for the default"
                )));
            }
        }
        for entry in self.allowed.iter().flatten() {
            if entry.is_empty() || entry.contains("://") || entry.ends_with('/') {
                return Err(Error::Config(format!(
                    "allowed entry {entry:?} must be REGISTRY or REGISTRY/REPO, without scheme or trailing '/'"
                )));
            }
        }
        for (name, reg) in self.registries.iter().flatten() {
            if reg.password.is_some() && reg.password_file.is_some() {
                return Err(Error::Config(format!(
                    "registries.{name:?}: set password or password_file, not both"
                )));
            }
            if reg.username.is_none() && (reg.password.is_some() || reg.password_file.is_some()) {
                return Err(Error::Config(format!(
                    "registries.{name:?}: a password needs a username"
                )));
            }
        }
        Ok(())
    }

    /// The platform to pick from image indexes.
    pub fn platform(&self) -> Result<Platform> {
        match &self.platform {
            Some(text) => Platform::parse(text).map_err(Error::Config),
            None => Ok(Platform::host()),
        }
    }

    /// The effective cache bound.
    pub fn max_cache_bytes(&self) -> u64 {
        self.max_cache_bytes.unwrap_or(DEFAULT_MAX_CACHE_BYTES)
    }

    /// The effective bound of one layer's uncompressed bytes.
    pub fn max_layer_bytes(&self) -> u64 {
        self.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES)
    }

    /// The effective bound of one image's uncompressed bytes.
    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_bytes.unwrap_or(DEFAULT_MAX_IMAGE_BYTES)
    }

    /// The effective bound of one layer's tar entries.
    pub fn max_layer_entries(&self) -> u64 {
        self.max_layer_entries.unwrap_or(DEFAULT_MAX_LAYER_ENTRIES)
    }

    /// Whether unpacking runs rootless.
    pub fn rootless(&self) -> bool {
        self.rootless
            .unwrap_or_else(|| !nix::unistd::geteuid().is_root())
    }

    /// Settings of `registry`, if any.
    pub fn registry(&self, registry: &str) -> Option<&RegistryConfig> {
        self.registries.as_ref().and_then(|r| r.get(registry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_parses_and_unknown_fields_are_refused() {
        let cfg = ImagesConfig::from_toml(
            r#"
            max_cache_bytes = 1000
            platform = "linux/arm64/v8"
            offline = true
            rootless = true
            allowed = ["127.0.0.1:5000", "ghcr.io/team"]
            connect_timeout_secs = 3
            read_timeout_secs = 4
            max_layer_bytes = 5
            max_image_bytes = 6
            max_layer_entries = 7
            [registries."ghcr.io"]
            username = "u"
            password_file = "/run/secret"
            insecure = false
            "#,
        )
        .unwrap();
        assert_eq!(cfg.max_cache_bytes(), 1000);
        assert_eq!(cfg.platform().unwrap().to_string(), "linux/arm64/v8");
        assert!(cfg.registry("ghcr.io").is_some());
        assert_eq!(
            (
                cfg.max_layer_bytes(),
                cfg.max_image_bytes(),
                cfg.max_layer_entries()
            ),
            (5, 6, 7)
        );

        let err = ImagesConfig::from_toml("max_cache = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_cache"), "{err}");
        let err = ImagesConfig::from_toml("platform = \"linux\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("platform"), "{err}");
        let err = ImagesConfig::from_toml("allowed = [\"https://x\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed entry"), "{err}");
        let err = ImagesConfig::from_toml("[registries.x]\npassword = \"p\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("username"), "{err}");
        let err = ImagesConfig::from_toml("max_layer_entries = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_layer_entries"), "{err}");
    }

    #[test]
    fn defaults_are_safe() {
        let cfg = ImagesConfig::from_toml("").unwrap();
        assert_eq!(cfg.max_cache_bytes(), DEFAULT_MAX_CACHE_BYTES);
        assert_eq!(cfg.max_layer_bytes(), 8 << 30);
        assert_eq!(cfg.max_image_bytes(), 32 << 30);
        assert_eq!(cfg.max_layer_entries(), 1_000_000);
        assert_eq!(cfg.offline, None);
        assert!(cfg.allowed.is_none());
    }
}
