//! The remote CAS as the worker sees it: batch reads of many small blobs,
//! streamed reads and writes of large ones, FindMissingBlobs and batch
//! uploads. corral-cas's [`GrpcStore`] does one blob per call; the worker
//! needs whole batches, so this wraps the REAPI clients directly and uses
//! the `GrpcStore` on the same channel for ByteStream.
//!
//! Every call takes the [`RequestContext`] of the action it is made for:
//! its instance name selects the farm's storage namespace, so a blob is
//! fetched from, and an output uploaded to, the action's own instance. The
//! instance name given at connect is only the one Capabilities is asked.

use bytes::Bytes;
use corral_cas::{BlobStore, BlobWriter, Digest, GrpcStore, RequestContext};
use corral_cas::{Connection, Connector};
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use futures::StreamExt;

use crate::error::{Error, Result};

/// Largest gRPC message the worker sends or accepts.
const MAX_MESSAGE: usize = 64 << 20;

/// A connection to the remote CAS. Cheap to clone.
#[derive(Clone)]
pub struct RemoteCas {
    /// Holds the channel, the instance name and the batch limit too.
    store: GrpcStore,
}

impl RemoteCas {
    /// Connects to `url` without credentials of its own and reads the
    /// batch limit from Capabilities.
    pub async fn connect(url: &str, instance_name: &str) -> Result<Self> {
        Self::connect_with(url, instance_name, &Connector::default()).await
    }

    /// Connects to `url` with the client's TLS settings and token.
    pub async fn connect_with(
        url: &str,
        instance_name: &str,
        connector: &Connector,
    ) -> Result<Self> {
        let connection = connector
            .connect(url)
            .await
            .map_err(|e| Error::Unavailable(format!("the CAS at {url}: {e}")))?;
        // The first call is where a refused certificate or token shows:
        // say where, and keep the status's code (UNAUTHENTICATED …).
        Self::with_channel(connection, instance_name)
            .await
            .map_err(|e| match e {
                Error::Cas(corral_cas::Error::Remote(status)) => {
                    Error::rpc(format!("GetCapabilities of the CAS at {url}"), status)
                }
                other => other,
            })
    }

    /// Uses an existing channel or connection.
    pub async fn with_channel(channel: impl Into<Connection>, instance_name: &str) -> Result<Self> {
        let store = GrpcStore::with_channel(channel, instance_name).await?;
        Ok(RemoteCas { store })
    }

    /// Total bytes of blob data that fit in one batch call.
    pub fn batch_limit(&self) -> u64 {
        self.store.batch_limit()
    }

    /// The instance name Capabilities was asked at connect (not the one
    /// calls use: each names its own in its context).
    pub fn instance_name(&self) -> &str {
        self.store.instance_name()
    }

    /// The ByteStream-capable store on the same channel.
    pub fn store(&self) -> &GrpcStore {
        &self.store
    }

    fn cas(&self) -> ContentAddressableStorageClient<Connection> {
        ContentAddressableStorageClient::new(self.store.channel().clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Reads several small blobs in one BatchReadBlobs call. A blob the
    /// server lacks is [`Error::MissingBlob`]. Data is not verified here:
    /// the local store verifies it when it is put.
    pub async fn batch_read(
        &self,
        ctx: &RequestContext,
        digests: &[Digest],
    ) -> Result<Vec<(Digest, Bytes)>> {
        let function = ctx.digest_function();
        let response = self
            .cas()
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: ctx.instance_name().to_string(),
                digests: digests.iter().map(Digest::to_proto).collect(),
                acceptable_compressors: Vec::new(),
                digest_function: function.to_proto(),
            })
            .await
            .map_err(|s| Error::rpc("BatchReadBlobs", s))?
            .into_inner();
        let mut out = Vec::with_capacity(digests.len());
        for entry in response.responses {
            let digest =
                corral_cas::Digest::from_proto_field(function, entry.digest.as_ref(), "digest")?;
            let code = entry.status.as_ref().map_or(0, |s| s.code);
            match tonic::Code::from_i32(code) {
                tonic::Code::Ok => out.push((digest, Bytes::from(entry.data))),
                tonic::Code::NotFound => return Err(Error::MissingBlob(digest.to_string())),
                other => {
                    let message = entry.status.map(|s| s.message).unwrap_or_default();
                    return Err(Error::rpc(
                        format!("BatchReadBlobs of {digest}"),
                        tonic::Status::new(other, message),
                    ));
                }
            }
        }
        if out.len() != digests.len() {
            return Err(Error::Internal(format!(
                "BatchReadBlobs answered {} of {} blobs",
                out.len(),
                digests.len()
            )));
        }
        Ok(out)
    }

    /// Streams one blob from the remote CAS into `writer` and commits it.
    /// The stream is checked for length only: `writer` (the local store's,
    /// under its verifying layer) hashes it, once.
    pub async fn read_into(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        mut writer: Box<dyn BlobWriter>,
    ) -> Result<()> {
        let mut stream = match self.store.read(ctx, digest, 0, None).await {
            Ok(s) => s,
            Err(e) if e.code() == tonic::Code::NotFound => {
                return Err(Error::MissingBlob(digest.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        while let Some(chunk) = stream.next().await {
            writer.write(chunk?).await?;
        }
        writer.commit().await?;
        Ok(())
    }

    /// The digests among `digests` that the remote CAS lacks.
    pub async fn find_missing(
        &self,
        ctx: &RequestContext,
        digests: &[Digest],
    ) -> Result<Vec<Digest>> {
        Ok(self.store.find_missing(ctx, digests).await?)
    }

    /// Uploads several small blobs in one BatchUpdateBlobs call.
    pub async fn batch_update(
        &self,
        ctx: &RequestContext,
        blobs: Vec<(Digest, Bytes)>,
    ) -> Result<()> {
        let requests = blobs
            .into_iter()
            .map(|(d, data)| reapi::batch_update_blobs_request::Request {
                digest: Some(d.to_proto()),
                data: data.to_vec(),
                compressor: reapi::compressor::Value::Identity as i32,
            })
            .collect();
        let response = self
            .cas()
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: ctx.instance_name().to_string(),
                requests,
                digest_function: ctx.digest_function().to_proto(),
            })
            .await
            .map_err(|s| Error::rpc("BatchUpdateBlobs", s))?
            .into_inner();
        for entry in response.responses {
            if let Some(status) = entry.status {
                if status.code != 0 {
                    let which = entry
                        .digest
                        .map(|d| format!("{}/{}", d.hash, d.size_bytes))
                        .unwrap_or_default();
                    return Err(Error::rpc(
                        format!("BatchUpdateBlobs of {which}"),
                        tonic::Status::new(tonic::Code::from_i32(status.code), status.message),
                    ));
                }
            }
        }
        Ok(())
    }
}
