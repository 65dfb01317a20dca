//! The blob store interface, its backends and the layers that wrap them.
//!
//! [`BlobStore`] is deliberately small and object safe, in the manner of
//! Buildbarn's `BlobAccess`: the services, the action cache, the worker and
//! the scheduler all hold an `Arc<dyn BlobStore>`, so a store can be wrapped
//! without any caller knowing. Every method takes the call's
//! [`RequestContext`] (instance name, digest function, caller), so a layer
//! can route or refuse by it.
//!
//! Backends (`disk`, `memory`, `remote`, `sharded`) only keep bytes. The
//! rules every CAS must follow live in layers over them, built by
//! [`crate::factory`]: [`VerifyingStore`] checks data against its digest
//! before a backend may make it visible, [`BoundedStore`] caps what is
//! decoded as a message, [`NamespacedStore`] picks a backend by instance
//! name. Whole-blob `get`/`put` serve small blobs (batch calls, protobuf
//! messages); `read` and `write` stream large ones without holding them in
//! memory.

pub mod authorizing;
pub mod bounded;
pub mod disk;
pub mod memory;
pub mod metrics;
pub mod namespaced;
pub mod owners;
pub mod ownership_index;
pub mod remote;
pub mod routed;
pub mod sharded;
mod stage;
pub mod tenant_numbers;
pub mod tenant_visibility;
pub mod verifying;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};

pub use authorizing::AuthorizingStore;
pub use bounded::BoundedStore;
pub use namespaced::NamespacedStore;
pub use sharded::ShardedStore;
pub use tenant_visibility::{OwnershipIndex, TenantOf, TenantVisibility};
pub use verifying::{check_room, verify, Verifier, VerifyingStore};

/// A stream of a blob's bytes, in chunks of the store's choosing.
pub type ChunkStream = BoxStream<'static, Result<Bytes>>;

/// A content-addressed blob store.
///
/// A backend may trust that what it is given to store matches its digest:
/// [`VerifyingStore`] above it refuses anything else before the backend's
/// `put` or [`BlobWriter::commit`] is called. What a backend must still do
/// itself: never make an upload visible before `commit`, treat the empty
/// blob as always present, and answer offsets alike ([`read_range`]).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The digests among `digests` that the store does not hold. The empty
    /// blob is never missing. Order of the answer is unspecified.
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>>;

    /// The whole blob, for small blobs. `NotFound` if absent.
    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes>;

    /// Stores a whole blob. Through a [`VerifyingStore`], data that does
    /// not match `digest` is refused (`DigestMismatch`, or `InvalidArgument`
    /// naming `data` for a wrong size) and nothing is stored.
    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()>;

    /// Streams `limit` bytes (all if `None`) starting at `offset`. An offset
    /// past the end is `OutOfRange` naming `read_offset`; a missing blob
    /// is `NotFound`.
    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream>;

    /// Starts a streaming upload of the blob `digest`. The blob becomes
    /// visible only on [`BlobWriter::commit`]; dropping the writer abandons
    /// the upload.
    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>>;

    /// Whether this store keeps each blob's owners beside it and answers
    /// calls whose context has a [`Viewer`](owners::Viewer) as that viewer
    /// (see [`owners`]). Layers that only pass calls on forward this;
    /// a store that cannot keep owners says false, and the visibility
    /// layer then keeps them in a table of its own.
    fn keeps_owners(&self) -> bool {
        false
    }

    /// Makes `owner` an owner of those of `digests` the store holds: the
    /// ownership a restarted farm had recorded, given back to a store
    /// whose index was rebuilt from its files. Does nothing in a store
    /// that does not keep owners.
    fn restore_owners(&self, owner: owners::OwnerId, digests: &[Digest]) {
        let _ = (owner, digests);
    }
}

/// One streaming upload in progress.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends a chunk. Through a [`VerifyingStore`], data beyond the
    /// digest's size is refused with `InvalidArgument` naming `data`.
    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Bytes accepted so far.
    fn committed(&self) -> u64;

    /// Makes the blob visible. Through a [`VerifyingStore`], size and hash
    /// are checked first: a short upload is `InvalidArgument` naming
    /// `finish_write`, a wrong hash `DigestMismatch`, and the backend's
    /// commit is then never called.
    async fn commit(self: Box<Self>) -> Result<()>;
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

/// Encodes and stores a protobuf message, returning its digest.
pub async fn put_message<M: prost::Message>(
    store: &dyn BlobStore,
    ctx: &RequestContext,
    message: &M,
) -> Result<Digest> {
    let data = Bytes::from(message.encode_to_vec());
    let digest = Digest::of_bytes(ctx.digest_function(), &data);
    store.put(ctx, &digest, data).await?;
    Ok(digest)
}

/// Uploads a whole in-memory buffer through the streaming interface; used by
/// tests and by wrappers that turn large `put`s into streams.
pub async fn write_all(
    store: &dyn BlobStore,
    ctx: &RequestContext,
    digest: &Digest,
    data: Bytes,
) -> Result<()> {
    let mut w = store.write(ctx, digest).await?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rest.len().min(1 << 20);
        w.write(rest.split_to(n)).await?;
    }
    w.commit().await
}
