//! GetTree: a breadth-first walk from a root Directory, streamed in pages.
//!
//! Each directory is sent once even if it appears at several places. The
//! page token is the number of directories already sent, in that fixed
//! breadth-first order; resuming walks the tree again and skips them. That
//! keeps the server stateless at the cost of re-reading the skipped
//! directories, which are small and usually in the page cache. Directories
//! that are missing below the root are left out, as the spec allows.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use corral_proto::reapi;
use futures::Stream;
use prost::Message;
use tonic::Status;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{get_message, BlobStore};

/// How many directories are fetched from the store at once.
const FETCH_WIDTH: usize = 64;

/// Parses a page token from a previous response ("" = start).
pub fn parse_page_token(token: &str) -> Result<u64> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|_| token.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Error::invalid(
                "page_token",
                format!("{token:?} was not issued by this server"),
            )
        })
}

type PageStream = Pin<Box<dyn Stream<Item = Result<reapi::GetTreeResponse, Status>> + Send>>;

/// Streams the pages of the tree under `root`, skipping the first `skip`
/// directories. A missing root is `NotFound` before anything is streamed.
pub async fn pages(
    store: Arc<dyn BlobStore>,
    root: Digest,
    skip: u64,
    page_size: usize,
    max_page_bytes: usize,
) -> Result<PageStream> {
    let root_dir: reapi::Directory = get_message(&*store, &root).await.map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::invalid("root_digest", reason),
        other => other,
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        if let Err(e) = walk(store, root, root_dir, skip, page_size, max_page_bytes, &tx).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

async fn walk(
    store: Arc<dyn BlobStore>,
    root: Digest,
    root_dir: reapi::Directory,
    skip: u64,
    page_size: usize,
    max_page_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<Result<reapi::GetTreeResponse, Status>>,
) -> Result<()> {
    let function = root.function();
    let mut seen = HashSet::from([root]);
    let mut queue: VecDeque<reapi::Directory> = VecDeque::from([root_dir]);
    let mut emitted: u64 = 0;
    let mut page = Vec::new();
    let mut page_bytes = 0usize;
    while let Some(dir) = queue.pop_front() {
        // Children first: they are fetched in parallel, in order.
        let mut children = Vec::new();
        for (i, node) in dir.directories.iter().enumerate() {
            let d = Digest::from_proto_field(function, node.digest.as_ref(), "digest")
                .map_err(|e| e.in_field(&format!("directories[{i}]")))?;
            if seen.insert(d) {
                children.push(d);
            }
        }
        for batch in children.chunks(FETCH_WIDTH) {
            let fetched = futures::future::join_all(
                batch
                    .iter()
                    .map(|d| get_message::<reapi::Directory>(&*store, d)),
            )
            .await;
            for f in fetched {
                match f {
                    Ok(child) => queue.push_back(child),
                    Err(Error::NotFound(_)) | Err(Error::InvalidArgument { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        emitted += 1;
        if emitted <= skip {
            continue;
        }
        let len = dir.encoded_len();
        if !page.is_empty() && (page.len() >= page_size || page_bytes + len > max_page_bytes) {
            let sent = emitted - 1;
            let response = reapi::GetTreeResponse {
                directories: std::mem::take(&mut page),
                next_page_token: sent.to_string(),
            };
            page_bytes = 0;
            if tx.send(Ok(response)).await.is_err() {
                return Ok(()); // client went away
            }
        }
        page_bytes += len;
        page.push(dir);
    }
    let _ = tx
        .send(Ok(reapi::GetTreeResponse {
            directories: page,
            next_page_token: String::new(),
        }))
        .await;
    Ok(())
}
