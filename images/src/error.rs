//! The one error type of this crate.
//!
//! Every variant that concerns an image names it, so a failed action's status
//! tells the user which image failed and why, never just "pull failed".

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while resolving, pulling or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference string is not of the form `[docker://]REGISTRY/REPO[:TAG][@sha256:DIGEST]`.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The operator's policy forbids this registry or repository.
    #[error("image {image}: not allowed by policy: {reason}")]
    NotAllowed { image: String, reason: String },

    /// The registry could not be reached, refused the request, or the image
    /// does not exist there.
    #[error("image {image}: registry error: {reason}")]
    Registry { image: String, reason: String },

    /// A manifest, config or layer did not hash to the digest that named it.
    #[error("image {image}: digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        image: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// The manifest, index or config is not something this crate can run.
    #[error("image {image}: unsupported or malformed {what}: {reason}")]
    Malformed {
        image: String,
        what: String,
        reason: String,
    },

    /// An image index has no manifest for this worker's platform.
    #[error("image {image}: no manifest for platform {platform} in the image index (it has: {available})")]
    NoPlatform {
        image: String,
        platform: String,
        available: String,
    },

    /// A layer tar is hostile or broken (path escape, link outside the layer…).
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Layer {
        layer: String,
        entry: String,
        reason: String,
    },

    /// A layer passed one of the configured unpack bounds (a decompression
    /// bomb, or simply too big). Nothing of an unpack refused this way is
    /// kept: its directory is removed and the layer is not cached.
    #[error("layer {layer}: refused: more than {limit} {} (images config key {})", bound.what(), bound.key())]
    TooLarge {
        layer: String,
        bound: Bound,
        limit: u64,
    },

    /// The image is not in the local cache and the cache may not go to the network.
    #[error("image {image}: not in the local cache and the cache is offline")]
    NotCached { image: String },

    /// The configuration file is wrong.
    #[error("images config: {0}")]
    Config(String),

    /// Another process holds this cache directory.
    #[error("image cache {path}: already in use by another process")]
    Locked { path: PathBuf },

    /// A local file system operation failed.
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An OCI image layout directory (for `import`) is malformed.
    #[error("OCI layout {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
}

/// The configured bounds an unpack can pass, each named after its key in
/// [`crate::ImagesConfig`] so that the error tells the operator what to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `max_layer_bytes`: uncompressed bytes of one layer.
    LayerBytes,
    /// `max_layer_entries`: tar entries in one layer.
    LayerEntries,
    /// `max_image_bytes`: uncompressed bytes of all the layers of one image.
    ImageBytes,
}

impl Bound {
    /// The configuration key that sets this bound.
    pub fn key(self) -> &'static str {
        match self {
            Bound::LayerBytes => "max_layer_bytes",
            Bound::LayerEntries => "max_layer_entries",
            Bound::ImageBytes => "max_image_bytes",
        }
    }

    /// What the bound counts, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Bound::LayerBytes => "uncompressed bytes in one layer",
            Bound::LayerEntries => "tar entries in one layer",
            Bound::ImageBytes => "uncompressed bytes in one image, all its layers together",
        }
    }
}

impl Error {
    /// Wraps an I/O error with what was being done and on which path.
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}
