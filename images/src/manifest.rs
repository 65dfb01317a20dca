//! What this crate accepts in manifests, indexes and image configs: OCI and
//! Docker v2 schema 2, with the platform picked from an index.

use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::platform::Platform;

const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Media types of image indexes (OCI) and manifest lists (Docker).
pub(crate) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The parts of an image config this crate uses.
#[derive(Debug, Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// Checks that a manifest is a runnable image and returns its layer list.
pub(crate) fn check_manifest(image: &str, manifest: &OciImageManifest) -> Result<()> {
    let bad = |reason: String| Error::Malformed {
        image: image.to_string(),
        what: "manifest".to_string(),
        reason,
    };
    if manifest.schema_version != 2 {
        return Err(bad(format!(
            "schemaVersion {} (only 2 is supported)",
            manifest.schema_version
        )));
    }
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(bad(format!(
            "config media type {:?} is not an image config (is this an artifact?)",
            manifest.config.media_type
        )));
    }
    for layer in &manifest.layers {
        check_descriptor(image, layer)?;
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(bad(format!(
                "layer {} has media type {:?}; supported: {}",
                layer.digest,
                layer.media_type,
                LAYER_TYPES.join(", ")
            )));
        }
    }
    check_descriptor(image, &manifest.config)
}

fn check_descriptor(image: &str, d: &OciDescriptor) -> Result<()> {
    crate::reference::parse_digest(&d.digest).map_err(|reason| Error::Malformed {
        image: image.to_string(),
        what: "descriptor".to_string(),
        reason,
    })?;
    if d.size < 0 {
        return Err(Error::Malformed {
            image: image.to_string(),
            what: "descriptor".to_string(),
            reason: format!("{} has a negative size", d.digest),
        });
    }
    Ok(())
}

/// Parses the config blob and checks it against the manifest.
pub(crate) fn parse_config(
    image: &str,
    bytes: &[u8],
    manifest: &OciImageManifest,
) -> Result<ImageConfig> {
    let config: ImageConfig = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
        image: image.to_string(),
        what: "image config".to_string(),
        reason: e.to_string(),
    })?;
    if config.rootfs.kind != "layers" {
        return Err(Error::Malformed {
            image: image.to_string(),
            what: "image config".to_string(),
            reason: format!("rootfs.type {:?} (expected \"layers\")", config.rootfs.kind),
        });
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::Malformed {
            image: image.to_string(),
            what: "image config".to_string(),
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    Ok(config)
}

/// Picks the manifest for `platform` from an index's entries.
pub(crate) fn choose_platform(
    image: &str,
    entries: &[ImageIndexEntry],
    platform: &Platform,
) -> Result<String> {
    let found = entries.iter().find(|e| {
        e.platform.as_ref().is_some_and(|p| {
            platform.matches(
                &p.os.to_string(),
                &p.architecture.to_string(),
                p.variant.as_deref(),
            )
        })
    });
    match found {
        Some(entry) => Ok(entry.digest.clone()),
        None => {
            let available: Vec<String> = entries
                .iter()
                .map(|e| match &e.platform {
                    Some(p) => match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    },
                    None => "unknown".to_string(),
                })
                .collect();
            Err(Error::NoPlatform {
                image: image.to_string(),
                platform: platform.to_string(),
                available: available.join(", "),
            })
        }
    }
}

/// `os/arch[/variant]` of a config, for records.
pub(crate) fn config_platform(config: &ImageConfig) -> String {
    match &config.variant {
        Some(v) => format!("{}/{}/{v}", config.os, config.architecture),
        None => format!("{}/{}", config.os, config.architecture),
    }
}
