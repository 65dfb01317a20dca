//! The ByteStream service: streamed reads and resumable, verified writes of
//! blobs, plain or zstd-compressed. The write path is in `write.rs`, the
//! registry of unfinished uploads in `uploads.rs`.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::bytestream::byte_stream_server::ByteStream;
use corral_proto::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse,
};
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::codec::ZstdEncoder;
use super::decode_errors::from_stream_error;
use super::uploads::UploadKey;
use super::{write, State};
use crate::context::Caller;
use crate::error::{Error, Result};
use crate::resource::{parse_read, parse_write, Compression};
use crate::store::BlobStore;

pub struct ByteStreamService {
    state: Arc<State>,
}

impl ByteStreamService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        ByteStreamService { state }
    }

    async fn open_read(&self, caller: &Caller, req: &ReadRequest) -> Result<ReadStream> {
        let resource = parse_read(&req.resource_name)?;
        let ctx = caller.context(&resource.instance_name, resource.digest.function());
        if req.read_offset < 0 {
            return Err(Error::OutOfRange {
                field: "read_offset".into(),
                reason: format!("{} is negative", req.read_offset),
            });
        }
        if req.read_limit < 0 {
            return Err(Error::invalid(
                "read_limit",
                format!("{} is negative", req.read_limit),
            ));
        }
        if req.read_limit != 0 && resource.compression != Compression::Identity {
            // REAPI: a limit on compressed bytes would cut a frame.
            return Err(Error::invalid(
                "read_limit",
                "must be 0 when reading compressed-blobs",
            ));
        }
        // 0 means no limit (ByteStream).
        let limit = (req.read_limit > 0).then_some(req.read_limit as u64);
        let chunks = self
            .state
            .store
            .read(&ctx, &resource.digest, req.read_offset as u64, limit)
            .await?;
        Ok(match resource.compression {
            Compression::Identity => {
                Box::pin(chunks.map(|c| c.map(|data| ReadResponse { data }).map_err(Status::from)))
            }
            Compression::Zstd => Box::pin(compress(chunks)?),
        })
    }

    async fn write_status(
        &self,
        caller: &Caller,
        resource_name: &str,
    ) -> Result<QueryWriteStatusResponse> {
        let resource = parse_write(resource_name)?;
        let ctx = caller.context(&resource.instance_name, resource.digest.function());
        let exists = self
            .state
            .store
            .find_missing(&ctx, &[resource.digest])
            .await?
            .is_empty();
        if exists {
            return Ok(QueryWriteStatusResponse {
                committed_size: write::already_stored(&resource),
                complete: true,
            });
        }
        // A compressed upload is never resumed at anything but 0.
        let committed_size = match resource.compression {
            Compression::Identity => self.state.uploads.status(&UploadKey::of(&resource)),
            Compression::Zstd => None,
        };
        Ok(QueryWriteStatusResponse {
            committed_size: committed_size.unwrap_or(0) as i64,
            complete: false,
        })
    }
}

/// Logs a refused request in one line, at WARN (ERROR for a server fault):
/// the client only sees the status, and an operator needs the resource and
/// the reason to tell a client bug from a server one.
fn refused(method: &str, resource_name: &str, error: Error) -> Status {
    let code = error.code();
    if code == tonic::Code::Internal {
        tracing::error!(
            method,
            resource = resource_name,
            ?code,
            "ByteStream request failed: {error}"
        );
    } else {
        tracing::warn!(
            method,
            resource = resource_name,
            ?code,
            "ByteStream request refused: {error}"
        );
    }
    // Not `Status::from`, which would log an internal error a second time.
    error.into_status()
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ByteStream for ByteStreamService {
    type ReadStream = ReadStream;

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadStream>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        match self.open_read(&caller, &req).await {
            Ok(stream) => Ok(Response::new(stream)),
            Err(e) => Err(refused("Read", &req.resource_name, e)),
        }
    }

    /// The upload runs in a task of its own. A client that cancels, or
    /// whose connection drops, makes the server drop this handler's future
    /// mid-chunk; the task instead sees the stream fail, flushes what it
    /// received and keeps the upload resumable.
    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let caller = Caller::from_request(&request);
        let mut stream = request.into_inner();
        let first = match stream.message().await {
            Ok(Some(first)) => first,
            Ok(None) => {
                let e = Error::invalid("resource_name", "the Write stream sent no message");
                return Err(refused("Write", "", e));
            }
            Err(status) => {
                return Err(refused(
                    "Write",
                    "",
                    from_stream_error(status, "WriteRequest"),
                ))
            }
        };
        let name = first.resource_name.clone();
        let task = tokio::spawn(write::run(self.state.clone(), caller, first, stream));
        let result = task
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("Write task failed: {e}"))));
        match result {
            Ok(committed_size) => Ok(Response::new(WriteResponse { committed_size })),
            Err(e) => Err(refused("Write", &name, e)),
        }
    }

    async fn query_write_status(
        &self,
        request: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        match self.write_status(&caller, &req.resource_name).await {
            Ok(status) => Ok(Response::new(status)),
            Err(e) => Err(refused("QueryWriteStatus", &req.resource_name, e)),
        }
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
