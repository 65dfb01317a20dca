//! The gRPC client store against a real server: small blobs through the
//! batch calls, large ones through ByteStream, the instance name of each
//! call's context (or a fixed one), and FindMissingBlobs split into calls.
//! The shared contract runs on it in tests/contract.

mod common;

use bytes::Bytes;
use common::{bytes, TestServer};
use corral_cas::store::{collect, write_all};
use corral_cas::{
    BlobStore, Config, Digest, DigestFunction, Error, GrpcStore, RequestContext, VerifyingStore,
};

#[tokio::test]
async fn remote_store_round_trips_small_and_large_blobs() {
    let config = Config {
        max_batch_total_size_bytes: Some(256 << 10),
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let remote = GrpcStore::connect(&server.url, "some/instance")
        .await
        .unwrap();
    let stack = VerifyingStore::verifying_reads(std::sync::Arc::new(remote.clone()));
    for function in DigestFunction::ALL {
        let ctx = RequestContext::internal("some/instance", function);
        for len in [0usize, 10, 100_000, 3 << 20] {
            let data = Bytes::from(bytes(len as u64, len));
            let d = Digest::of_bytes(function, &data);
            if len > 0 {
                assert_eq!(stack.find_missing(&ctx, &[d]).await.unwrap(), vec![d]);
                assert!(matches!(stack.get(&ctx, &d).await, Err(Error::NotFound(_))));
            }
            stack.put(&ctx, &d, data.clone()).await.unwrap();
            assert!(stack.find_missing(&ctx, &[d]).await.unwrap().is_empty());
            assert_eq!(stack.get(&ctx, &d).await.unwrap(), data);
            assert_eq!(server.store.get(&ctx, &d).await.unwrap(), data);
            // The client shorthands use the instance given at connect.
            assert_eq!(remote.get(&d).await.unwrap(), data);
            if len > 10 {
                let part = collect(stack.read(&ctx, &d, 5, Some(7)).await.unwrap(), 7)
                    .await
                    .unwrap();
                assert_eq!(part, data.slice(5..12));
            }
        }
        // Streaming write of a blob that is then written again (the server
        // ends the second upload early).
        let data = Bytes::from(bytes(77, 2 << 20));
        let d = Digest::of_bytes(function, &data);
        write_all(&stack, &ctx, &d, data.clone()).await.unwrap();
        write_all(&stack, &ctx, &d, data.clone()).await.unwrap();
        assert_eq!(server.store.get(&ctx, &d).await.unwrap(), data);
        // A lie is refused by the verifying layer before anything reaches
        // the server, and by the server when sent bare.
        let lie = Digest::new(function, *d.hash(), 100);
        assert!(stack.put(&ctx, &lie, data.slice(..100)).await.is_err());
        let e = remote.put(&lie, data.slice(..100)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let mut w = stack.write(&ctx, &lie).await.unwrap();
        w.write(data.slice(..100)).await.unwrap();
        assert!(matches!(
            w.commit().await,
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(
            server.store.find_missing(&ctx, &[lie]).await.unwrap(),
            vec![lie]
        );
    }
    // Many digests in one find_missing: split into several calls.
    let ctx = RequestContext::internal("some/instance", DigestFunction::Sha256);
    let many: Vec<Digest> = (0..25_000u32)
        .map(|i| Digest::of_bytes(DigestFunction::Sha256, &i.to_le_bytes()))
        .collect();
    assert_eq!(
        remote.find_missing(&ctx, &many).await.unwrap().len(),
        25_000
    );
}
