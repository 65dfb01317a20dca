//! Bytes that are not protobufs at all, sent on the real service paths.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Buf, BufMut};
use common::TestServer;
use corral_cas::Config;
use corral_proto::reapi;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

/// Sends and receives raw bytes as gRPC messages.
#[derive(Default)]
struct RawCodec;

struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// A length-delimited field 2 that claims more bytes than follow, then
/// a field with an invalid wire type.
const GARBAGE: [&[u8]; 3] = [&[0x12, 0x7f, 0x01], &[0x0f, 0xff, 0xff], &[0xff; 16]];

async fn unary(server: &TestServer, path: &'static str, body: &[u8]) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body.to_vec()),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn garbage_is_invalid_argument_naming_the_message() {
    let server = TestServer::start(Config::default()).await;
    let paths = [
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
        "/google.bytestream.ByteStream/QueryWriteStatus",
    ];
    for path in paths {
        for garbage in GARBAGE {
            let status = unary(&server, path, garbage).await;
            assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
            assert!(status.message().starts_with("request: "), "{status:?}");
            assert!(status.message().contains(path), "{status:?}");
        }
    }

    // Client-streamed Write with a garbage first message.
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .client_streaming(
            tonic::Request::new(futures::stream::iter(vec![GARBAGE[0].to_vec()])),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/google.bytestream.ByteStream/Write",
            ),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("WriteRequest"), "{status:?}");

    // Still serving.
    let caps = server
        .capabilities()
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap();
    assert!(caps.into_inner().cache_capabilities.is_some());
}
