//! Reading an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) for offline, air-gapped import. Every blob read is
//! checked against its digest and size, as a registry download is.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{choose_platform, INDEX_TYPES};
use crate::platform::Platform;
use crate::registry::BlobSource;

/// The annotation that carries a manifest's name (often its tag) in a layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout on disk.
pub(crate) struct Layout {
    dir: PathBuf,
}

/// One image named by the layout's `index.json`.
pub(crate) struct LayoutEntry {
    /// The digest `index.json` points at (an index or a manifest).
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    /// `org.opencontainers.image.ref.name`, if set.
    pub ref_name: Option<String>,
}

impl Layout {
    pub(crate) fn open(dir: &Path) -> Result<Layout> {
        let bad = |reason: String| Error::Layout {
            path: dir.to_path_buf(),
            reason,
        };
        let marker = std::fs::read(dir.join("oci-layout")).map_err(|e| {
            bad(format!(
                "no readable oci-layout file ({e}); is this an OCI image layout?"
            ))
        })?;
        let marker: serde_json::Value =
            serde_json::from_slice(&marker).map_err(|e| bad(format!("oci-layout: {e}")))?;
        if marker.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(bad(
                "oci-layout must say imageLayoutVersion 1.0.0".to_string()
            ));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    fn bad(&self, reason: String) -> Error {
        Error::Layout {
            path: self.dir.clone(),
            reason,
        }
    }

    /// The images `index.json` lists.
    pub(crate) fn entries(&self) -> Result<Vec<LayoutEntry>> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(|e| self.bad(format!("index.json: {e}")))?;
        let index: OciImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| self.bad(format!("index.json: {e}")))?;
        Ok(index
            .manifests
            .into_iter()
            .map(|e| LayoutEntry {
                ref_name: e
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME).cloned()),
                digest: e.digest,
                media_type: e.media_type,
                size: e.size,
            })
            .collect())
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let digest = crate::reference::parse_digest(digest).map_err(|r| self.bad(r))?;
        Ok(self
            .dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")))
    }

    /// Reads a small blob fully and verifies it.
    fn read_verified(&self, digest: &str, size: i64) -> Result<Vec<u8>> {
        if size > 64 << 20 {
            return Err(self.bad(format!(
                "{digest}: {size} bytes is too large for a manifest or config"
            )));
        }
        let path = self.blob_path(digest)?;
        let bytes = std::fs::read(&path).map_err(|e| self.bad(format!("blob {digest}: {e}")))?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if actual != digest {
            return Err(Error::DigestMismatch {
                image: self.dir.display().to_string(),
                what: format!("blob {digest}"),
                expected: digest.to_string(),
                actual,
            });
        }
        if i64::try_from(bytes.len()).ok() != Some(size) {
            return Err(self.bad(format!(
                "blob {digest} is {} bytes, not {size}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The image manifest an entry leads to for `platform`, with its digest.
    pub(crate) fn manifest(
        &self,
        entry: &LayoutEntry,
        platform: &Platform,
    ) -> Result<(OciImageManifest, String)> {
        let shown = self.dir.display().to_string();
        let (mut digest, mut size) = (entry.digest.clone(), entry.size);
        if INDEX_TYPES.contains(&entry.media_type.as_str()) {
            let bytes = self.read_verified(&digest, size)?;
            let index: OciImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| self.bad(format!("index {digest}: {e}")))?;
            digest = choose_platform(&shown, &index.manifests, platform)?;
            size = index
                .manifests
                .iter()
                .find(|m| m.digest == digest)
                .map(|m| m.size)
                .unwrap_or(-1);
        }
        let bytes = self.read_verified(&digest, size)?;
        let manifest: OciImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(format!("manifest {digest}: {e}")))?;
        Ok((manifest, digest))
    }
}

impl BlobSource for Layout {
    async fn fetch_to_file(&self, desc: &OciDescriptor, path: &Path) -> Result<()> {
        let from = self.blob_path(&desc.digest)?;
        let to = path.to_path_buf();
        let dir = self.dir.clone();
        let desc = desc.clone();
        let joined =
            tokio::task::spawn_blocking(move || copy_verified(&dir, &from, &to, &desc)).await;
        joined.map_err(|e| Error::Layout {
            path: self.dir.clone(),
            reason: format!("copy task failed: {e}"),
        })?
    }

    async fn fetch_bytes(&self, desc: &OciDescriptor) -> Result<Vec<u8>> {
        self.read_verified(&desc.digest, desc.size)
    }
}

fn copy_verified(dir: &Path, from: &Path, to: &Path, desc: &OciDescriptor) -> Result<()> {
    let mut input = std::fs::File::open(from).map_err(|e| Error::Layout {
        path: dir.to_path_buf(),
        reason: format!("blob {}: {e}", desc.digest),
    })?;
    let mut output = std::fs::File::create(to).map_err(Error::io("create import file", to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut len: u64 = 0;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(Error::io("read layout blob", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
        std::io::Write::write_all(&mut output, &buf[..n])
            .map_err(Error::io("write import file", to))?;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != desc.digest {
        return Err(Error::DigestMismatch {
            image: dir.display().to_string(),
            what: format!("blob {}", desc.digest),
            expected: desc.digest.clone(),
            actual,
        });
    }
    crate::registry::check_size(&dir.display(), desc, len)
}
