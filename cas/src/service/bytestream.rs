//! The ByteStream service: streamed reads and resumable, verified writes of
//! blobs, plain or zstd-compressed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use corral_proto::bytestream::byte_stream_server::ByteStream;
use corral_proto::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse,
};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::codec::{ZstdDecoder, ZstdEncoder};
use super::decode_errors::from_stream_error;
use super::uploads::{key, Upload, UploadState};
use super::State;
use crate::error::{Error, Result};
use crate::resource::{parse_read, parse_write, Compression, WriteResource};

/// Small client chunks are gathered to this size before they go to the
/// store, so a client writing 16 KiB messages costs no more than one
/// writing 1 MiB ones.
const COALESCE: usize = 1 << 20;

pub struct ByteStreamService {
    state: Arc<State>,
}

impl ByteStreamService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        ByteStreamService { state }
    }

    /// Feeds one upload from `first` and the rest of `stream`.
    async fn write_upload(
        &self,
        resource: &WriteResource,
        first_name: &str,
        first: WriteRequest,
        stream: &mut Streaming<WriteRequest>,
    ) -> Result<i64> {
        let k = key(resource);
        let shared = match self.state.uploads.get(&k) {
            Some(u) => u,
            None => {
                if first.write_offset != 0 {
                    return Err(Error::invalid(
                        "write_offset",
                        format!(
                            "{} for an upload that has no bytes yet (ask QueryWriteStatus)",
                            first.write_offset
                        ),
                    ));
                }
                let digest = resource.digest;
                if self.state.store.find_missing(&[digest]).await?.is_empty() {
                    // Already stored: REAPI lets the server end the upload now.
                    return Ok(match resource.compression {
                        Compression::Identity => digest.size() as i64,
                        Compression::Zstd => -1,
                    });
                }
                let writer = self.state.store.write(&digest).await?;
                let decoder = match resource.compression {
                    Compression::Identity => None,
                    Compression::Zstd => Some(ZstdDecoder::new()?),
                };
                self.state.uploads.insert(
                    k.clone(),
                    Upload {
                        digest,
                        compression: resource.compression,
                        state: UploadState::Open { writer, decoder },
                        received: 0,
                        touched: Instant::now(),
                    },
                )
            }
        };
        let mut upload = shared.try_lock_owned().map_err(|_| {
            Error::FailedPrecondition(format!(
                "resource_name: upload {:?} is being written by another stream",
                resource.uuid
            ))
        })?;
        upload.touched = Instant::now();
        if upload.digest != resource.digest || upload.compression != resource.compression {
            return Err(Error::invalid(
                "resource_name",
                format!(
                    "upload {:?} was started for a different blob",
                    resource.uuid
                ),
            ));
        }
        let received = upload.received;
        let UploadState::Open { writer, decoder } = &mut upload.state else {
            return Err(Error::AlreadyExists(format!(
                "resource_name: upload {:?} was already committed",
                resource.uuid
            )));
        };

        let mut feed = Feed {
            writer,
            decoder,
            pending: BytesMut::new(),
            size: resource.digest.size(),
            received,
        };
        let outcome = feed.run(first_name, first, stream).await;
        let received = feed.received;
        match outcome {
            Ok(true) => {
                let UploadState::Open { writer, .. } =
                    std::mem::replace(&mut upload.state, UploadState::Committed)
                else {
                    return Err(Error::Internal(
                        "upload state changed under its lock".into(),
                    ));
                };
                upload.received = received;
                upload.touched = Instant::now();
                if let Err(e) = writer.commit().await {
                    drop(upload);
                    self.state.uploads.remove(&k);
                    return Err(e);
                }
                Ok(received as i64)
            }
            Ok(false) => {
                // Stream ended early: kept for resumption.
                upload.received = received;
                upload.touched = Instant::now();
                Err(Error::invalid(
                    "finish_write",
                    format!(
                        "the stream ended before finish_write; {received} bytes are kept, resume with QueryWriteStatus"
                    ),
                ))
            }
            Err(e @ Error::Remote(_)) => {
                upload.received = received;
                upload.touched = Instant::now();
                Err(e)
            }
            Err(e @ Error::InvalidArgument { .. }) if e.to_string().starts_with("write_offset") => {
                upload.received = received;
                Err(e)
            }
            Err(e) => {
                drop(upload);
                self.state.uploads.remove(&k);
                Err(e)
            }
        }
    }
}

/// The message loop of one Write stream.
struct Feed<'a> {
    writer: &'a mut Box<dyn crate::store::BlobWriter>,
    decoder: &'a mut Option<ZstdDecoder>,
    pending: BytesMut,
    size: u64,
    /// Wire bytes accepted, including `pending`.
    received: u64,
}

impl Feed<'_> {
    /// Returns `Ok(true)` after `finish_write`, `Ok(false)` if the stream
    /// ended without it. Pending bytes are flushed to the writer in both
    /// cases and on a transport error, so `received` is always what the
    /// writer holds.
    async fn run(
        &mut self,
        first_name: &str,
        first: WriteRequest,
        stream: &mut Streaming<WriteRequest>,
    ) -> Result<bool> {
        let mut msg = first;
        loop {
            if !msg.resource_name.is_empty() && msg.resource_name != first_name {
                return Err(Error::invalid(
                    "resource_name",
                    "changed in the middle of a Write stream",
                ));
            }
            if msg.write_offset != self.received as i64 {
                self.flush().await?;
                return Err(Error::invalid(
                    "write_offset",
                    format!("is {}, expected {}", msg.write_offset, self.received),
                ));
            }
            let ready = self.take(msg.data)?;
            if msg.finish_write {
                if let Some(chunk) = ready {
                    self.writer.write(chunk).await?;
                }
                self.flush().await?;
                if let Some(d) = self.decoder.as_ref() {
                    if !d.frame_done() {
                        return Err(Error::invalid("data", "the zstd stream is truncated"));
                    }
                }
                return match stream.message().await {
                    Ok(None) => Ok(true),
                    Ok(Some(_)) => Err(Error::invalid(
                        "finish_write",
                        "data was sent after finish_write",
                    )),
                    Err(status) => Err(from_stream_error(status, "WriteRequest")),
                };
            }
            // Hash and store this chunk while the next message arrives.
            let next = match ready {
                Some(chunk) => {
                    let (written, next) = tokio::join!(self.writer.write(chunk), stream.message());
                    written?;
                    next
                }
                None => stream.message().await,
            };
            msg = match next {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.flush().await?;
                    return Ok(false);
                }
                Err(status) => {
                    self.flush().await?;
                    return Err(from_stream_error(status, "WriteRequest"));
                }
            };
        }
    }

    /// Accepts one message's data; returns a chunk ready for the store once
    /// enough has gathered (or at once for a large message).
    fn take(&mut self, data: Bytes) -> Result<Option<Bytes>> {
        if data.is_empty() {
            return Ok(None);
        }
        let room = self.size - self.writer.committed() - self.pending.len() as u64;
        match self.decoder {
            Some(decoder) => {
                let plain = decoder.decode(&data, room)?;
                self.pending.extend_from_slice(&plain);
            }
            None => {
                if data.len() as u64 > room {
                    return Err(Error::invalid(
                        "data",
                        format!("write goes past the blob's size of {} bytes", self.size),
                    ));
                }
                if self.pending.is_empty() && data.len() >= COALESCE {
                    self.received += data.len() as u64;
                    return Ok(Some(data));
                }
                self.pending.extend_from_slice(&data);
            }
        }
        self.received += data.len() as u64;
        if self.pending.len() >= COALESCE {
            return Ok(Some(self.pending.split().freeze()));
        }
        Ok(None)
    }

    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let chunk = self.pending.split().freeze();
        self.writer.write(chunk).await
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ByteStream for ByteStreamService {
    type ReadStream = ReadStream;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadStream>, Status> {
        let req = request.into_inner();
        let resource = parse_read(&req.resource_name)?;
        if req.read_offset < 0 {
            return Err(Error::OutOfRange {
                field: "read_offset".into(),
                reason: format!("{} is negative", req.read_offset),
            }
            .into());
        }
        if req.read_limit < 0 {
            return Err(
                Error::invalid("read_limit", format!("{} is negative", req.read_limit)).into(),
            );
        }
        let limit = (req.read_limit > 0).then_some(req.read_limit as u64);
        let chunks = self
            .state
            .store
            .read(&resource.digest, req.read_offset as u64, limit)
            .await?;
        let stream: ReadStream = match resource.compression {
            Compression::Identity => {
                Box::pin(chunks.map(|c| c.map(|data| ReadResponse { data }).map_err(Status::from)))
            }
            Compression::Zstd => Box::pin(compress(chunks)?),
        };
        Ok(Response::new(stream))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await
            .map_err(|s| from_stream_error(s, "WriteRequest"))?
            .ok_or_else(|| Error::invalid("resource_name", "the Write stream sent no message"))?;
        let name = first.resource_name.clone();
        let resource = parse_write(&name)?;
        let committed_size = self
            .write_upload(&resource, &name, first, &mut stream)
            .await
            .inspect_err(
                |e| tracing::debug!(resource = %name, error = %e, "ByteStream write refused"),
            )?;
        Ok(Response::new(WriteResponse { committed_size }))
    }

    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        let req = request.into_inner();
        let resource = parse_write(&req.resource_name)?;
        if let Some(shared) = self.state.uploads.get(&key(&resource)) {
            let upload = shared.lock().await;
            if upload.digest == resource.digest {
                return Ok(Response::new(QueryWriteStatusResponse {
                    committed_size: upload.received as i64,
                    complete: matches!(upload.state, UploadState::Committed),
                }));
            }
        }
        let exists = self
            .state
            .store
            .find_missing(&[resource.digest])
            .await?
            .is_empty();
        let committed_size = match (exists, resource.compression) {
            (false, _) => 0,
            (true, Compression::Identity) => resource.digest.size() as i64,
            (true, Compression::Zstd) => -1,
        };
        Ok(Response::new(QueryWriteStatusResponse {
            committed_size,
            complete: exists,
        }))
    }
}

/// Turns a stream of plain chunks into zstd-compressed responses.
fn compress(
    chunks: crate::store::ChunkStream,
) -> Result<impl Stream<Item = Result<ReadResponse, Status>> + Send> {
    let encoder = ZstdEncoder::new()?;
    Ok(futures::stream::try_unfold(
        (chunks, Some(encoder)),
        |(mut chunks, mut encoder)| async move {
            loop {
                let Some(enc) = encoder.as_mut() else {
                    return Ok(None);
                };
                match chunks.next().await {
                    Some(chunk) => {
                        let out = enc.encode(&chunk?)?;
                        if !out.is_empty() {
                            return Ok(Some((
                                ReadResponse { data: out.into() },
                                (chunks, encoder),
                            )));
                        }
                    }
                    None => {
                        let out = enc.finish()?;
                        encoder = None;
                        return Ok(Some((ReadResponse { data: out.into() }, (chunks, encoder))));
                    }
                }
            }
        },
    )
    .map_err(|e: Error| Status::from(e)))
}
