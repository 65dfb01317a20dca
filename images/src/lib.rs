//! OCI images for actions: references, registry pulls, the layer cache.
//!
//! The worker opens one [`ImageCache`] and calls [`ImageCache::ensure`] for
//! an action's `container-image`; the returned [`ImageLease`] gives the
//! resolved digest, the unpacked layer directories (lowest first, ready to be
//! overlayfs lower directories) and the image's `Env`, and keeps those layers
//! from eviction while it lives. See `docs/images.md`.

mod bounded_write;
mod bounds;
mod cache;
pub mod config;
pub mod error;
mod keyed;
mod known_dirs;
mod layers;
mod layout;
mod lease;
mod links;
mod manifest;
pub mod platform;
pub mod policy;
mod records;
pub mod reference;
mod registry;
mod tree;
pub mod unpack;

pub use cache::{CacheStats, CachedImage, ImageCache, PruneReport};
pub use config::{ImagesConfig, RegistryConfig};
pub use error::{Bound, Error, Result};
pub use lease::ImageLease;
pub use platform::Platform;
pub use records::{ImageRecord, LayerRecord};
pub use reference::ImageRef;
