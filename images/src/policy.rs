//! Which registries and repositories may be used, and over which scheme.

use std::net::IpAddr;

use crate::config::ImagesConfig;
use crate::error::{Error, Result};
use crate::reference::ImageRef;

/// Checks `image` against the `allowed` list of the config.
pub fn check_allowed(config: &ImagesConfig, image: &ImageRef) -> Result<()> {
    let Some(allowed) = &config.allowed else {
        return Ok(());
    };
    let repo = image.repository.as_str();
    let ok = allowed.iter().any(|entry| match entry.split_once('/') {
        None => entry == &image.registry,
        Some((registry, prefix)) => {
            registry == image.registry
                && (repo == prefix
                    || repo
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/')))
        }
    });
    if ok {
        Ok(())
    } else {
        Err(Error::NotAllowed {
            image: image.to_string(),
            reason: format!(
                "{} is not in the allowed list ({})",
                image.name(),
                allowed.join(", ")
            ),
        })
    }
}

/// Whether the registry is reached over plain HTTP: only loopback
/// registries and those the operator marked insecure, as Docker does.
pub fn uses_plain_http(config: &ImagesConfig, image: &ImageRef) -> bool {
    is_loopback(image.registry_host())
        || config
            .registry(&image.registry)
            .and_then(|r| r.insecure)
            .unwrap_or(false)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    #[test]
    fn allowed_entries_match_registries_and_repository_prefixes() {
        let cfg =
            ImagesConfig::from_toml(r#"allowed = ["127.0.0.1:5000", "ghcr.io/team"]"#).unwrap();
        assert!(check_allowed(&cfg, &r("127.0.0.1:5000/any/thing")).is_ok());
        assert!(check_allowed(&cfg, &r("ghcr.io/team")).is_ok());
        assert!(check_allowed(&cfg, &r("ghcr.io/team/sub:1")).is_ok());
        let err = check_allowed(&cfg, &r("ghcr.io/teamx/sub"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ghcr.io/teamx/sub") && err.contains("not allowed"),
            "{err}"
        );
        assert!(check_allowed(&cfg, &r("127.0.0.1:5001/x")).is_err());
        let open = ImagesConfig::default();
        assert!(check_allowed(&open, &r("docker.io/library/busybox")).is_ok());
    }

    #[test]
    fn plain_http_only_for_loopback_or_insecure() {
        let cfg =
            ImagesConfig::from_toml("[registries.\"10.0.0.1:5000\"]\ninsecure = true").unwrap();
        assert!(uses_plain_http(&cfg, &r("127.0.0.1:5000/x")));
        assert!(uses_plain_http(&cfg, &r("127.5.0.1:5000/x")));
        assert!(uses_plain_http(&cfg, &r("localhost:5000/x")));
        assert!(uses_plain_http(&cfg, &r("[::1]:5000/x")));
        assert!(uses_plain_http(&cfg, &r("10.0.0.1:5000/x")));
        assert!(!uses_plain_http(&cfg, &r("10.0.0.2:5000/x")));
        assert!(!uses_plain_http(&cfg, &r("ghcr.io/x")));
    }
}
