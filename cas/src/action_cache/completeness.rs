//! Action-cache completeness: a hit only when every blob the result names
//! still exists.
//!
//! Eviction may remove an output file, a Tree or a Directory while the
//! ActionResult naming it is still cached. A client told "hit" would then
//! fail to download its outputs (Bazel fails the build), so
//! [`CompletenessChecking`] checks every named blob — including the files
//! inside output directories' Trees, or every Directory under a root
//! Directory for `DIRECTORY_ONLY` results — and answers a miss when any is
//! gone.

use std::sync::Arc;

use async_trait::async_trait;
use corral_proto::reapi;

use super::ActionCache;
use crate::context::RequestContext;
use crate::digest::{Digest, DigestFunction};
use crate::error::{Error, Result};
use crate::store::{BlobStore, BoundedStore};

/// Adds a Tree and the files it lists to `out`; false if the Tree is gone.
async fn tree_blobs(
    cas: &BoundedStore,
    ctx: &RequestContext,
    function: DigestFunction,
    tree: &reapi::Digest,
    out: &mut Vec<Digest>,
) -> Result<bool> {
    let tree_digest = Digest::from_proto_field(function, Some(tree), "tree_digest")?;
    let tree: reapi::Tree = match cas.get_message(ctx, &tree_digest, "tree_digest").await {
        Ok(t) => t,
        Err(e) if cannot_vouch(&e) => return Ok(false),
        Err(e) => return Err(e),
    };
    out.push(tree_digest);
    for d in tree.root.iter().chain(tree.children.iter()) {
        for f in &d.files {
            if let Some(fd) = &f.digest {
                out.push(Digest::from_proto(function, fd)?);
            }
        }
    }
    Ok(true)
}

/// Adds a root Directory, every Directory below it and their files to
/// `out`; false if any Directory is gone.
async fn directory_blobs(
    cas: &BoundedStore,
    ctx: &RequestContext,
    function: DigestFunction,
    root: &reapi::Digest,
    out: &mut Vec<Digest>,
) -> Result<bool> {
    let mut pending = vec![Digest::from_proto_field(
        function,
        Some(root),
        "root_directory_digest",
    )?];
    let mut seen = std::collections::HashSet::new();
    while let Some(digest) = pending.pop() {
        if !seen.insert(digest) {
            continue;
        }
        let dir: reapi::Directory = match cas.get_message(ctx, &digest, "directory").await {
            Ok(d) => d,
            Err(e) if cannot_vouch(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        out.push(digest);
        for f in &dir.files {
            if let Some(fd) = &f.digest {
                out.push(Digest::from_proto(function, fd)?);
            }
        }
        for sub in &dir.directories {
            pending.push(Digest::from_proto_field(
                function,
                sub.digest.as_ref(),
                "digest",
            )?);
        }
    }
    Ok(true)
}

/// Every blob an ActionResult refers to, including the files inside its
/// output directories' Tree messages. A Tree that is itself missing or
/// unreadable makes the result incomplete (`Ok(None)`).
pub async fn referenced_blobs(
    cas: &BoundedStore,
    ctx: &RequestContext,
    function: DigestFunction,
    result: &reapi::ActionResult,
) -> Result<Option<Vec<Digest>>> {
    let mut out = Vec::new();
    let mut push = |d: &Option<reapi::Digest>| -> Result<()> {
        if let Some(d) = d {
            out.push(Digest::from_proto(function, d)?);
        }
        Ok(())
    };
    for f in &result.output_files {
        push(&f.digest)?;
    }
    push(&result.stdout_digest)?;
    push(&result.stderr_digest)?;
    for dir in &result.output_directories {
        let complete = match (&dir.tree_digest, &dir.root_directory_digest) {
            (Some(tree), _) => tree_blobs(cas, ctx, function, tree, &mut out).await?,
            (None, Some(root)) => directory_blobs(cas, ctx, function, root, &mut out).await?,
            (None, None) => false,
        };
        if !complete {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// True when every blob `result` names is in `cas` (in the namespace of
/// the context's instance).
pub async fn is_complete(
    cas: &BoundedStore,
    ctx: &RequestContext,
    function: DigestFunction,
    result: &reapi::ActionResult,
) -> Result<bool> {
    let Some(mut blobs) = referenced_blobs(cas, ctx, function, result).await? else {
        return Ok(false);
    };
    blobs.sort();
    blobs.dedup();
    Ok(cas.find_missing(ctx, &blobs).await?.is_empty())
}

/// Errors that mean "this result cannot be shown complete" rather than a
/// failure of the lookup: a Tree or Directory that is gone, does not
/// decode, or is over its size cap. The result is then a miss and the
/// client runs the action again.
fn cannot_vouch(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound(_) | Error::InvalidArgument { .. } | Error::MessageTooLarge { .. }
    )
}

/// The layer that turns an incomplete result into a miss.
pub struct CompletenessChecking {
    inner: Arc<dyn ActionCache>,
    cas: BoundedStore,
}

impl CompletenessChecking {
    /// Checks results of `inner` against `cas`, the storage stack that
    /// serves the same instance names.
    pub fn new(inner: Arc<dyn ActionCache>, cas: BoundedStore) -> Self {
        CompletenessChecking { inner, cas }
    }
}

#[async_trait]
impl ActionCache for CompletenessChecking {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        let Some(result) = self.inner.get(ctx, action).await? else {
            return Ok(None);
        };
        if is_complete(&self.cas, ctx, action.function(), &result).await? {
            Ok(Some(result))
        } else {
            tracing::debug!(action = %action, instance = ctx.instance_name(), "action cache entry incomplete: a miss");
            Ok(None)
        }
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        self.inner.update(ctx, action, result).await
    }
}
