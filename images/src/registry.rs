//! Registry access through `oci-client`: tag resolution, manifests (with the
//! platform picked from indexes) and verified blob downloads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::config::ImagesConfig;
use crate::error::{Error, Result};
use crate::manifest::choose_platform;
use crate::platform::Platform;
use crate::policy::uses_plain_http;
use crate::reference::ImageRef;

/// The largest image config accepted (configs are small JSON documents).
const MAX_CONFIG_BYTES: i64 = 16 << 20;

/// Something blobs can be fetched from: a registry or an OCI layout.
pub(crate) trait BlobSource {
    /// Writes the blob to `path`, verified against the descriptor's digest
    /// and size.
    async fn fetch_to_file(&self, desc: &OciDescriptor, path: &Path) -> Result<()>;
    /// Reads a small blob (a config) into memory, verified.
    async fn fetch_bytes(&self, desc: &OciDescriptor) -> Result<Vec<u8>>;
}

/// One `oci-client` per registry, each with its own scheme and token cache.
pub(crate) struct Registries {
    config: ImagesConfig,
    platform: Platform,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Registries {
    pub(crate) fn new(config: ImagesConfig, platform: Platform) -> Registries {
        Registries {
            config,
            platform,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, image: &ImageRef) -> Arc<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = clients.entry(image.registry.clone()).or_insert_with(|| {
            let protocol = if uses_plain_http(&self.config, image) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            };
            Arc::new(Client::new(ClientConfig {
                protocol,
                platform_resolver: None,
                connect_timeout: Some(Duration::from_secs(
                    self.config.connect_timeout_secs.unwrap_or(10),
                )),
                read_timeout: Some(Duration::from_secs(
                    self.config.read_timeout_secs.unwrap_or(60),
                )),
                ..ClientConfig::default()
            }))
        });
        Arc::clone(client)
    }

    fn auth(&self, image: &ImageRef) -> Result<RegistryAuth> {
        let Some(reg) = self.config.registry(&image.registry) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let Some(user) = &reg.username else {
            return Ok(RegistryAuth::Anonymous);
        };
        let password = match (&reg.password, &reg.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(Error::io("read registry password file", file))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            (None, None) => String::new(),
        };
        Ok(RegistryAuth::Basic(user.clone(), password))
    }

    /// Resolves the reference's tag to a digest (one HEAD request).
    pub(crate) async fn resolve_tag(&self, image: &ImageRef) -> Result<String> {
        let auth = self.auth(image)?;
        let digest = self
            .client(image)
            .fetch_manifest_digest(&image.to_client_reference(), &auth)
            .await
            .map_err(|e| map_err(image, e))?;
        crate::reference::parse_digest(&digest).map_err(|reason| Error::Registry {
            image: image.to_string(),
            reason: format!("registry answered with an unusable digest: {reason}"),
        })
    }

    /// Fetches the manifest `image` (which carries a digest) names, following
    /// an index to this platform's manifest. Returns the image manifest and
    /// its digest.
    pub(crate) async fn manifest(&self, image: &ImageRef) -> Result<(OciImageManifest, String)> {
        let auth = self.auth(image)?;
        let client = self.client(image);
        let reference = image.to_client_reference();
        let (manifest, digest) = client
            .pull_manifest(&reference, &auth)
            .await
            .map_err(|e| map_err(image, e))?;
        match manifest {
            OciManifest::Image(m) => Ok((m, digest)),
            OciManifest::ImageIndex(index) => {
                let shown = image.to_string();
                let chosen = choose_platform(&shown, &index.manifests, &self.platform)?;
                let (inner, inner_digest) = client
                    .pull_manifest(&reference.clone_with_digest(chosen.clone()), &auth)
                    .await
                    .map_err(|e| map_err(image, e))?;
                match inner {
                    OciManifest::Image(m) => Ok((m, inner_digest)),
                    OciManifest::ImageIndex(_) => Err(Error::Malformed {
                        image: shown,
                        what: "image index".to_string(),
                        reason: format!("entry {chosen} is another index, not an image"),
                    }),
                }
            }
        }
    }

    pub(crate) fn source<'a>(&'a self, image: &'a ImageRef) -> Result<RegistrySource<'a>> {
        Ok(RegistrySource {
            client: self.client(image),
            auth: self.auth(image)?,
            reference: image.to_client_reference(),
            image,
        })
    }
}

/// Blobs of one repository of one registry.
pub(crate) struct RegistrySource<'a> {
    client: Arc<Client>,
    auth: RegistryAuth,
    reference: oci_client::Reference,
    image: &'a ImageRef,
}

impl RegistrySource<'_> {
    async fn authenticate(&self) {
        self.client
            .store_auth_if_needed(self.reference.resolve_registry(), &self.auth)
            .await;
    }
}

impl BlobSource for RegistrySource<'_> {
    async fn fetch_to_file(&self, desc: &OciDescriptor, path: &Path) -> Result<()> {
        self.authenticate().await;
        let size = u64::try_from(desc.size).map_err(|_| Error::Malformed {
            image: self.image.to_string(),
            what: "blob".to_string(),
            reason: format!("{} has a negative size {}", desc.digest, desc.size),
        })?;
        let file = tokio::fs::File::create(path)
            .await
            .map_err(Error::io("create download file", path))?;
        // oci-client hashes the stream and fails on a digest mismatch; the
        // bound stops a registry that sends more than the descriptor says
        // before it fills the disk.
        let file = crate::bounded_write::BoundedWrite::new(file, size);
        self.client
            .pull_blob(&self.reference, desc, file)
            .await
            .map_err(|e| map_blob_err(self.image, &desc.digest, e))?;
        let len = tokio::fs::metadata(path)
            .await
            .map_err(Error::io("inspect download", path))?
            .len();
        check_size(self.image, desc, len)
    }

    async fn fetch_bytes(&self, desc: &OciDescriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_CONFIG_BYTES {
            return Err(Error::Malformed {
                image: self.image.to_string(),
                what: "image config".to_string(),
                reason: format!("{} bytes is too large", desc.size),
            });
        }
        self.authenticate().await;
        let mut out = Vec::new();
        self.client
            .pull_blob(&self.reference, desc, &mut out)
            .await
            .map_err(|e| map_blob_err(self.image, &desc.digest, e))?;
        check_size(self.image, desc, out.len() as u64)?;
        Ok(out)
    }
}

pub(crate) fn check_size(
    image: &impl std::fmt::Display,
    desc: &OciDescriptor,
    len: u64,
) -> Result<()> {
    if i64::try_from(len).ok() != Some(desc.size) {
        return Err(Error::Malformed {
            image: image.to_string(),
            what: "blob".to_string(),
            reason: format!(
                "{} is {len} bytes, the manifest says {}",
                desc.digest, desc.size
            ),
        });
    }
    Ok(())
}

fn map_blob_err(image: &ImageRef, digest: &str, e: OciDistributionError) -> Error {
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch {
                image: image.to_string(),
                what: format!("blob {digest}"),
                expected,
                actual,
            }
        }
        other => map_err(image, other),
    }
}

fn map_err(image: &ImageRef, e: OciDistributionError) -> Error {
    match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            Error::DigestMismatch {
                image: image.to_string(),
                what: "manifest".to_string(),
                expected,
                actual,
            }
        }
        other => {
            // Keep the whole cause chain: "error sending request" alone says nothing.
            let mut reason = other.to_string();
            let mut source = std::error::Error::source(&other);
            while let Some(s) = source {
                reason.push_str(": ");
                reason.push_str(&s.to_string());
                source = s.source();
            }
            Error::Registry {
                image: image.to_string(),
                reason,
            }
        }
    }
}
