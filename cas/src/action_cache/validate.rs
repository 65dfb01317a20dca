//! Validation of ActionResults before they are stored.
//!
//! An ActionResult comes from the network (UpdateActionResult) or from a
//! worker; either way every digest must be well formed and every output
//! path relative and free of NUL before anyone may be served it.
//! [`ValidatingActionCache`] applies [`validate`] to every update, so no
//! backend has to.

use std::sync::Arc;

use async_trait::async_trait;
use corral_proto::reapi;

use super::ActionCache;
use crate::context::RequestContext;
use crate::digest::{Digest, DigestFunction};
use crate::error::{Error, Result};

/// The layer that refuses malformed results before the backend sees them.
pub struct ValidatingActionCache {
    inner: Arc<dyn ActionCache>,
}

impl ValidatingActionCache {
    pub fn new(inner: Arc<dyn ActionCache>) -> Self {
        ValidatingActionCache { inner }
    }
}

#[async_trait]
impl ActionCache for ValidatingActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        self.inner.get(ctx, action).await
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        validate(action.function(), &result)?;
        self.inner.update(ctx, action, result).await
    }
}

/// Checks an ActionResult from the network: every digest well formed, every
/// output path relative and free of NUL, output directories carrying a tree.
/// Field names in errors are those of `action_result`.
pub fn validate(function: DigestFunction, result: &reapi::ActionResult) -> Result<()> {
    let digest = |d: Option<&reapi::Digest>, field: String| -> Result<()> {
        Digest::from_proto_field(function, d, &field).map(drop)
    };
    for (i, f) in result.output_files.iter().enumerate() {
        check_path(
            &f.path,
            false,
            &format!("action_result.output_files[{i}].path"),
        )?;
        digest(
            f.digest.as_ref(),
            format!("action_result.output_files[{i}].digest"),
        )?;
    }
    for (i, d) in result.output_directories.iter().enumerate() {
        check_path(
            &d.path,
            true,
            &format!("action_result.output_directories[{i}].path"),
        )?;
        // REAPI 2.3 lets a result carry the Tree, the root Directory (with
        // every Directory uploaded, `output_directory_format`
        // DIRECTORY_ONLY, as BuildStream asks), or both.
        if d.tree_digest.is_none() && d.root_directory_digest.is_none() {
            return Err(Error::invalid(
                format!("action_result.output_directories[{i}]"),
                "has neither tree_digest nor root_directory_digest",
            ));
        }
        if let Some(tree) = &d.tree_digest {
            digest(
                Some(tree),
                format!("action_result.output_directories[{i}].tree_digest"),
            )?;
        }
        if let Some(root) = &d.root_directory_digest {
            digest(
                Some(root),
                format!("action_result.output_directories[{i}].root_directory_digest"),
            )?;
        }
    }
    // The 2.0 symlink lists are deprecated in favour of `output_symlinks`,
    // but REAPI 2.0 clients (Bazel 4) still fill them.
    #[allow(deprecated)]
    let symlinks = [
        ("output_symlinks", &result.output_symlinks),
        ("output_file_symlinks", &result.output_file_symlinks),
        (
            "output_directory_symlinks",
            &result.output_directory_symlinks,
        ),
    ];
    for (name, list) in symlinks {
        for (i, s) in list.iter().enumerate() {
            check_path(&s.path, false, &format!("action_result.{name}[{i}].path"))?;
            if s.target.is_empty() || s.target.contains('\0') {
                return Err(Error::invalid(
                    format!("action_result.{name}[{i}].target"),
                    "must be a non-empty path without NUL",
                ));
            }
        }
    }
    if let Some(d) = &result.stdout_digest {
        digest(Some(d), "action_result.stdout_digest".into())?;
    }
    if let Some(d) = &result.stderr_digest {
        digest(Some(d), "action_result.stderr_digest".into())?;
    }
    Ok(())
}

/// Output paths are relative to the working directory. Clients do use `.`
/// and `..` components (BuildStream does), so those are accepted; absolute
/// paths and NUL are not. Only a directory may be the empty path (the
/// working directory itself).
fn check_path(path: &str, may_be_empty: bool, field: &str) -> Result<()> {
    if path.is_empty() && !may_be_empty {
        return Err(Error::invalid(field, "is empty"));
    }
    if path.starts_with('/') {
        return Err(Error::invalid(field, format!("{path:?} is absolute")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(field, "contains NUL"));
    }
    Ok(())
}
