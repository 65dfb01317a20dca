//! The blob store interface and its implementations.
//!
//! [`BlobStore`] is deliberately small and object safe, in the manner of
//! Buildbarn's `BlobAccess`: the services, the action cache, the worker and
//! the scheduler all hold an `Arc<dyn BlobStore>`, so a store can be wrapped
//! (verifying, bounded, remote) without any caller knowing.
//!
//! Whole-blob `get`/`put` serve small blobs (batch calls, protobuf messages);
//! `read` and `write` stream large ones without holding them in memory.
//! Every implementation verifies data against its digest before it becomes
//! visible, so no store ever serves a wrong blob under a right name.

pub mod disk;
pub mod memory;
pub mod remote;
mod stage;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// A stream of a blob's bytes, in chunks of the store's choosing.
pub type ChunkStream = BoxStream<'static, Result<Bytes>>;

/// A content-addressed blob store.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The digests among `digests` that the store does not hold. The empty
    /// blob is never missing. Order of the answer is unspecified.
    async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>>;

    /// The whole blob, for small blobs. `NotFound` if absent.
    async fn get(&self, digest: &Digest) -> Result<Bytes>;

    /// Stores a whole blob after checking it against `digest`
    /// (`DigestMismatch` otherwise; nothing is stored then).
    async fn put(&self, digest: &Digest, data: Bytes) -> Result<()>;

    /// Streams `limit` bytes (all if `None`) starting at `offset`. An offset
    /// past the end is `OutOfRange` naming `read_offset`; a missing blob
    /// is `NotFound`.
    async fn read(&self, digest: &Digest, offset: u64, limit: Option<u64>) -> Result<ChunkStream>;

    /// Starts a streaming upload of the blob `digest`. The blob becomes
    /// visible only when [`BlobWriter::commit`] verified it; dropping the
    /// writer abandons the upload.
    async fn write(&self, digest: &Digest) -> Result<Box<dyn BlobWriter>>;
}

/// One streaming upload in progress.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends a chunk. Data beyond the digest's size is refused with
    /// `InvalidArgument` naming `data`.
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Bytes accepted so far.
    fn committed(&self) -> u64;

    /// Verifies size and hash, then makes the blob visible. A short upload is
    /// `InvalidArgument` naming `finish_write`; a wrong hash is
    /// `DigestMismatch`.
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Checks bytes against an expected digest as they stream past. Shared by
/// the store implementations so that every one refuses the same things.
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

    /// Refuses `len` more bytes if they would overrun the expected size.
    pub fn check_room(&self, len: usize) -> Result<()> {
        check_room(&self.expected, self.hasher.len(), len)
    }

    /// Hashes `data` after [`Verifier::check_room`] allowed it.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        self.check_room(data.len())?;
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

/// Clamps a read of `size` bytes to `offset`/`limit`, returning the byte
/// range to serve. Shared so every store answers bad offsets alike.
pub fn read_range(digest: &Digest, offset: u64, limit: Option<u64>) -> Result<(u64, u64)> {
    if offset > digest.size() {
        return Err(Error::OutOfRange {
            field: "read_offset".into(),
            reason: format!("{} is past the end of {}", offset, digest),
        });
    }
    let available = digest.size() - offset;
    let len = limit.map_or(available, |l| l.min(available));
    Ok((offset, offset + len))
}

/// Reads a whole stream into memory; for callers that know the blob is
/// small.
pub async fn collect(mut stream: ChunkStream, size_hint: u64) -> Result<Bytes> {
    use futures::StreamExt;
    let mut buf = Vec::with_capacity(usize::try_from(size_hint).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(Bytes::from(buf))
}

/// Fetches and decodes a protobuf message stored as a blob.
pub async fn get_message<M: prost::Message + Default>(
    store: &dyn BlobStore,
    digest: &Digest,
) -> Result<M> {
    let data = store.get(digest).await?;
    M::decode(data).map_err(|e| {
        Error::invalid(
            "digest",
            format!(
                "blob {digest} is not a valid {}: {e}",
                std::any::type_name::<M>()
            ),
        )
    })
}

/// Encodes and stores a protobuf message, returning its digest.
pub async fn put_message<M: prost::Message>(
    store: &dyn BlobStore,
    function: crate::DigestFunction,
    message: &M,
) -> Result<Digest> {
    let data = Bytes::from(message.encode_to_vec());
    let digest = Digest::of_bytes(function, &data);
    store.put(&digest, data).await?;
    Ok(digest)
}

/// Uploads a whole in-memory buffer through the streaming interface; used by
/// tests and by wrappers that turn large `put`s into streams.
pub async fn write_all(store: &dyn BlobStore, digest: &Digest, data: Bytes) -> Result<()> {
    let mut w = store.write(digest).await?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(1 << 20);
        w.write(rest.split_to(n)).await?;
    }
    w.commit().await
}
