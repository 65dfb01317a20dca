//! A remote CAS that lies: wrong or short bytes must never pass for the
//! blob, whether the stack over the gRPC store verifies the stream (reads
//! through a `VerifyingStore` that verifies reads, as the factory builds
//! for a remote backend) or the store it is copied into does (the bare
//! gRPC store's stream into a verifying `BlobWriter`, as the worker
//! fetches).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::collect;
use corral_cas::{
    BlobStore, Config, Digest, DigestFunction, DiskStore, GrpcStore, RequestContext, Storage,
    VerifyingStore,
};
use corral_proto::bytestream::byte_stream_server::{ByteStream, ByteStreamServer};
use corral_proto::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Answers every read with `payload`, whatever blob was asked for.
struct Liar {
    payload: Bytes,
}

#[tonic::async_trait]
impl ByteStream for Liar {
    type ReadStream = Pin<Box<dyn Stream<Item = Result<ReadResponse, Status>> + Send>>;

    async fn read(&self, _: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let chunks: Vec<Result<ReadResponse, Status>> = self
            .payload
            .chunks(1000)
            .map(|c| {
                Ok(ReadResponse {
                    data: Bytes::copy_from_slice(c),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn write(
        &self,
        _: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        Err(Status::unimplemented("a liar takes no uploads"))
    }

    async fn query_write_status(
        &self,
        _: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        Err(Status::unimplemented("a liar takes no uploads"))
    }
}

/// A server with real Capabilities (so the client connects) and `liar` as
/// its ByteStream.
async fn serve(liar: Liar) -> (String, tokio::task::JoinHandle<()>) {
    let services = corral_cas::service::Services::new(Config::default(), Storage::in_memory());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let capabilities = services.capabilities_server();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(capabilities)
            .add_service(ByteStreamServer::new(liar))
            .serve_with_incoming(corral_cas::service::incoming(listener))
            .await
            .unwrap();
    });
    (url, task)
}

fn blob(len: usize, salt: u8) -> Bytes {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

#[tokio::test]
async fn wrong_or_short_bytes_from_a_remote_never_become_the_blob() {
    // Large enough that reads go through ByteStream, not the batch calls.
    let size = 6 << 20;
    let real = blob(size, 0);
    let digest = Digest::of_bytes(DigestFunction::Sha256, &real);

    for (what, payload, refusal) in [
        (
            "other bytes of the right length",
            blob(size, 0x5a),
            "does not match",
        ),
        (
            "the blob cut short",
            real.slice(..size - 1),
            "after 6291455 of 6291456 bytes",
        ),
    ] {
        let (url, server) = serve(Liar { payload }).await;
        let remote = GrpcStore::connect(&url, "").await.unwrap();
        let ctx = RequestContext::internal("", DigestFunction::Sha256);

        // A verifying read fails on its last chunk.
        let verified = VerifyingStore::verifying_reads(Arc::new(remote.clone()));
        let stream = verified.read(&ctx, &digest, 0, None).await.unwrap();
        let e = collect(stream, size as u64).await.unwrap_err();
        assert!(e.to_string().contains(refusal), "{what}: {e}");

        // A copy into a local store: the writer's commit refuses it and the
        // store does not have the blob afterwards.
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskStore::open(dir.path().join("cas"), u64::MAX).unwrap();
        let local = VerifyingStore::new(Arc::new(disk));
        let copied = async {
            let mut stream = remote.read(&ctx, &digest, 0, None).await?;
            let mut writer = local.write(&ctx, &digest).await?;
            use futures::StreamExt;
            while let Some(chunk) = stream.next().await {
                writer.write(chunk?).await?;
            }
            writer.commit().await
        }
        .await;
        let e = copied.expect_err(what);
        assert!(e.to_string().contains(refusal), "{what}: {e}");
        assert_eq!(
            local.find_missing(&ctx, &[digest]).await.unwrap(),
            vec![digest],
            "{what}"
        );
        server.abort();
    }
}
