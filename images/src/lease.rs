//! What `ensure` hands the worker: the image, pinned in the cache.

use std::path::PathBuf;

use crate::layers::LayerPin;
use crate::records::ImageRecord;
use crate::reference::ImageRef;

/// An image ready to run. Its layers stay in the cache (are not evicted)
/// until the lease is dropped, so hold it for as long as the action's rootfs
/// is mounted.
#[derive(Debug)]
pub struct ImageLease {
    pub(crate) reference: ImageRef,
    pub(crate) record: ImageRecord,
    pub(crate) pins: Vec<LayerPin>,
}

impl ImageLease {
    /// The reference as requested, pinned to the resolved digest: record it
    /// (e.g. in the ActionResult's auxiliary metadata) as what the action ran on.
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }

    /// The digest the reference resolved to (an index's, if it named one).
    pub fn digest(&self) -> &str {
        self.reference
            .digest
            .as_deref()
            .unwrap_or(&self.record.digest)
    }

    /// The digest of the platform-specific manifest whose layers these are.
    pub fn manifest_digest(&self) -> &str {
        &self.record.manifest_digest
    }

    /// The unpacked layer directories, lowest first. Whiteouts in them are
    /// overlayfs whiteouts (0/0 character devices) and opaque directories
    /// carry `user.overlay.opaque=y`: mount them read-only as overlay lower
    /// directories with the `userxattr` option (see [`Self::overlay_lowerdir`]).
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        self.pins.iter().map(|p| p.path().to_path_buf()).collect()
    }

    /// The `lowerdir=` value for overlayfs: the topmost layer first, as
    /// overlayfs orders them. The cache directory never contains `:` or `,`
    /// (checked on open), so the value needs no escaping.
    pub fn overlay_lowerdir(&self) -> String {
        self.pins
            .iter()
            .rev()
            .map(|p| p.path().display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The image's `Env` (`NAME=value`), the base environment an action's
    /// own environment overrides.
    pub fn env(&self) -> &[String] {
        &self.record.env
    }

    /// The layer blob digests, lowest first.
    pub fn layer_digests(&self) -> Vec<&str> {
        self.pins.iter().map(|p| p.digest()).collect()
    }

    /// Everything the cache recorded about the image.
    pub fn record(&self) -> &ImageRecord {
        &self.record
    }
}
