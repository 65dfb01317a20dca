//! The image cache the worker calls: `ensure` an image, get a lease on its
//! unpacked layers.
//!
//! One `ImageCache` owns one cache directory (an exclusive `flock` on
//! `DIR/lock` keeps a second process, such as `corral images prune`, from
//! evicting layers a running worker has mounted). Clone it to share it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use nix::fcntl::{Flock, FlockArg};
use oci_client::manifest::{OciDescriptor, OciImageManifest};

use crate::config::ImagesConfig;
use crate::error::{Bound, Error, Result};
use crate::keyed::KeyedLocks;
use crate::layers::{LayerPin, LayerStore};
use crate::layout::Layout;
use crate::lease::ImageLease;
use crate::manifest::{check_manifest, config_platform, parse_config};
use crate::platform::Platform;
use crate::policy::check_allowed;
use crate::records::{ImageRecord, LayerRecord, Records};
use crate::reference::ImageRef;
use crate::registry::{BlobSource, Registries};
use crate::unpack::{unpack_layer, ImageBudget, UnpackLimits, UnpackOptions};

/// Layers downloaded and unpacked at the same time within one pull.
const PARALLEL_LAYERS: usize = 3;

/// Counters of network and unpack work done since `open`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tags resolved to digests at a registry.
    pub tag_resolutions: u64,
    /// Image pulls that went to a registry for a manifest.
    pub manifest_pulls: u64,
    /// Layer blobs downloaded (or copied from an imported layout).
    pub blob_downloads: u64,
}

/// An image the cache holds in full, for `list` and for the worker to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// The digest references resolve to.
    pub digest: String,
    /// `REGISTRY/REPO@DIGEST` for each repository it came from, then the
    /// tagged names last seen pointing at it.
    pub names: Vec<String>,
    /// Unpacked size of its layers in bytes (shared layers counted in each image).
    pub bytes: u64,
    /// Number of layers.
    pub layers: usize,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub layers_removed: usize,
    pub images_removed: usize,
}

/// The cache. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageCache {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    config: ImagesConfig,
    platform: Platform,
    unpack: UnpackOptions,
    store: Arc<LayerStore>,
    records: Records,
    registries: Registries,
    locks: KeyedLocks,
    tag_resolutions: AtomicU64,
    manifest_pulls: AtomicU64,
    blob_downloads: AtomicU64,
    _lock: Flock<std::fs::File>,
}

impl ImageCache {
    /// Opens (creating if needed) the cache in `dir`.
    pub fn open(dir: &Path, config: ImagesConfig) -> Result<ImageCache> {
        config.validate()?;
        let text = dir.display().to_string();
        if text.contains(':') || text.contains(',') {
            return Err(Error::Config(format!(
                "cache directory {text:?} may not contain ':' or ',' (overlayfs option separators)"
            )));
        }
        std::fs::create_dir_all(dir).map_err(Error::io("create image cache", dir))?;
        let root = std::fs::canonicalize(dir).map_err(Error::io("resolve image cache", dir))?;
        let lock_path = root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("open cache lock", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| Error::Locked { path: root.clone() })?;
        let store = LayerStore::open(&root)?;
        let records = Records::open(&root)?;
        let platform = config.platform()?;
        let cache = ImageCache {
            inner: Arc::new(Inner {
                unpack: UnpackOptions {
                    rootless: config.rootless(),
                    limits: UnpackLimits {
                        max_layer_bytes: config.max_layer_bytes(),
                        max_layer_entries: config.max_layer_entries(),
                    },
                },
                registries: Registries::new(config.clone(), platform.clone()),
                root,
                config,
                platform,
                store,
                records,
                locks: KeyedLocks::default(),
                tag_resolutions: AtomicU64::new(0),
                manifest_pulls: AtomicU64::new(0),
                blob_downloads: AtomicU64::new(0),
                _lock: lock,
            }),
        };
        let incomplete: Vec<String> = cache
            .inner
            .records
            .all()
            .into_iter()
            .flat_map(|r| r.layers)
            .map(|l| l.digest)
            .filter(|d| !cache.inner.store.contains(d))
            .collect();
        cache.inner.records.drop_using(&incomplete);
        cache.evict()?;
        Ok(cache)
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The platform picked from image indexes.
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// Makes `image` available and pins it. A tag is resolved at the
    /// registry (once per call); a digest already in the cache needs no
    /// network. Concurrent calls for the same image pull it once.
    pub async fn ensure(&self, image: &ImageRef) -> Result<ImageLease> {
        check_allowed(&self.inner.config, image)?;
        let _same_ref = self.inner.locks.lock(&format!("ref:{image}")).await;
        let tag_name = image.tag.as_ref().map(|t| format!("{}:{t}", image.name()));
        let offline = self.inner.config.offline.unwrap_or(false);
        let digest = match (&image.digest, &tag_name) {
            (Some(d), _) => d.clone(),
            (None, Some(name)) if offline => {
                let record = self
                    .inner
                    .records
                    .by_name(name)
                    .ok_or_else(|| Error::NotCached {
                        image: image.to_string(),
                    })?;
                record.digest
            }
            (None, _) => {
                self.inner.tag_resolutions.fetch_add(1, Ordering::Relaxed);
                self.inner.registries.resolve_tag(image).await?
            }
        };
        let pinned = image.with_digest(&digest);
        if let Some(lease) = self.lease_local(&pinned, tag_name.as_deref())? {
            return Ok(lease);
        }
        if offline {
            return Err(Error::NotCached {
                image: image.to_string(),
            });
        }
        // A tag and a digest reference may name the same image.
        let _same_digest = self.inner.locks.lock(&format!("digest:{digest}")).await;
        if let Some(lease) = self.lease_local(&pinned, tag_name.as_deref())? {
            return Ok(lease);
        }
        tracing::info!(image = %pinned, "pulling image");
        self.inner.manifest_pulls.fetch_add(1, Ordering::Relaxed);
        let (manifest, manifest_digest) = self.inner.registries.manifest(&pinned).await?;
        let source = self.inner.registries.source(&pinned)?;
        let shown = pinned.to_string();
        let (record, pins) = self
            .install(
                &source,
                &shown,
                &digest,
                &manifest,
                &manifest_digest,
                Some(&image.name()),
                tag_name.as_deref(),
            )
            .await?;
        Ok(ImageLease {
            reference: pinned,
            record,
            pins,
        })
    }

    /// Leases an image from the cache alone, if it is there in full.
    fn lease_local(&self, pinned: &ImageRef, tag_name: Option<&str>) -> Result<Option<ImageLease>> {
        let Some(digest) = &pinned.digest else {
            return Ok(None);
        };
        let Some(record) = self.inner.records.by_digest(digest) else {
            return Ok(None);
        };
        let mut pins = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            match self.inner.store.pin(&layer.digest) {
                Some(pin) => pins.push(pin),
                None => return Ok(None),
            }
        }
        let renamed = tag_name.is_some_and(|n| !record.names.iter().any(|have| have == n));
        let record = if renamed || !record.repositories.contains(&pinned.name()) {
            self.inner
                .records
                .put(record, tag_name, Some(&pinned.name()))?
        } else {
            record
        };
        // Uses change the LRU order; keep the bound on the warm path too.
        self.evict()?;
        Ok(Some(ImageLease {
            reference: pinned.clone(),
            record,
            pins,
        }))
    }

    /// Fetches config and layers from `source`, unpacks what is missing and
    /// records the image.
    #[allow(clippy::too_many_arguments)]
    async fn install<S: BlobSource>(
        &self,
        source: &S,
        shown: &str,
        digest: &str,
        manifest: &OciImageManifest,
        manifest_digest: &str,
        repository: Option<&str>,
        tag_name: Option<&str>,
    ) -> Result<(ImageRecord, Vec<LayerPin>)> {
        check_manifest(shown, manifest)?;
        let config_bytes = source.fetch_bytes(&manifest.config).await?;
        let config = parse_config(shown, &config_bytes, manifest)?;
        // Bounds the sum of the layers; stopped when this returns, so that
        // when one layer fails the others still unpacking stop too.
        let budget = Arc::new(ImageBudget::new(self.inner.config.max_image_bytes()));
        let _stop = budget.stop_on_drop();
        // Collected first: a lazy `map` closure held across the awaits below
        // would make this future not `Send` (higher-ranked lifetime limits).
        let layer_futures: Vec<_> = manifest
            .layers
            .iter()
            .zip(config.rootfs.diff_ids.iter())
            .map(|(desc, diff_id)| self.layer(source, shown, desc, diff_id, &budget))
            .collect();
        let pins: Vec<LayerPin> = futures::stream::iter(layer_futures)
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        let record = ImageRecord {
            digest: digest.to_string(),
            manifest_digest: manifest_digest.to_string(),
            config_digest: manifest.config.digest.clone(),
            platform: config_platform(&config),
            layers: manifest
                .layers
                .iter()
                .zip(config.rootfs.diff_ids.iter())
                .map(|(d, diff_id)| LayerRecord {
                    digest: d.digest.clone(),
                    diff_id: diff_id.clone(),
                    size: d.size.max(0) as u64,
                })
                .collect(),
            env: config.config.and_then(|c| c.env).unwrap_or_default(),
            names: Vec::new(),
            repositories: Vec::new(),
        };
        let record = self.inner.records.put(record, tag_name, repository)?;
        self.evict()?;
        tracing::info!(image = %shown, layers = pins.len(), "image ready");
        Ok((record, pins))
    }

    /// Pins one layer, downloading and unpacking it first if needed. Its
    /// uncompressed bytes are charged to the image's `budget` (a layer
    /// already cached with its unpacked size).
    async fn layer<S: BlobSource>(
        &self,
        source: &S,
        shown: &str,
        desc: &OciDescriptor,
        diff_id: &str,
        budget: &Arc<ImageBudget>,
    ) -> Result<LayerPin> {
        let _same_layer = self
            .inner
            .locks
            .lock(&format!("layer:{}", desc.digest))
            .await;
        let store = &self.inner.store;
        if let Some(pin) = store.pin(&desc.digest) {
            if store.diff_id(&desc.digest).as_deref() != Some(diff_id) {
                return Err(Error::DigestMismatch {
                    image: shown.to_string(),
                    what: format!("DiffID of layer {}", desc.digest),
                    expected: diff_id.to_string(),
                    actual: store.diff_id(&desc.digest).unwrap_or_default(),
                });
            }
            if !budget.charge(store.bytes(&desc.digest)) {
                return Err(Error::TooLarge {
                    layer: format!("{} of image {shown}", desc.digest),
                    bound: Bound::ImageBytes,
                    limit: budget.max(),
                });
            }
            return Ok(pin);
        }
        // Both scratch paths are removed when this function returns, whether
        // it succeeds, fails or is cancelled (the layer is renamed away first).
        // A compressed layer is never larger than what it unpacks to (up to
        // a few header bytes), so one whose descriptor names more than
        // max_layer_bytes is refused before any byte is fetched.
        let limit = self.inner.unpack.limits.max_layer_bytes;
        if u64::try_from(desc.size).is_ok_and(|size| size > limit) {
            return Err(Error::TooLarge {
                layer: format!("{} of image {shown}", desc.digest),
                bound: Bound::LayerBytes,
                limit,
            });
        }
        let blob = store.scratch("blob");
        let fetched = source.fetch_to_file(desc, blob.path()).await;
        self.inner.blob_downloads.fetch_add(1, Ordering::Relaxed);
        fetched?;
        let dir = store.scratch("layer");
        std::fs::create_dir(dir.path())
            .map_err(Error::io("create unpack directory", dir.path()))?;
        let name = format!("{} of image {shown}", desc.digest);
        let opts = self.inner.unpack;
        let (blob_path, dir_path) = (blob.path().to_path_buf(), dir.path().to_path_buf());
        let budget = Arc::clone(budget);
        let unpacked = tokio::task::spawn_blocking(move || {
            unpack_layer(&blob_path, &dir_path, &name, opts, Some(&budget))
        })
        .await
        .map_err(|join| Error::Layer {
            layer: desc.digest.clone(),
            entry: String::new(),
            reason: format!("unpack task failed: {join}"),
        })??;
        drop(blob);
        if unpacked.diff_id != diff_id {
            return Err(Error::DigestMismatch {
                image: shown.to_string(),
                what: format!("uncompressed layer {} (DiffID)", desc.digest),
                expected: diff_id.to_string(),
                actual: unpacked.diff_id,
            });
        }
        tracing::debug!(layer = %desc.digest, bytes = unpacked.bytes, skipped = unpacked.skipped, "layer unpacked");
        store.insert(&desc.digest, dir.path(), &unpacked.diff_id, unpacked.bytes)
    }

    /// Imports images from an OCI image layout directory. With `name`, only
    /// the layout's image whose `ref.name` is the name's tag (or the only
    /// image) is imported, and recorded under that name so that offline tag
    /// look-ups find it. Returns the records of the images imported.
    pub async fn import_layout(
        &self,
        dir: &Path,
        name: Option<&ImageRef>,
    ) -> Result<Vec<ImageRecord>> {
        let layout = Layout::open(dir)?;
        let mut entries = layout.entries()?;
        if let Some(name) = name {
            check_allowed(&self.inner.config, name)?;
            if entries.len() > 1 {
                entries.retain(|e| e.ref_name.is_some() && e.ref_name == name.tag);
            }
            if entries.len() != 1 {
                return Err(Error::Layout {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "cannot tell which image to import as {name}: name the layout's image by its ref.name tag"
                    ),
                });
            }
        }
        let mut imported = Vec::new();
        for entry in entries {
            if let Some(want) = name.and_then(|n| n.digest.as_ref()) {
                if want != &entry.digest {
                    return Err(Error::Layout {
                        path: dir.to_path_buf(),
                        reason: format!("the layout's image is {}, not {want}", entry.digest),
                    });
                }
            }
            let _same_digest = self
                .inner
                .locks
                .lock(&format!("digest:{}", entry.digest))
                .await;
            let (manifest, manifest_digest) = layout.manifest(&entry, &self.inner.platform)?;
            let shown = match name {
                Some(n) => n.with_digest(&entry.digest).to_string(),
                None => format!("{}@{}", dir.display(), entry.digest),
            };
            let tag_name = name.and_then(|n| n.tag.as_ref().map(|t| format!("{}:{t}", n.name())));
            let repository = name.map(|n| n.name());
            let (record, _pins) = self
                .install(
                    &layout,
                    &shown,
                    &entry.digest,
                    &manifest,
                    &manifest_digest,
                    repository.as_deref(),
                    tag_name.as_deref(),
                )
                .await?;
            imported.push(record);
        }
        Ok(imported)
    }

    /// Images held in full, for the worker to advertise.
    pub fn cached_images(&self) -> Vec<CachedImage> {
        self.inner
            .records
            .all()
            .into_iter()
            .filter(|r| {
                r.layers
                    .iter()
                    .all(|l| self.inner.store.contains(&l.digest))
            })
            .map(|r| {
                let mut names: Vec<String> = r
                    .repositories
                    .iter()
                    .map(|repo| format!("{repo}@{}", r.digest))
                    .collect();
                names.extend(r.names.iter().cloned());
                CachedImage {
                    bytes: r
                        .layers
                        .iter()
                        .map(|l| self.inner.store.bytes(&l.digest))
                        .sum(),
                    layers: r.layers.len(),
                    digest: r.digest,
                    names,
                }
            })
            .collect()
    }

    /// Removes every layer not in use, and the images that needed them.
    pub fn prune(&self) -> Result<PruneReport> {
        let evicted = self.inner.store.evict_to(0)?;
        let dropped = self.inner.records.drop_using(&evicted);
        Ok(PruneReport {
            layers_removed: evicted.len(),
            images_removed: dropped.len(),
        })
    }

    /// Bytes of unpacked layers on disk.
    pub fn used_bytes(&self) -> u64 {
        self.inner.store.total_bytes()
    }

    /// Work counters since open.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            tag_resolutions: self.inner.tag_resolutions.load(Ordering::Relaxed),
            manifest_pulls: self.inner.manifest_pulls.load(Ordering::Relaxed),
            blob_downloads: self.inner.blob_downloads.load(Ordering::Relaxed),
        }
    }

    fn evict(&self) -> Result<()> {
        let evicted = self
            .inner
            .store
            .evict_to(self.inner.config.max_cache_bytes())?;
        if !evicted.is_empty() {
            let dropped = self.inner.records.drop_using(&evicted);
            tracing::info!(
                layers = evicted.len(),
                images = dropped.len(),
                "evicted to the cache bound"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The worker spawns `ensure` on a multi-threaded runtime.
    #[test]
    fn ensure_and_import_futures_are_send() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ImageCache::open(tmp.path(), ImagesConfig::default()).unwrap();
        let image = ImageRef::parse("127.0.0.1:1/x:y").unwrap();
        assert_send(&cache.ensure(&image));
        assert_send(&cache.import_layout(tmp.path(), None));
        assert_send(&cache);
    }
}
