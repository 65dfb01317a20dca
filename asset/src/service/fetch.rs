//! FetchBlob and FetchDirectory: the index first; on a FetchBlob miss, a
//! download when the policy allows one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::asset::v1::fetch_server::Fetch;
use bazel_remote_apis::build::bazel::remote::asset::v1::{
    FetchBlobRequest, FetchBlobResponse, FetchDirectoryRequest, FetchDirectoryResponse,
};
use bytes::BytesMut;
use corral_cas::{BlobStore, Caller, RequestContext};
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

use super::State;
use crate::clock::to_timestamp;
use crate::completeness::is_complete;
use crate::error::{AssetError, Result};
use crate::fetcher::{DownloadError, Downloaded};
use crate::index::{AssetEntry, AssetKind};
use crate::request::{self, Common};
use crate::status_details::rpc_status;

/// The Fetch service.
pub struct FetchService {
    state: Arc<State>,
}

impl FetchService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        FetchService { state }
    }
}

/// The first URI (in request order) whose entry may be served: not
/// expired (an expired one is removed), stored no earlier than `oldest`,
/// and complete in the CAS. Returns its index in `uris` and the entry.
async fn lookup(
    state: &State,
    c: &Common,
    kind: AssetKind,
    oldest: Option<SystemTime>,
) -> Result<Option<(usize, AssetEntry)>> {
    let now = state.clock.now();
    for (i, uri) in c.uris.iter().enumerate() {
        let key = c.key(kind, uri);
        let Some(entry) = state.index.get(&c.ctx, &key).await? else {
            continue;
        };
        if entry.expire_at.is_some_and(|t| t <= now) {
            tracing::debug!(uri = %uri.text, "asset entry expired: removed");
            state.index.remove(&c.ctx, &key).await?;
            continue;
        }
        if oldest.is_some_and(|t| entry.stored_at < t) {
            tracing::debug!(uri = %uri.text, "asset entry older than oldest_content_accepted");
            continue;
        }
        if !is_complete(&state.cas, &c.ctx, &entry, kind == AssetKind::Directory).await? {
            tracing::debug!(uri = %uri.text, "asset entry refers to blobs no longer in the CAS: a miss");
            continue;
        }
        return Ok(Some((i, entry)));
    }
    Ok(None)
}

/// The NOT_FOUND of a request nothing could answer.
fn miss(c: &Common, kind: AssetKind, why: &str) -> Status {
    let uris: Vec<&str> = c.uris.iter().map(|u| u.text.as_str()).collect();
    let what = match kind {
        AssetKind::Blob => "blob",
        AssetKind::Directory => "directory",
    };
    let qualifiers: Vec<String> = c
        .qualifiers
        .pairs()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    Status::not_found(format!(
        "no {what} is known for {uris:?} with qualifiers {qualifiers:?} in instance {:?}; {why}",
        c.ctx.instance_name()
    ))
}

/// Downloads the first URI that can be, stores it in the CAS and the
/// index, and returns its index in `uris` and the new entry. A miss or
/// failure is the gRPC error to answer.
async fn download(
    state: Arc<State>,
    c: Common,
    timeout: Option<Duration>,
) -> Result<(usize, AssetEntry), Status> {
    let Some(fetcher) = state.fetcher.clone() else {
        return Err(miss(
            &c,
            AssetKind::Blob,
            "[asset.download] allows no downloads",
        ));
    };
    if let Some(why) = c.qualifiers.not_downloadable() {
        return Err(miss(&c, AssetKind::Blob, &why));
    }
    let candidates: Vec<usize> = (0..c.uris.len())
        .filter(|&i| matches!(c.uris[i].url.scheme(), "http" | "https"))
        .collect();
    if candidates.is_empty() {
        return Err(miss(
            &c,
            AssetKind::Blob,
            "none of the URIs is an http or https URL to download",
        ));
    }
    let mut failures: Vec<DownloadError> = Vec::new();
    for i in candidates {
        let uri = &c.uris[i];
        let started = state.clock.now();
        match fetcher
            .download(&uri.url, c.function(), c.qualifiers.integrity(), timeout)
            .await
        {
            Ok(done) => {
                store(&state, &c.ctx, &done).await?;
                let entry = AssetEntry {
                    digest: done.digest,
                    references_blobs: Vec::new(),
                    references_directories: Vec::new(),
                    stored_at: started,
                    expire_at: None,
                };
                state
                    .index
                    .put(&c.ctx, &c.key(AssetKind::Blob, uri), &entry)
                    .await?;
                tracing::info!(uri = %uri.text, digest = %done.digest, instance = c.ctx.instance_name(), "asset downloaded");
                return Ok((i, entry));
            }
            Err(DownloadError::Local { uri, path, source }) => {
                return Err(AssetError::io(format!("spooling {uri} to {path}"), source).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "asset download failed");
                failures.push(e);
            }
        }
    }
    Err(failed(failures))
}

/// One error for every failed download: the first one's code, every
/// message.
fn failed(failures: Vec<DownloadError>) -> Status {
    let code = failures
        .first()
        .map_or(tonic::Code::NotFound, DownloadError::code);
    let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Status::new(code, messages.join("; "))
}

/// Copies a spooled download into the CAS (unless it is there already).
async fn store(state: &State, ctx: &RequestContext, done: &Downloaded) -> Result<()> {
    if state
        .cas
        .find_missing(ctx, &[done.digest])
        .await?
        .is_empty()
    {
        return Ok(());
    }
    let path = done.file.to_path_buf();
    let io = |e: std::io::Error| AssetError::io(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
    let mut writer = state.cas.write(ctx, &done.digest).await?;
    loop {
        let mut chunk = BytesMut::with_capacity(1 << 20);
        let n = file.read_buf(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        writer.write(chunk.freeze()).await?;
    }
    writer.commit().await?;
    Ok(())
}

fn ok() -> Option<corral_proto::rpc::Status> {
    Some(rpc_status(tonic::Code::Ok, ""))
}

#[tonic::async_trait]
impl Fetch for FetchService {
    async fn fetch_blob(
        &self,
        request: Request<FetchBlobRequest>,
    ) -> Result<Response<FetchBlobResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let c = self.state.admit(
            &caller,
            &req.instance_name,
            req.digest_function,
            (&req.uris, &req.qualifiers),
            corral_auth::Permission::CasRead,
        )?;
        let oldest = request::time(
            req.oldest_content_accepted.as_ref(),
            "oldest_content_accepted",
        )?;
        let timeout = request::timeout(req.timeout.as_ref())?;
        let found = lookup(&self.state, &c, AssetKind::Blob, oldest).await?;
        let (i, entry, c) = match found {
            Some((i, entry)) => (i, entry, c),
            None => {
                // A task of its own: a download the client stops waiting
                // for still completes and is there for the next Fetch.
                let task = tokio::spawn(download(self.state.clone(), c.clone(), timeout));
                let (i, entry) = task
                    .await
                    .map_err(|e| Status::internal(format!("download task: {e}")))??;
                (i, entry, c)
            }
        };
        Ok(Response::new(FetchBlobResponse {
            status: ok(),
            uri: c.uris[i].text.clone(),
            qualifiers: c.qualifiers.to_proto(),
            expires_at: entry.expire_at.map(to_timestamp),
            blob_digest: Some(entry.digest.to_proto()),
            digest_function: c.function().to_proto(),
        }))
    }

    async fn fetch_directory(
        &self,
        request: Request<FetchDirectoryRequest>,
    ) -> Result<Response<FetchDirectoryResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let c = self.state.admit(
            &caller,
            &req.instance_name,
            req.digest_function,
            (&req.uris, &req.qualifiers),
            corral_auth::Permission::CasRead,
        )?;
        let oldest = request::time(
            req.oldest_content_accepted.as_ref(),
            "oldest_content_accepted",
        )?;
        request::timeout(req.timeout.as_ref())?;
        let Some((i, entry)) = lookup(&self.state, &c, AssetKind::Directory, oldest).await? else {
            return Err(miss(
                &c,
                AssetKind::Directory,
                "directories are served only as pushed (the server unpacks no archives)",
            ));
        };
        Ok(Response::new(FetchDirectoryResponse {
            status: ok(),
            uri: c.uris[i].text.clone(),
            qualifiers: c.qualifiers.to_proto(),
            expires_at: entry.expire_at.map(to_timestamp),
            root_directory_digest: Some(entry.digest.to_proto()),
            digest_function: c.function().to_proto(),
        }))
    }
}
