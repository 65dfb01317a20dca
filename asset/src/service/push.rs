//! PushBlob and PushDirectory: associate URIs (with qualifiers) with
//! content the client already put in the CAS.
//!
//! A push is refused with FAILED_PRECONDITION, listing every missing blob
//! (in a `google.rpc.PreconditionFailure`, as REAPI does), if the CAS lacks
//! the blob, any referenced blob, or any Directory or file of the root or
//! referenced trees. A pushed blob must match its `checksum.sri`
//! qualifier, if given. An `expire_at` in the past is refused.

use std::sync::Arc;
use std::time::SystemTime;

use bazel_remote_apis::build::bazel::remote::asset::v1::push_server::Push;
use bazel_remote_apis::build::bazel::remote::asset::v1::{
    PushBlobRequest, PushBlobResponse, PushDirectoryRequest, PushDirectoryResponse,
};
use corral_cas::{BlobStore, Caller, Digest, RequestContext};
use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::State;
use crate::completeness::missing;
use crate::error::{AssetError, Result};
use crate::index::{AssetEntry, AssetKind};
use crate::qualifiers::sri::render;
use crate::qualifiers::{Integrity, CHECKSUM_SRI};
use crate::request::{self, Common};

/// The Push service.
pub struct PushService {
    state: Arc<State>,
}

impl PushService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        PushService { state }
    }

    /// Checks the references and the expiry, then stores `entry` under
    /// every URI.
    async fn associate(
        &self,
        c: &Common,
        kind: AssetKind,
        mut entry: AssetEntry,
        expire_at: Option<SystemTime>,
    ) -> Result<()> {
        let now = self.state.clock.now();
        if let Some(t) = expire_at.filter(|t| *t <= now) {
            let ago = now.duration_since(t).unwrap_or_default();
            return Err(AssetError::invalid(
                "expire_at",
                format!("is {ago:?} in the past; the asset would never be served"),
            ));
        }
        let mut blobs = entry.references_blobs.clone();
        let mut directories: Vec<(Digest, String)> = entry
            .references_directories
            .iter()
            .enumerate()
            .map(|(i, d)| (*d, format!("references_directories[{i}]")))
            .collect();
        match kind {
            AssetKind::Blob => blobs.insert(0, entry.digest),
            AssetKind::Directory => {
                directories.insert(0, (entry.digest, "root_directory_digest".to_string()))
            }
        }
        let absent = missing(&self.state.cas, &c.ctx, &blobs, &directories).await?;
        if !absent.is_empty() {
            return Err(AssetError::MissingBlobs(absent));
        }
        if let (AssetKind::Blob, Some(integrity)) = (kind, c.qualifiers.integrity()) {
            check_integrity(&self.state, &c.ctx, &entry.digest, integrity).await?;
        }
        entry.stored_at = now;
        entry.expire_at = expire_at;
        for uri in &c.uris {
            self.state
                .index
                .put(&c.ctx, &c.key(kind, uri), &entry)
                .await?;
        }
        tracing::debug!(uris = c.uris.len(), digest = %entry.digest, instance = c.ctx.instance_name(), ?kind, "asset pushed");
        Ok(())
    }
}

/// Refuses a pushed blob whose bytes do not match `checksum.sri`.
async fn check_integrity(
    state: &State,
    ctx: &RequestContext,
    digest: &Digest,
    integrity: &Integrity,
) -> Result<()> {
    let mut hasher = integrity.hasher();
    let mut stream = state.cas.read(ctx, digest, 0, None).await?;
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    let actual = hasher.finish();
    if integrity.matches(&actual) {
        return Ok(());
    }
    Err(AssetError::invalid(
        "qualifiers",
        format!(
            "{CHECKSUM_SRI} {} does not match blob_digest {}/{}, whose content is {}",
            integrity.expected(),
            digest.hash_hex(),
            digest.size(),
            render(integrity.algorithm(), &actual)
        ),
    ))
}

#[tonic::async_trait]
impl Push for PushService {
    async fn push_blob(
        &self,
        request: Request<PushBlobRequest>,
    ) -> Result<Response<PushBlobResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let c = self.state.admit(
            &caller,
            &req.instance_name,
            req.digest_function,
            (&req.uris, &req.qualifiers),
            corral_auth::Permission::AcWrite,
        )?;
        let f = c.function();
        let entry = AssetEntry {
            digest: request::digest(f, req.blob_digest.as_ref(), "blob_digest")?,
            references_blobs: request::digests(f, &req.references_blobs, "references_blobs")?,
            references_directories: request::digests(
                f,
                &req.references_directories,
                "references_directories",
            )?,
            stored_at: SystemTime::UNIX_EPOCH,
            expire_at: None,
        };
        let expire_at = request::time(req.expire_at.as_ref(), "expire_at")?;
        self.associate(&c, AssetKind::Blob, entry, expire_at)
            .await?;
        Ok(Response::new(PushBlobResponse {}))
    }

    async fn push_directory(
        &self,
        request: Request<PushDirectoryRequest>,
    ) -> Result<Response<PushDirectoryResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let c = self.state.admit(
            &caller,
            &req.instance_name,
            req.digest_function,
            (&req.uris, &req.qualifiers),
            corral_auth::Permission::AcWrite,
        )?;
        let f = c.function();
        let entry = AssetEntry {
            digest: request::digest(
                f,
                req.root_directory_digest.as_ref(),
                "root_directory_digest",
            )?,
            references_blobs: request::digests(f, &req.references_blobs, "references_blobs")?,
            references_directories: request::digests(
                f,
                &req.references_directories,
                "references_directories",
            )?,
            stored_at: SystemTime::UNIX_EPOCH,
            expire_at: None,
        };
        let expire_at = request::time(req.expire_at.as_ref(), "expire_at")?;
        self.associate(&c, AssetKind::Directory, entry, expire_at)
            .await?;
        Ok(Response::new(PushDirectoryResponse {}))
    }
}
