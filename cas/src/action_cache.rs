//! The action cache: (instance name, action digest) → ActionResult.
//!
//! Backends (`memory`, `disk`, `remote`) only keep entries. The two rules
//! that make a cache trustworthy are layers over them, built by
//! [`crate::factory`] so no backend re-implements them:
//! [`ValidatingActionCache`] refuses a malformed ActionResult before it is
//! stored, and [`CompletenessChecking`] answers a hit only when every blob
//! the result names is still in the CAS — otherwise a client would be told
//! to download outputs that eviction already removed; [`ProvenanceGuard`]
//! keeps clients from forging or replacing results the farm executed, and
//! stops serving those of revoked workers. The instance name
//! comes from the call's [`RequestContext`]; the digest function is part of
//! the key (it is part of [`Digest`]), so SHA-256 and BLAKE3 results never
//! mix.

pub mod authorizing;
pub mod completeness;
pub mod disk;
pub mod memory;
pub mod metrics;
pub mod provenance;
pub mod remote;
pub mod validate;

use async_trait::async_trait;
use corral_proto::reapi;

use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

pub use authorizing::AuthorizingActionCache;
pub use completeness::{is_complete, referenced_blobs, CompletenessChecking};
pub use disk::DiskActionCache;
pub use memory::MemoryActionCache;
pub use provenance::{ProvenanceGuard, RevokedWorkers};
pub use remote::GrpcActionCache;
pub use validate::{validate, ValidatingActionCache};

/// An action cache, usable as `Arc<dyn ActionCache>`.
#[async_trait]
pub trait ActionCache: Send + Sync + 'static {
    /// The result cached for `action` in the context's instance, if there
    /// is one (and, through [`CompletenessChecking`], all blobs it names
    /// still exist).
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>>;

    /// Stores `result` for `action` in the context's instance. Through
    /// [`ValidatingActionCache`], a malformed result is `InvalidArgument`
    /// naming the offending field and nothing is stored.
    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()>;
}
