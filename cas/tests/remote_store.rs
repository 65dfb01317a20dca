//! The gRPC client store against a real server: small blobs through the
//! batch calls, large ones through ByteStream, the same refusals as local
//! stores.

mod common;

use bytes::Bytes;
use common::{bytes, TestServer};
use corral_cas::store::{collect, write_all};
use corral_cas::{BlobStore, Config, Digest, DigestFunction, Error, GrpcStore};

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
    for function in DigestFunction::ALL {
        for len in [0usize, 10, 100_000, 3 << 20] {
            let data = Bytes::from(bytes(len as u64, len));
            let d = Digest::of_bytes(function, &data);
            if len > 0 {
                assert_eq!(remote.find_missing(&[d]).await.unwrap(), vec![d]);
                assert!(matches!(remote.get(&d).await, Err(Error::NotFound(_))));
            }
            remote.put(&d, data.clone()).await.unwrap();
            assert!(remote.find_missing(&[d]).await.unwrap().is_empty());
            assert_eq!(remote.get(&d).await.unwrap(), data);
            assert_eq!(server.store.get(&d).await.unwrap(), data);
            if len > 10 {
                let part = collect(remote.read(&d, 5, Some(7)).await.unwrap(), 7)
                    .await
                    .unwrap();
                assert_eq!(part, data.slice(5..12));
            }
        }
        // Streaming write of a blob that is then written again (the server
        // ends the second upload early).
        let data = Bytes::from(bytes(77, 2 << 20));
        let d = Digest::of_bytes(function, &data);
        write_all(&remote, &d, data.clone()).await.unwrap();
        write_all(&remote, &d, data.clone()).await.unwrap();
        assert_eq!(server.store.get(&d).await.unwrap(), data);
        // A lie is refused before anything reaches the server.
        let lie = Digest::new(function, *d.hash(), 100);
        assert!(remote.put(&lie, data.slice(..100)).await.is_err());
        let mut w = remote.write(&lie).await.unwrap();
        w.write(data.slice(..100)).await.unwrap();
        assert!(matches!(
            w.commit().await,
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(server.store.find_missing(&[lie]).await.unwrap(), vec![lie]);
    }
    // Many digests in one find_missing: split into several calls.
    let many: Vec<Digest> = (0..25_000u32)
        .map(|i| Digest::of_bytes(DigestFunction::Sha256, &i.to_le_bytes()))
        .collect();
    assert_eq!(remote.find_missing(&many).await.unwrap().len(), 25_000);
}
