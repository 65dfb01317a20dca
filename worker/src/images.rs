//! The `container-image` platform property on this worker: the image's
//! layers become the action's read-only rootfs (see docs/images.md).
//!
//! The scheduler prefers workers that already hold an action's image by
//! comparing the property's value as the client wrote it, so the worker
//! reports exactly those values: the ones it prepared and whose image the
//! cache still holds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use corral_images::{ImageCache, ImageLease, ImageRef, ImagesConfig};

use crate::error::{Error, Result};

/// The platform property naming an action's image.
pub const PROPERTY: &str = "container-image";

/// The worker's image cache.
pub struct Images {
    cache: ImageCache,
    /// Property value → image digest it resolved to, last time.
    served: Mutex<BTreeMap<String, String>>,
}

impl Images {
    /// Opens the cache at `dir`. Blocking.
    pub fn open(dir: &Path, config: ImagesConfig) -> Result<Self> {
        let cache = ImageCache::open(dir, config)
            .map_err(|e| Error::Config(format!("image cache {}: {e}", dir.display())))?;
        Ok(Images {
            cache,
            served: Mutex::new(BTreeMap::new()),
        })
    }

    /// Pulls (at most once, whatever the concurrency) and pins the image an
    /// action asked for. A failure names the image and the reason; there is
    /// never a fallback to another rootfs.
    pub async fn prepare(&self, value: &str) -> Result<ImageLease> {
        let reference = ImageRef::parse(value)
            .map_err(|e| Error::invalid(format!("platform property {PROPERTY}"), e.to_string()))?;
        let lease = self
            .cache
            .ensure(&reference)
            .await
            .map_err(|e| Error::FailedPrecondition(format!("{PROPERTY} {value}: {e}")))?;
        if let Ok(mut served) = self.served.lock() {
            served.insert(value.to_string(), lease.digest().to_string());
        }
        Ok(lease)
    }

    /// The property values whose images are still cached, sorted.
    pub fn cached(&self) -> Vec<String> {
        let present: std::collections::HashSet<String> = self
            .cache
            .cached_images()
            .into_iter()
            .map(|i| i.digest)
            .collect();
        let Ok(mut served) = self.served.lock() else {
            return Vec::new();
        };
        served.retain(|_, digest| present.contains(digest));
        served.keys().cloned().collect()
    }
}
