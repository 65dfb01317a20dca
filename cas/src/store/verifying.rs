//! The layer that checks blobs against their digests, so that no backend
//! has to.
//!
//! [`VerifyingStore`] refuses a `put` whose bytes do not hash to the digest
//! before the backend sees it, and wraps every upload's [`BlobWriter`] so the
//! backend's `commit` is only called once size and hash matched: a backend
//! that publishes on commit (the disk store renames its temp file then)
//! can therefore never publish a wrong blob, and a killed process leaves at
//! most a temp file. Reads are verified too when the backend is not
//! trusted (a remote CAS): a whole-blob `get` or `read` then fails rather
//! than hand out bytes that are not the blob.
//!
//! An upload's hash runs as a pipeline [`Stage`] of its own, beside the
//! backend's (the disk store's file write is another stage), so hashing and
//! writing overlap and each byte is hashed once.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::stage::Stage;
use super::{read_range, BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// Blobs up to this size are hashed on the calling thread; larger ones on
/// the blocking pool, so an async thread never spends more than about a
/// tenth of a millisecond hashing.
const INLINE_HASH_BYTES: usize = 64 << 10;

/// Chunks (of about 1 MiB from the ByteStream service) queued for hashing
/// before an upload's writer waits.
const HASH_DEPTH: usize = 4;

/// Checks bytes against an expected digest as they stream past.
pub struct Verifier {
    expected: Digest,
    hasher: Hasher,
}

impl Verifier {
    pub fn new(expected: Digest) -> Self {
        Verifier {
            expected,
            hasher: expected.function().hasher(),
        }
    }

    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Hashes `data`, refusing it if it would overrun the expected size.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        check_room(&self.expected, self.hasher.len(), data.len())?;
        self.hasher.update(data);
        Ok(())
    }

    /// Checks the final size and hash.
    pub fn finish(self) -> Result<()> {
        let got = self.hasher.len();
        if got != self.expected.size() {
            return Err(Error::invalid(
                "finish_write",
                format!(
                    "upload of {} ended after {} of {} bytes",
                    self.expected,
                    got,
                    self.expected.size()
                ),
            ));
        }
        let actual = self.hasher.finish();
        if actual != self.expected {
            return Err(Error::DigestMismatch {
                field: String::new(),
                expected: self.expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }
}

/// Refuses `len` more bytes of an upload of `expected` that has `so_far`.
pub fn check_room(expected: &Digest, so_far: u64, len: usize) -> Result<()> {
    let total = so_far.saturating_add(len as u64);
    if total > expected.size() {
        return Err(Error::invalid(
            "data",
            format!(
                "upload of {} is longer than its digest says: {} bytes so far",
                expected, total
            ),
        ));
    }
    Ok(())
}

/// Checks a whole blob against its digest.
pub fn verify(digest: &Digest, data: &[u8]) -> Result<()> {
    if data.len() as u64 != digest.size() {
        return Err(Error::invalid(
            "data",
            format!(
                "blob {} has {} bytes, the digest says {}",
                digest,
                data.len(),
                digest.size()
            ),
        ));
    }
    let mut v = Verifier::new(*digest);
    v.update(data)?;
    v.finish()
}

/// [`verify`] off the async threads when the blob is large.
async fn verify_async(digest: &Digest, data: &Bytes) -> Result<()> {
    if data.len() <= INLINE_HASH_BYTES {
        return verify(digest, data);
    }
    let (d, data) = (*digest, data.clone());
    tokio::task::spawn_blocking(move || verify(&d, &data))
        .await
        .map_err(|e| Error::Internal(format!("verifying {digest}: {e}")))?
}

/// A store whose writes (and, if asked, reads) are checked against their
/// digests. Cheap to clone.
#[derive(Clone)]
pub struct VerifyingStore {
    inner: Arc<dyn BlobStore>,
    verify_reads: bool,
}

impl VerifyingStore {
    /// Verifies what is written to `inner`; reads are trusted (a local
    /// backend only holds what passed this layer).
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        VerifyingStore {
            inner,
            verify_reads: false,
        }
    }

    /// Verifies whole-blob reads too: for a backend this process does not
    /// control, such as a remote CAS. Ranged reads cannot be checked and
    /// pass as they are.
    pub fn verifying_reads(inner: Arc<dyn BlobStore>) -> Self {
        VerifyingStore {
            inner,
            verify_reads: true,
        }
    }

    pub fn inner(&self) -> &Arc<dyn BlobStore> {
        &self.inner
    }
}

#[async_trait]
impl BlobStore for VerifyingStore {
    fn keeps_owners(&self) -> bool {
        self.inner.keeps_owners()
    }

    fn restore_owners(&self, owner: super::owners::OwnerId, digests: &[Digest]) {
        self.inner.restore_owners(owner, digests)
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.inner.find_missing(ctx, digests).await
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        let data = self.inner.get(ctx, digest).await?;
        if self.verify_reads {
            verify_async(digest, &data).await?;
        }
        Ok(data)
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        verify_async(digest, &data).await?;
        self.inner.put(ctx, digest, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let (start, end) = read_range(digest, offset, limit)?;
        let stream = self.inner.read(ctx, digest, offset, limit).await?;
        if !self.verify_reads || start != 0 || end != digest.size() || start == end {
            return Ok(stream);
        }
        Ok(verified_stream(stream, *digest))
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        let inner = self.inner.write(ctx, digest).await?;
        Ok(Box::new(VerifyingWriter {
            inner,
            expected: *digest,
            accepted: 0,
            hashing: Stage::spawn("hashing", Verifier::new(*digest), HASH_DEPTH, |v, chunk| {
                v.update(chunk)
            }),
            started: Instant::now(),
        }))
    }
}

/// A whole-blob read checked on the fly: the last chunk fails if the
/// backend sent anything but the blob, and so does a stream that ends
/// short.
fn verified_stream(stream: ChunkStream, digest: Digest) -> ChunkStream {
    let verifier = Some(Verifier::new(digest));
    Box::pin(futures::stream::try_unfold(
        (stream, verifier),
        move |(mut stream, mut verifier)| async move {
            let Some(v) = verifier.as_mut() else {
                return Ok(None);
            };
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    v.update(&chunk)?;
                    if v.len() == digest.size() {
                        if let Some(v) = verifier.take() {
                            v.finish()?;
                        }
                    }
                    Ok(Some((chunk, (stream, verifier))))
                }
                None => Err(Error::Internal(format!(
                    "the store ended {digest} after {} of {} bytes",
                    v.len(),
                    digest.size()
                ))),
            }
        },
    ))
}

/// An upload whose bytes are hashed beside the backend's writer; the
/// backend commits only after the hash matched.
struct VerifyingWriter {
    inner: Box<dyn BlobWriter>,
    expected: Digest,
    /// Bytes accepted (queued to the hash and handed to the backend).
    accepted: u64,
    hashing: Stage<Verifier>,
    started: Instant,
}

#[async_trait]
impl BlobWriter for VerifyingWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        check_room(&self.expected, self.accepted, data.len())?;
        self.accepted += data.len() as u64;
        self.hashing.send(data.clone()).await?;
        self.inner.write(data).await
    }

    fn committed(&self) -> u64 {
        self.accepted
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let VerifyingWriter {
            inner,
            expected,
            hashing,
            started,
            ..
        } = *self;
        let (verifier, hashing_busy) = hashing.finish().await?;
        // On a mismatch `inner` is dropped uncommitted: the backend
        // abandons the upload and nothing becomes visible.
        verifier.finish()?;
        tracing::debug!(
            blob = %expected,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            hashing_ms = hashing_busy.as_secs_f64() * 1e3,
            "upload verified"
        );
        inner.commit().await
    }
}
