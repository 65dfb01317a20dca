//! GetTree: a breadth-first walk from a root Directory, streamed in pages.
//!
//! Each directory is sent once even if it appears at several places. The
//! page token is the number of directories already sent, in that fixed
//! breadth-first order; resuming walks the tree again and skips them. That
//! keeps the server stateless at the cost of re-reading the skipped
//! directories, which are small and usually in the page cache. Directories
//! that are missing or undecodable below the root are left out, as the spec
//! allows.
//!
//! A Directory larger than one response can carry could never be sent
//! (tonic would fail the stream with OUT_OF_RANGE "encoded message length
//! too large"); it is refused from its digest's size, before it is read,
//! with INVALID_ARGUMENT naming its digest and the limit.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;

use corral_proto::reapi;
use futures::Stream;
use prost::Message;
use tonic::Status;

use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::BoundedStore;

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

/// Room in a response for everything but the directory: the field's tag
/// and length, the page token.
const RESPONSE_OVERHEAD: usize = 1024;

type PageStream = Pin<Box<dyn Stream<Item = Result<reapi::GetTreeResponse, Status>> + Send>>;

/// How large a page may grow.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    /// Directories per page.
    pub directories: usize,
    /// Bytes a page aims to stay under (several directories).
    pub bytes: usize,
    /// Bytes one response may not exceed (the gRPC message limit): no
    /// single directory may be larger.
    pub response_bytes: usize,
}

impl PageLimits {
    /// The largest Directory that fits a response, and how to name that
    /// limit in an error.
    fn directory_cap(&self) -> (u64, &'static str) {
        let cap = self.response_bytes.saturating_sub(RESPONSE_OVERHEAD) as u64;
        (
            cap,
            "what one GetTree response carries: 2 × max_batch_total_size_bytes + 1 MiB",
        )
    }
}

/// Streams the pages of the tree under `root`, skipping the first `skip`
/// directories. A missing root is `NotFound` before anything is streamed.
pub async fn pages(
    store: BoundedStore,
    ctx: RequestContext,
    root: Digest,
    limits: PageLimits,
    skip: u64,
) -> Result<PageStream> {
    let (cap, setting) = limits.directory_cap();
    let root_dir: reapi::Directory = store
        .get_message_within(&ctx, &root, "root_digest", cap, setting)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let walk = Walk {
            store,
            ctx,
            limits,
            tx: &tx,
        };
        if let Err(e) = walk.run(root, root_dir, skip).await {
            let _ = tx.send(Err(e.into())).await;
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// One GetTree stream's walk.
struct Walk<'a> {
    store: BoundedStore,
    ctx: RequestContext,
    limits: PageLimits,
    tx: &'a tokio::sync::mpsc::Sender<Result<reapi::GetTreeResponse, Status>>,
}

impl Walk<'_> {
    /// The children of `dir` not seen yet, fetched in order; missing and
    /// undecodable ones left out.
    async fn children(
        &self,
        dir_digest: &Digest,
        dir: &reapi::Directory,
        seen: &mut HashSet<Digest>,
    ) -> Result<Vec<(Digest, reapi::Directory)>> {
        let function = dir_digest.function();
        let mut wanted = Vec::new();
        for (i, node) in dir.directories.iter().enumerate() {
            let d = Digest::from_proto_field(function, node.digest.as_ref(), "digest")
                .map_err(|e| e.in_field(&format!("directories[{i}]")))?;
            if seen.insert(d) {
                wanted.push((i, d));
            }
        }
        let (cap, setting) = self.limits.directory_cap();
        let mut out = Vec::new();
        for batch in wanted.chunks(FETCH_WIDTH) {
            let fetched = futures::future::join_all(batch.iter().map(|(i, d)| async move {
                let field = format!("directories[{i}] of Directory {dir_digest}");
                self.store
                    .get_message_within::<reapi::Directory>(&self.ctx, d, &field, cap, setting)
                    .await
                    .map(|child| (*d, child))
            }))
            .await;
            for f in fetched {
                match f {
                    Ok(child) => out.push(child),
                    Err(Error::NotFound(_)) | Err(Error::InvalidArgument { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn run(&self, root: Digest, root_dir: reapi::Directory, skip: u64) -> Result<()> {
        let (page_size, max_page_bytes) = (self.limits.directories, self.limits.bytes);
        let tx = self.tx;
        let mut seen = HashSet::from([root]);
        let mut queue: VecDeque<(Digest, reapi::Directory)> = VecDeque::from([(root, root_dir)]);
        let mut emitted: u64 = 0;
        let mut page = Vec::new();
        let mut page_bytes = 0usize;
        while let Some((digest, dir)) = queue.pop_front() {
            // Children first: they are fetched in parallel, in order.
            queue.extend(self.children(&digest, &dir, &mut seen).await?);
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
}
