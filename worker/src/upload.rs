//! Uploading outputs: ask FindMissingBlobs which blobs the remote CAS
//! lacks, send small ones together with BatchUpdateBlobs (up to the
//! server's batch limit per call) and large ones with ByteStream straight
//! from their files, with at most `parallel` calls at once.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::{BlobStore, Digest, RequestContext, VerifyingStore};
use futures::StreamExt;

use crate::capture::Blob;
use crate::error::{Error, Result};
use crate::remote::RemoteCas;

/// What an upload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Blobs offered.
    pub offered: usize,
    /// Blobs the remote CAS lacked and was sent.
    pub sent: usize,
    pub sent_bytes: u64,
}

/// Uploads whatever of `blobs` the remote CAS lacks under `ctx` (the
/// action's instance name: its outputs go to its namespace).
pub async fn upload(
    remote: &RemoteCas,
    ctx: &RequestContext,
    blobs: &HashMap<Digest, Blob>,
    parallel: usize,
) -> Result<UploadStats> {
    let digests: Vec<Digest> = blobs.keys().copied().collect();
    let mut stats = UploadStats {
        offered: digests.len(),
        ..Default::default()
    };
    if digests.is_empty() {
        return Ok(stats);
    }
    let mut missing = remote.find_missing(ctx, &digests).await?;
    let limit = remote.batch_limit();
    missing.sort_by_key(|d| std::cmp::Reverse(d.size()));
    let mut calls: Vec<Vec<Digest>> = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for d in missing {
        stats.sent += 1;
        stats.sent_bytes += d.size();
        if d.size() > limit {
            calls.push(vec![d]);
            continue;
        }
        if !batch.is_empty() && batch_bytes + d.size() > limit {
            calls.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
        batch_bytes += d.size();
        batch.push(d);
    }
    if !batch.is_empty() {
        calls.push(batch);
    }
    let mut running = futures::stream::iter(calls.into_iter().map(|call| async move {
        if let [d] = call.as_slice() {
            if d.size() > limit {
                return stream_one(remote, ctx, d, &blobs[d]).await;
            }
        }
        let mut items = Vec::with_capacity(call.len());
        for d in &call {
            items.push((*d, read_blob(d, &blobs[d]).await?));
        }
        remote.batch_update(ctx, items).await
    }))
    .buffer_unordered(parallel.max(1));
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(stats)
}

/// A small blob's bytes; a file is read and checked against its digest
/// (it must not have changed since it was hashed).
async fn read_blob(digest: &Digest, blob: &Blob) -> Result<Bytes> {
    match blob {
        Blob::Bytes(b) => Ok(b.clone()),
        Blob::File(p) => {
            let p = p.clone();
            let data = tokio::task::spawn_blocking(move || {
                std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
            })
            .await
            .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))??;
            if Digest::of_bytes(digest.function(), &data) != *digest {
                return Err(Error::Internal(format!(
                    "output {digest} changed after it was hashed"
                )));
            }
            Ok(Bytes::from(data))
        }
    }
}

/// Streams one large blob with ByteStream, reading its file in chunks.
/// The upload is verified on this side too, so an output file changed
/// after it was hashed is refused here, before `finish_write` goes out.
async fn stream_one(
    remote: &RemoteCas,
    ctx: &RequestContext,
    digest: &Digest,
    blob: &Blob,
) -> Result<()> {
    let verified = VerifyingStore::new(Arc::new(remote.store().clone()));
    let mut writer = verified.write(ctx, digest).await?;
    match blob {
        Blob::Bytes(b) => writer.write(b.clone()).await?,
        Blob::File(p) => {
            let mut file = std::fs::File::open(p)
                .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
            loop {
                let (chunk, f) = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = file.read(&mut buf)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>((buf, file))
                })
                .await
                .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
                .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
                file = f;
                if chunk.is_empty() {
                    break;
                }
                writer.write(Bytes::from(chunk)).await?;
            }
        }
    }
    // The writer verifies the hash before it commits.
    writer.commit().await?;
    Ok(())
}
