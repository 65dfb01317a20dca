//! ByteStream through real tonic clients: reads, writes, resumption,
//! compression, and every way a write can be wrong.

mod common;

use common::bytestream::{chunks, read, write};
use common::{assert_status, bytes, ctx, TestServer};
use corral_cas::resource::{read_name, write_name, Compression};
use corral_cas::{BlobStore, Config, Digest, DigestFunction};
use corral_proto::bytestream::{QueryWriteStatusRequest, ReadRequest, WriteRequest};
use tonic::Code;

#[tokio::test]
async fn write_and_read_every_form() {
    let server = TestServer::start(Config::default()).await;
    let data = bytes(1, 5 << 20);
    for function in DigestFunction::ALL {
        let d = Digest::of_bytes(function, &data);
        for (i, instance) in ["", "main", "a/b/c"].iter().enumerate() {
            for compression in [Compression::Identity, Compression::Zstd] {
                let wire = match compression {
                    Compression::Identity => data.clone(),
                    Compression::Zstd => zstd::bulk::compress(&data, 1).unwrap(),
                };
                let name = write_name(
                    instance,
                    &format!("u{i}{compression:?}{function}"),
                    compression,
                    &d,
                );
                let name = format!("{name}/some/metadata");
                let response = write(&server, chunks(&name, &wire, 0, 16 << 10, true))
                    .await
                    .unwrap();
                if i == 0 && compression == Compression::Identity {
                    assert_eq!(response.committed_size, data.len() as i64);
                } else {
                    // Already stored: the server ends the upload at once.
                    let expect = if compression == Compression::Zstd {
                        -1
                    } else {
                        data.len() as i64
                    };
                    assert_eq!(response.committed_size, expect);
                }
                let back = read(&server, &read_name(instance, compression, &d), 0, 0)
                    .await
                    .unwrap();
                let back = match compression {
                    Compression::Identity => back,
                    Compression::Zstd => zstd::stream::decode_all(&back[..]).unwrap(),
                };
                assert!(back == data, "{instance} {compression:?} {function}");
            }
        }
        let name = read_name("x/y", Compression::Identity, &d);
        assert_eq!(
            read(&server, &name, 100, 1000).await.unwrap(),
            data[100..1100]
        );
        assert_eq!(
            read(&server, &name, (5 << 20) - 10, 0).await.unwrap(),
            data[(5 << 20) - 10..]
        );
        assert!(read(&server, &name, 5 << 20, 0).await.unwrap().is_empty());
        assert_status(
            read(&server, &name, (5 << 20) + 1, 0).await,
            Code::OutOfRange,
            "read_offset",
        );
        assert_status(
            read(&server, &name, -1, 0).await,
            Code::OutOfRange,
            "read_offset",
        );
        assert_status(
            read(&server, &name, 0, -1).await,
            Code::InvalidArgument,
            "read_limit",
        );
    }
    // A fresh zstd upload reports the compressed bytes it took.
    let other = bytes(2, 300_000);
    let d = Digest::of_bytes(DigestFunction::Sha256, &other);
    let z = zstd::bulk::compress(&other, 3).unwrap();
    let name = write_name("", "z", Compression::Zstd, &d);
    let response = write(&server, chunks(&name, &z, 0, 1000, true))
        .await
        .unwrap();
    assert_eq!(response.committed_size, z.len() as i64);
    assert_eq!(server.store.get(&ctx(), &d).await.unwrap(), other);
    let missing = read_name(
        "",
        Compression::Identity,
        &Digest::of_bytes(DigestFunction::Sha256, b"no"),
    );
    assert_status(
        read(&server, &missing, 0, 0).await,
        Code::NotFound,
        "not found",
    );
}

#[tokio::test]
async fn interrupted_write_resumes_after_query() {
    let server = TestServer::start(Config::default()).await;
    let data = bytes(3, 3 << 20);
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    let name = write_name("inst", "resume-1", Compression::Identity, &d);
    let query = || QueryWriteStatusRequest {
        resource_name: name.clone(),
    };
    let status = server
        .bytestream()
        .query_write_status(query())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.committed_size, status.complete), (0, false));

    // First stream ends without finish_write after 1 MiB + 5.
    let cut = (1 << 20) + 5;
    let r = write(&server, chunks(&name, &data[..cut], 0, 64 << 10, false)).await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    let status = server
        .bytestream()
        .query_write_status(query())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.committed_size, status.complete),
        (cut as i64, false)
    );
    assert!(!server
        .store
        .find_missing(&ctx(), &[d])
        .await
        .unwrap()
        .is_empty());

    // Resuming at the wrong offset is refused and changes nothing.
    let r = write(&server, chunks(&name, &data, cut - 1, 64 << 10, true)).await;
    assert_status(r, Code::InvalidArgument, "write_offset");
    let status = server
        .bytestream()
        .query_write_status(query())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.committed_size, cut as i64);

    let response = write(&server, chunks(&name, &data, cut, 64 << 10, true))
        .await
        .unwrap();
    assert_eq!(response.committed_size, data.len() as i64);
    let status = server
        .bytestream()
        .query_write_status(query())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.committed_size, status.complete),
        (data.len() as i64, true)
    );
    assert_eq!(server.store.get(&ctx(), &d).await.unwrap(), data);

    // Writing to the committed upload again ends at once: the blob is there.
    let r = write(&server, chunks(&name, &data, 0, 1 << 20, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
}

#[tokio::test]
async fn bad_writes_store_nothing_and_the_server_keeps_serving() {
    let server = TestServer::start(Config::default()).await;
    let data = bytes(4, 200_000);
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    let mut n = 0;
    let mut name = |d: &Digest, c: Compression| {
        n += 1;
        write_name("", &format!("bad{n}"), c, d)
    };

    // Wrong digest: same size, different bytes.
    let mut wrong = data.clone();
    wrong[1000] ^= 1;
    let r = write(
        &server,
        chunks(&name(&d, Compression::Identity), &wrong, 0, 50_000, true),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "does not match the digest");
    // Size mismatch: digest says fewer bytes than sent (over-long).
    let small = Digest::new(DigestFunction::Sha256, *d.hash(), 100_000);
    let r = write(
        &server,
        chunks(&name(&small, Compression::Identity), &data, 0, 30_000, true),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "data");
    // Truncated: finish_write before all bytes.
    let r = write(
        &server,
        chunks(
            &name(&d, Compression::Identity),
            &data[..150_000],
            0,
            30_000,
            true,
        ),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    // Data after finish_write.
    let mut reqs = chunks(&name(&d, Compression::Identity), &data, 0, 100_000, true);
    reqs.push(WriteRequest {
        write_offset: 200_000,
        data: vec![1].into(),
        ..Default::default()
    });
    let r = write(&server, reqs).await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    // Offsets that skip or repeat bytes.
    let mut reqs = chunks(&name(&d, Compression::Identity), &data, 0, 50_000, true);
    reqs[2].write_offset += 1;
    assert_status(
        write(&server, reqs).await,
        Code::InvalidArgument,
        "write_offset",
    );
    // A resource name that changes mid-stream.
    let mut reqs = chunks(&name(&d, Compression::Identity), &data, 0, 50_000, true);
    reqs[1].resource_name = write_name("", "other", Compression::Identity, &d);
    assert_status(
        write(&server, reqs).await,
        Code::InvalidArgument,
        "resource_name",
    );
    // zstd that is garbage, truncated, or expands past the digest.
    let r = write(
        &server,
        chunks(&name(&d, Compression::Zstd), b"garbage!", 0, 100, true),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "zstd");
    let z = zstd::bulk::compress(&data, 1).unwrap();
    let r = write(
        &server,
        chunks(
            &name(&d, Compression::Zstd),
            &z[..z.len() - 3],
            0,
            1000,
            true,
        ),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "data");
    let zeros = zstd::bulk::compress(&vec![0u8; 50 << 20], 1).unwrap();
    let r = write(
        &server,
        chunks(&name(&d, Compression::Zstd), &zeros, 0, 1 << 20, true),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "data");
    // Malformed resource names, an empty stream, a first offset past 0.
    for bad in [
        "",
        "blobs/x/1",
        "uploads/u/blobs/abc/1",
        "uploads/u/blobs/sha1/x/1",
    ] {
        let reqs = vec![WriteRequest {
            resource_name: bad.into(),
            finish_write: true,
            ..Default::default()
        }];
        assert_status(
            write(&server, reqs).await,
            Code::InvalidArgument,
            "resource_name",
        );
    }
    assert_status(
        write(&server, vec![]).await,
        Code::InvalidArgument,
        "resource_name",
    );
    let reqs = chunks(&name(&d, Compression::Identity), &data, 10, 50_000, true);
    assert_status(
        write(&server, reqs).await,
        Code::InvalidArgument,
        "write_offset",
    );
    let r = server
        .bytestream()
        .query_write_status(QueryWriteStatusRequest {
            resource_name: "nonsense".into(),
        })
        .await;
    assert_status(r, Code::InvalidArgument, "resource_name");
    assert_status(
        read(&server, "blobs/zz/1", 0, 0).await,
        Code::InvalidArgument,
        "resource_name",
    );

    // Nothing was stored under any of those names; the only upload left in
    // tmp is the one refused for a bad offset, which stays resumable. A good
    // upload still works.
    assert_eq!(server.store.len(), 0);
    let tmp = server.dir.path().join("cas/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 1);
    let r = write(
        &server,
        chunks(&name(&d, Compression::Identity), &data, 0, 50_000, true),
    )
    .await;
    assert_eq!(r.unwrap().committed_size, 200_000);
    assert_eq!(server.store.get(&ctx(), &d).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_clients() {
    let server = std::sync::Arc::new(TestServer::start(Config::default()).await);
    let shared = bytes(100, 2 << 20);
    let shared_d = Digest::of_bytes(DigestFunction::Blake3, &shared);
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let server = server.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                // Each client uploads its own blob and the shared one, then
                // reads both back over its own connection.
                let channel = tonic::transport::Channel::from_shared(server.url.clone())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client =
                    corral_proto::bytestream::byte_stream_client::ByteStreamClient::new(channel);
                let own = bytes(i, 300_000 + i as usize);
                let own_d = Digest::of_bytes(DigestFunction::Blake3, &own);
                for (d, data) in [(own_d, &own), (shared_d, &shared)] {
                    let name = write_name(
                        "c",
                        &format!("client{i}-{}", d.hash_hex()),
                        Compression::Identity,
                        &d,
                    );
                    let reqs = chunks(&name, data, 0, 64 << 10, true);
                    client.write(futures::stream::iter(reqs)).await.unwrap();
                    let mut stream = client
                        .read(ReadRequest {
                            resource_name: read_name("c", Compression::Identity, &d),
                            read_offset: 0,
                            read_limit: 0,
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let mut back = Vec::new();
                    while let Some(m) = stream.message().await.unwrap() {
                        back.extend(m.data);
                    }
                    assert!(&back == data);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.store.len(), 33);
}
