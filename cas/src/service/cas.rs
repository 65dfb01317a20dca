//! The ContentAddressableStorage service: FindMissingBlobs, the batch calls
//! and GetTree. Chunked-blob calls (SplitBlob, SpliceBlob, GetChunkMapping)
//! are not offered and Capabilities says so.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_server::ContentAddressableStorage;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{tree, State};
use crate::context::{Caller, RequestContext};
use crate::digest::{Digest, DigestFunction, DigestMap};
use crate::error::{Error, Result};
use crate::store::BlobStore;

/// Largest number of digests accepted in one FindMissingBlobs call; far
/// above what fits a message anyway, it bounds the work of one request.
const MAX_FIND_MISSING: usize = 1_000_000;

/// Blobs of one batch call stored or read at a time. Each is a blocking
/// file operation; starting all of a batch's hundreds at once put hundreds
/// of threads on two cores. With this bound BatchReadBlobs of 899 × 4 KiB
/// blobs is about a quarter faster and uploads are no slower (see
/// docs/benchmarks.md).
const BATCH_PARALLELISM: usize = 8;

pub struct CasService {
    state: Arc<State>,
}

impl CasService {
    pub(crate) fn new(state: Arc<State>) -> Self {
        CasService { state }
    }

    async fn update_one(
        &self,
        ctx: &RequestContext,
        index: usize,
        req: reapi::batch_update_blobs_request::Request,
    ) -> Result<()> {
        let field = format!("requests[{index}]");
        let digest = Digest::from_proto_field(ctx.digest_function(), req.digest.as_ref(), "digest")
            .map_err(|e| e.in_field(&field))?;
        let data =
            decode_batch_data(&digest, req.compressor, req.data).map_err(|e| e.in_field(&field))?;
        self.state
            .store
            .put(ctx, &digest, data)
            .await
            .map_err(|e| e.in_field(&format!("{field}.data")))
    }
}

/// Undoes the compressor of one BatchUpdateBlobs entry.
fn decode_batch_data(digest: &Digest, compressor: i32, data: Vec<u8>) -> Result<Bytes> {
    use reapi::compressor::Value;
    match Value::try_from(compressor) {
        Ok(Value::Identity) => Ok(Bytes::from(data)),
        Ok(Value::Zstd) => {
            let limit = usize::try_from(digest.size())
                .map_err(|_| Error::invalid("digest.size_bytes", "too large"))?;
            let out = zstd::bulk::decompress(&data, limit).map_err(|e| {
                Error::invalid(
                    "data",
                    format!("not a zstd frame of at most {limit} bytes: {e}"),
                )
            })?;
            Ok(Bytes::from(out))
        }
        _ => Err(Error::invalid(
            "compressor",
            format!("{compressor} is not supported (use IDENTITY or ZSTD)"),
        )),
    }
}

fn parse_all(
    function: DigestFunction,
    digests: &[reapi::Digest],
    field: &str,
) -> Result<Vec<Digest>> {
    digests
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::from_proto(function, d).map_err(|e| e.in_field(&format!("{field}[{i}]")))
        })
        .collect()
}

fn status_ok() -> corral_proto::rpc::Status {
    corral_proto::rpc::Status {
        code: tonic::Code::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ContentAddressableStorage for CasService {
    async fn find_missing_blobs(
        &self,
        request: Request<reapi::FindMissingBlobsRequest>,
    ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let ctx = caller.context(&req.instance_name, function);
        if req.blob_digests.len() > MAX_FIND_MISSING {
            return Err(Error::invalid(
                "blob_digests",
                format!(
                    "{} digests, at most {MAX_FIND_MISSING} per call",
                    req.blob_digests.len()
                ),
            )
            .into());
        }
        let digests = parse_all(function, &req.blob_digests, "blob_digests")?;
        let missing = self.state.store.find_missing(&ctx, &digests).await?;
        // Answer with the client's own digest messages (canonical, since
        // they parsed) rather than encoding hex again; stores answer in any
        // order, so match by value (a digest asked twice is answered twice).
        let mut counts: DigestMap<usize> = DigestMap::default();
        for d in missing {
            *counts.entry(d).or_default() += 1;
        }
        let mut parsed = digests.iter();
        let mut blob_digests = req.blob_digests;
        blob_digests.retain(|_| match parsed.next().and_then(|d| counts.get_mut(d)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        });
        Ok(Response::new(reapi::FindMissingBlobsResponse {
            missing_blob_digests: blob_digests,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<reapi::BatchUpdateBlobsRequest>,
    ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let ctx = caller.context(&req.instance_name, function);
        let total: u64 = req.requests.iter().map(|r| r.data.len() as u64).sum();
        let max = self.state.config.max_batch_total_size_bytes();
        if total > max {
            return Err(Error::invalid(
                "requests",
                format!("{total} bytes of data, more than max_batch_total_size_bytes ({max}); use ByteStream"),
            )
            .into());
        }
        let echoed: Vec<Option<reapi::Digest>> =
            req.requests.iter().map(|r| r.digest.clone()).collect();
        let results: Vec<Result<()>> = futures::stream::iter(
            req.requests
                .into_iter()
                .enumerate()
                .map(|(i, r)| self.update_one(&ctx, i, r)),
        )
        .buffered(BATCH_PARALLELISM)
        .collect()
        .await;
        let responses = echoed
            .into_iter()
            .zip(results)
            .map(
                |(digest, result)| reapi::batch_update_blobs_response::Response {
                    digest,
                    status: Some(match result {
                        Ok(()) => status_ok(),
                        Err(e) => {
                            tracing::debug!(error = %e, "BatchUpdateBlobs entry refused");
                            e.to_rpc_status()
                        }
                    }),
                },
            )
            .collect();
        Ok(Response::new(reapi::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<reapi::BatchReadBlobsRequest>,
    ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let ctx = caller.context(&req.instance_name, function);
        let digests = parse_all(function, &req.digests, "digests")?;
        let total: u64 = digests.iter().map(|d| d.size()).sum();
        let max = self.state.config.max_batch_total_size_bytes();
        if total > max {
            return Err(Error::invalid(
                "digests",
                format!("{total} bytes requested, more than max_batch_total_size_bytes ({max}); use ByteStream"),
            )
            .into());
        }
        let store = &self.state.store;
        let results: Vec<Result<Bytes>> = futures::stream::iter(digests.iter().copied())
            .map(|d| {
                let (store, ctx) = (store.clone(), ctx.clone());
                async move { store.get(&ctx, &d).await }
            })
            .buffered(BATCH_PARALLELISM)
            .collect()
            .await;
        let responses = digests
            .iter()
            .zip(results)
            .map(|(d, result)| match result {
                Ok(data) => reapi::batch_read_blobs_response::Response {
                    digest: Some(d.to_proto()),
                    data: data.to_vec(),
                    compressor: reapi::compressor::Value::Identity as i32,
                    status: Some(status_ok()),
                },
                Err(e) => reapi::batch_read_blobs_response::Response {
                    digest: Some(d.to_proto()),
                    data: Vec::new(),
                    compressor: reapi::compressor::Value::Identity as i32,
                    status: Some(e.to_rpc_status()),
                },
            })
            .collect();
        Ok(Response::new(reapi::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = BoxStream<reapi::GetTreeResponse>;

    async fn get_tree(
        &self,
        request: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let caller = Caller::from_request(&request);
        let req = request.into_inner();
        let function = DigestFunction::from_proto(req.digest_function)?;
        let ctx = caller.context(&req.instance_name, function);
        let root = Digest::from_proto_field(function, req.root_digest.as_ref(), "root_digest")?;
        let page_size = if req.page_size < 0 {
            return Err(
                Error::invalid("page_size", format!("{} is negative", req.page_size)).into(),
            );
        } else if req.page_size == 0 {
            self.state.config.get_tree_page_size()
        } else {
            (req.page_size as u32).min(self.state.config.get_tree_page_size())
        };
        let skip = tree::parse_page_token(&req.page_token)?;
        let stream = tree::pages(
            self.state.store.clone(),
            ctx,
            root,
            tree::PageLimits {
                directories: page_size as usize,
                bytes: self.state.config.max_message_bytes() / 2,
                response_bytes: self.state.config.max_message_bytes(),
            },
            skip,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn split_blob(
        &self,
        _request: Request<reapi::SplitBlobRequest>,
    ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
        Err(
            Error::Unimplemented("SplitBlob is not supported (split_blob_support is false)".into())
                .into(),
        )
    }

    type GetChunkMappingStream = BoxStream<reapi::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _request: Request<reapi::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Error::Unimplemented("GetChunkMapping is not supported".into()).into())
    }

    async fn register_chunk_mapping(
        &self,
        _request: Request<tonic::Streaming<reapi::RegisterChunkMappingRequest>>,
    ) -> Result<Response<reapi::RegisterChunkMappingResponse>, Status> {
        Err(Error::Unimplemented("RegisterChunkMapping is not supported".into()).into())
    }

    async fn splice_blob(
        &self,
        _request: Request<reapi::SpliceBlobRequest>,
    ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
        Err(Error::Unimplemented(
            "SpliceBlob is not supported (splice_blob_support is false)".into(),
        )
        .into())
    }
}
