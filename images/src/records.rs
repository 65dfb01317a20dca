//! Image records: what the cache knows about each image it holds.
//!
//! One JSON file per image under `images/`, named by the digest the
//! reference resolved to. A record is written only after all its layers are
//! in the layer store, and dropped when one of them is evicted, so a record
//! always describes a usable image (short of a concurrent eviction, which
//! pins rule out for images in use).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One image held by the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The digest the reference resolved to: an image index's digest when
    /// the registry served an index, otherwise the manifest's.
    pub digest: String,
    /// The digest of the platform-specific image manifest that runs.
    pub manifest_digest: String,
    /// The digest of the image config.
    pub config_digest: String,
    /// `os/arch[/variant]` of the image.
    pub platform: String,
    /// Layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// The image's `Env`, the base environment of an action.
    pub env: Vec<String>,
    /// Tagged names (`REGISTRY/REPO:TAG`) last seen resolving to this image;
    /// the cache answers tag look-ups from them when offline.
    pub names: Vec<String>,
    /// Repositories (`REGISTRY/REPO`) this image was pulled or imported as.
    pub repositories: Vec<String>,
}

/// One layer of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the layer blob as stored in the registry (the cache key).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// All records, in memory and on disk.
#[derive(Debug)]
pub(crate) struct Records {
    dir: PathBuf,
    map: Mutex<HashMap<String, ImageRecord>>,
}

impl Records {
    pub(crate) fn open(root: &Path) -> Result<Records> {
        let dir = root.join("images");
        std::fs::create_dir_all(&dir).map_err(Error::io("create image records directory", &dir))?;
        let mut map = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(Error::io("list image records", &dir))? {
            let path = entry.map_err(Error::io("list image records", &dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).ok())
                {
                    Some(record) => {
                        map.insert(record.digest.clone(), record);
                    }
                    None => {
                        tracing::warn!(path = %path.display(), "dropping unreadable image record");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        Ok(Records {
            dir,
            map: Mutex::new(map),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ImageRecord>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.json",
            digest.strip_prefix("sha256:").unwrap_or(digest)
        ))
    }

    /// The record reached by `digest`, as the resolved or the manifest digest.
    pub(crate) fn by_digest(&self, digest: &str) -> Option<ImageRecord> {
        let map = self.lock();
        map.get(digest)
            .cloned()
            .or_else(|| map.values().find(|r| r.manifest_digest == digest).cloned())
    }

    /// The record a tagged name (`REGISTRY/REPO:TAG`) last resolved to.
    pub(crate) fn by_name(&self, name: &str) -> Option<ImageRecord> {
        self.lock()
            .values()
            .find(|r| r.names.iter().any(|n| n == name))
            .cloned()
    }

    /// Stores a record, merging names, and moves `name` (a tag) to it.
    pub(crate) fn put(
        &self,
        mut record: ImageRecord,
        name: Option<&str>,
        repository: Option<&str>,
    ) -> Result<ImageRecord> {
        let mut map = self.lock();
        if let Some(old) = map.get(&record.digest) {
            for n in &old.names {
                if !record.names.contains(n) {
                    record.names.push(n.clone());
                }
            }
            for r in &old.repositories {
                if !record.repositories.contains(r) {
                    record.repositories.push(r.clone());
                }
            }
        }
        if let Some(repository) = repository {
            if !record.repositories.iter().any(|r| r == repository) {
                record.repositories.push(repository.to_string());
            }
        }
        let mut changed = Vec::new();
        if let Some(name) = name {
            // A tag names one image at a time.
            for other in map.values_mut() {
                if other.digest != record.digest && other.names.iter().any(|n| n == name) {
                    other.names.retain(|n| n != name);
                    changed.push(other.clone());
                }
            }
            if !record.names.iter().any(|n| n == name) {
                record.names.push(name.to_string());
            }
        }
        changed.push(record.clone());
        for r in &changed {
            self.write(r)?;
        }
        map.insert(record.digest.clone(), record.clone());
        Ok(record)
    }

    fn write(&self, record: &ImageRecord) -> Result<()> {
        let path = self.path(&record.digest);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::io("encode image record", &path)(std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(Error::io("write image record", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("write image record", &path))
    }

    /// Drops every record that uses one of `layers`.
    pub(crate) fn drop_using(&self, layers: &[String]) -> Vec<ImageRecord> {
        let mut map = self.lock();
        let gone: Vec<String> = map
            .values()
            .filter(|r| r.layers.iter().any(|l| layers.contains(&l.digest)))
            .map(|r| r.digest.clone())
            .collect();
        let mut dropped = Vec::new();
        for digest in gone {
            if let Some(r) = map.remove(&digest) {
                let _ = std::fs::remove_file(self.path(&digest));
                dropped.push(r);
            }
        }
        dropped
    }

    /// Every record, sorted by digest.
    pub(crate) fn all(&self) -> Vec<ImageRecord> {
        let mut all: Vec<ImageRecord> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.digest.cmp(&b.digest));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &str, layer: &str) -> ImageRecord {
        ImageRecord {
            digest: digest.to_string(),
            manifest_digest: format!("{digest}-manifest"),
            config_digest: "sha256:c".to_string(),
            platform: "linux/amd64".to_string(),
            layers: vec![LayerRecord {
                digest: layer.to_string(),
                diff_id: "sha256:d".to_string(),
                size: 1,
            }],
            env: vec!["A=b".to_string()],
            names: Vec::new(),
            repositories: Vec::new(),
        }
    }

    #[test]
    fn a_tag_moves_between_images_and_records_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let records = Records::open(tmp.path()).unwrap();
        records
            .put(
                record("sha256:one", "sha256:l1"),
                Some("r/x:latest"),
                Some("r/x"),
            )
            .unwrap();
        records
            .put(
                record("sha256:two", "sha256:l2"),
                Some("r/x:latest"),
                Some("r/x"),
            )
            .unwrap();
        assert_eq!(records.by_name("r/x:latest").unwrap().digest, "sha256:two");
        assert!(records.by_digest("sha256:one").unwrap().names.is_empty());
        assert_eq!(
            records.by_digest("sha256:two-manifest").unwrap().digest,
            "sha256:two"
        );
        drop(records);

        let records = Records::open(tmp.path()).unwrap();
        assert_eq!(records.by_name("r/x:latest").unwrap().digest, "sha256:two");
        let dropped = records.drop_using(&["sha256:l1".to_string()]);
        assert_eq!(dropped.len(), 1);
        assert!(records.by_digest("sha256:one").is_none());
        assert_eq!(records.all().len(), 1);
    }
}
