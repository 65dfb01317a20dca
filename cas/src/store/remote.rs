//! A [`BlobStore`] reached over the network through the REAPI
//! ContentAddressableStorage and ByteStream services: how the scheduler or a
//! worker reads a CAS that runs in another process.
//!
//! Small blobs go through the batch calls, large ones through ByteStream,
//! split at the batch limit the server advertises. This backend checks
//! lengths (a stream that is longer or shorter than asked is an error) but
//! not hashes: the factory puts a [`super::VerifyingStore`] that verifies
//! reads over it, and a copy into another store's writer is verified by
//! that store, so nothing is hashed twice.
//!
//! Calls through [`BlobStore`] use the instance name of their
//! [`RequestContext`], unless the store was given a fixed one
//! ([`GrpcStore::with_fixed_instance`]).

use crate::client_connection::Connection;
use async_trait::async_trait;
use bytes::Bytes;
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::bytestream::{ReadRequest, WriteRequest};
use corral_proto::reapi;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;

use super::{read_range, BlobStore, BlobWriter, ChunkStream};
use crate::context::RequestContext;
use crate::digest::{Digest, DigestFunction};
use crate::error::{Error, Result};
use crate::resource::{read_name, write_name, Compression};

/// Digests per FindMissingBlobs call.
const FIND_MISSING_CHUNK: usize = 10_000;
/// Largest gRPC message this client sends or accepts.
const MAX_MESSAGE: usize = 64 << 20;
/// ByteStream chunk size for uploads.
const WRITE_CHUNK: usize = 1 << 20;

/// A remote CAS. Cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct GrpcStore {
    channel: Connection,
    /// The name given at connect: asked for Capabilities, and used by the
    /// shorthands [`GrpcStore::get`] and [`GrpcStore::put`].
    instance_name: String,
    /// When set, sent instead of each call's instance name.
    fixed_instance: Option<String>,
    /// Blobs up to this size use the batch calls.
    batch_limit: u64,
}

impl GrpcStore {
    /// Connects to `url` (`http://host:port`) and reads the server's batch
    /// limit from Capabilities.
    pub async fn connect(url: &str, instance_name: &str) -> Result<Self> {
        let channel = crate::channel::connect(url).await?;
        Self::with_channel(channel, instance_name).await
    }

    /// Uses an existing channel or connection (shared with other
    /// clients; a [`Connection`] brings its credentials).
    pub async fn with_channel(channel: impl Into<Connection>, instance_name: &str) -> Result<Self> {
        let channel: Connection = channel.into();
        let caps = CapabilitiesClient::new(channel.clone())
            .get_capabilities(reapi::GetCapabilitiesRequest {
                instance_name: instance_name.to_string(),
            })
            .await?
            .into_inner();
        let advertised = caps
            .cache_capabilities
            .map(|c| c.max_batch_total_size_bytes)
            .unwrap_or(0);
        let advertised = if advertised <= 0 {
            4 << 20
        } else {
            advertised as u64
        };
        Ok(GrpcStore {
            channel,
            instance_name: instance_name.to_string(),
            fixed_instance: None,
            // Leave room for the digests and framing in the same message.
            batch_limit: advertised.saturating_sub(64 << 10).max(1),
        })
    }

    /// Total bytes of blob data that fit in one batch call (the server's
    /// limit less room for digests and framing).
    pub fn batch_limit(&self) -> u64 {
        self.batch_limit
    }

    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// The channel, for clients of other services on the same connection.
    pub fn channel(&self) -> &Connection {
        &self.channel
    }

    /// Sends every call to `instance` whatever its context says: for a
    /// remote CAS that serves this farm under one instance name of its own.
    pub fn with_fixed_instance(mut self, instance: &str) -> Self {
        self.fixed_instance = Some(instance.to_string());
        self
    }

    /// The instance name sent for a call in `ctx`.
    fn instance<'a>(&'a self, ctx: &'a RequestContext) -> &'a str {
        self.fixed_instance
            .as_deref()
            .unwrap_or(ctx.instance_name())
    }

    /// Client shorthand: the whole blob from the instance given at connect.
    /// (Through [`BlobStore`], the call's context names the instance.)
    pub async fn get(&self, digest: &Digest) -> Result<Bytes> {
        let ctx = RequestContext::internal(&self.instance_name, digest.function());
        BlobStore::get(self, &ctx, digest).await
    }

    /// Client shorthand: stores a whole blob under the instance given at
    /// connect. The server verifies it.
    pub async fn put(&self, digest: &Digest, data: Bytes) -> Result<()> {
        let ctx = RequestContext::internal(&self.instance_name, digest.function());
        BlobStore::put(self, &ctx, digest, data).await
    }

    /// The bytes the server sends for a read, checked for length only.
    async fn read_stream(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let (start, end) = read_range(digest, offset, limit)?;
        if start == end {
            if BlobStore::find_missing(self, ctx, &[*digest])
                .await?
                .is_empty()
            {
                return Ok(Box::pin(futures::stream::empty()));
            }
            return Err(Error::NotFound(format!("blob {digest}")));
        }
        let request = ReadRequest {
            resource_name: read_name(self.instance(ctx), Compression::Identity, digest),
            read_offset: start as i64,
            read_limit: (end - start) as i64,
        };
        let stream = match self.bytestream().read(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                return Err(Error::NotFound(format!("blob {digest}")))
            }
            Err(s) => return Err(Error::Remote(s)),
        };
        let expected = end - start;
        let digest = *digest;
        Ok(Box::pin(futures::stream::try_unfold(
            (stream, 0u64),
            move |(mut stream, seen)| async move {
                match stream.message().await.map_err(Error::Remote)? {
                    Some(m) => {
                        let seen = seen + m.data.len() as u64;
                        if seen > expected {
                            return Err(Error::Internal(format!(
                                "server sent more than {expected} bytes of {digest}"
                            )));
                        }
                        Ok(Some((m.data, (stream, seen))))
                    }
                    None if seen < expected => Err(Error::Internal(format!(
                        "server ended {digest} after {seen} of {expected} bytes"
                    ))),
                    None => Ok(None),
                }
            },
        )))
    }

    fn cas(&self) -> ContentAddressableStorageClient<Connection> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn bytestream(&self) -> ByteStreamClient<Connection> {
        ByteStreamClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    async fn batch_read(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        let response = self
            .cas()
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: self.instance(ctx).to_string(),
                digests: vec![digest.to_proto()],
                acceptable_compressors: Vec::new(),
                digest_function: digest.function().to_proto(),
            })
            .await?
            .into_inner();
        let entry = response
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("BatchReadBlobs answered nothing".into()))?;
        check_status(entry.status, digest)?;
        if entry.data.len() as u64 != digest.size() {
            return Err(Error::Internal(format!(
                "server sent {} bytes for {digest}",
                entry.data.len()
            )));
        }
        Ok(Bytes::from(entry.data))
    }
}

/// Turns a per-blob `google.rpc.Status` into a result.
fn check_status(status: Option<corral_proto::rpc::Status>, digest: &Digest) -> Result<()> {
    let Some(status) = status else { return Ok(()) };
    match tonic::Code::from_i32(status.code) {
        tonic::Code::Ok => Ok(()),
        tonic::Code::NotFound => Err(Error::NotFound(format!("blob {digest}"))),
        code => Err(Error::Remote(tonic::Status::new(code, status.message))),
    }
}

#[async_trait]
impl BlobStore for GrpcStore {
    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let mut missing = Vec::new();
        for function in DigestFunction::ALL {
            let of_function: Vec<reapi::Digest> = digests
                .iter()
                .filter(|d| d.function() == function)
                .map(Digest::to_proto)
                .collect();
            for chunk in of_function.chunks(FIND_MISSING_CHUNK) {
                let response = self
                    .cas()
                    .find_missing_blobs(reapi::FindMissingBlobsRequest {
                        instance_name: self.instance(ctx).to_string(),
                        blob_digests: chunk.to_vec(),
                        digest_function: function.to_proto(),
                    })
                    .await?
                    .into_inner();
                for d in &response.missing_blob_digests {
                    missing.push(Digest::from_proto(function, d)?);
                }
            }
        }
        Ok(missing)
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        if digest.is_empty_blob() {
            return Ok(Bytes::new());
        }
        if digest.size() <= self.batch_limit {
            return self.batch_read(ctx, digest).await;
        }
        super::collect(self.read_stream(ctx, digest, 0, None).await?, digest.size()).await
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        if digest.size() > self.batch_limit {
            return super::write_all(self, ctx, digest, data).await;
        }
        let response = self
            .cas()
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: self.instance(ctx).to_string(),
                requests: vec![reapi::batch_update_blobs_request::Request {
                    digest: Some(digest.to_proto()),
                    data: data.to_vec(),
                    compressor: reapi::compressor::Value::Identity as i32,
                }],
                digest_function: digest.function().to_proto(),
            })
            .await?
            .into_inner();
        let entry = response
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("BatchUpdateBlobs answered nothing".into()))?;
        check_status(entry.status, digest)
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        self.read_stream(ctx, digest, offset, limit).await
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
        let mut client = self.bytestream();
        let call = tokio::spawn(async move {
            client
                .write(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|r| r.into_inner().committed_size)
        });
        Ok(Box::new(RemoteWriter {
            resource_name: write_name(
                self.instance(ctx),
                &format!("{:032x}", fastrand::u128(..)),
                Compression::Identity,
                digest,
            ),
            digest: *digest,
            sent: 0,
            tx: Some(tx),
            call,
            sent_first: false,
        }))
    }
}

/// A ByteStream upload running in a background task fed by a channel.
struct RemoteWriter {
    resource_name: String,
    digest: Digest,
    /// Bytes sent so far: the next `write_offset`.
    sent: u64,
    tx: Option<tokio::sync::mpsc::Sender<WriteRequest>>,
    call: tokio::task::JoinHandle<Result<i64, tonic::Status>>,
    sent_first: bool,
}

impl RemoteWriter {
    fn request(&mut self, data: Bytes, finish_write: bool) -> WriteRequest {
        let resource_name = if self.sent_first {
            String::new()
        } else {
            self.sent_first = true;
            self.resource_name.clone()
        };
        WriteRequest {
            resource_name,
            write_offset: self.sent as i64,
            finish_write,
            data,
        }
    }
}

#[async_trait]
impl BlobWriter for RemoteWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(WRITE_CHUNK));
            let len = chunk.len() as u64;
            let request = self.request(chunk, false);
            self.sent += len;
            if let Some(tx) = &self.tx {
                if tx.send(request).await.is_err() {
                    // The server ended the call early (it has the blob, or
                    // refused): commit reports which.
                    self.tx = None;
                }
            }
        }
        Ok(())
    }

    fn committed(&self) -> u64 {
        self.sent
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let digest = self.digest;
        let size = digest.size() as i64;
        let request = self.request(Bytes::new(), true);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(request).await;
        }
        let committed = (&mut self.call)
            .await
            .map_err(|e| Error::Internal(format!("upload task failed: {e}")))??;
        if committed != size && committed != -1 {
            return Err(Error::Internal(format!(
                "server committed {committed} bytes of {digest}, expected {size}"
            )));
        }
        Ok(())
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        // Abandoned: the server keeps the partial upload for resumption and
        // sweeps it later.
        self.call.abort();
    }
}
