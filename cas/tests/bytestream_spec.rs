//! ByteStream against what clients read in REAPI: one upload id reused for
//! many blobs (buildbox-casd does this), resumption, compressed-blobs, the
//! empty blob, read offsets and limits, and the bounds on open uploads.
//! Every answer's code is checked.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::bytestream::{chunks, query, read, write};
use common::{assert_status, bytes, TestServer};
use corral_cas::resource::{read_name, write_name, Compression};
use corral_cas::{Config, Digest, DigestFunction};
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::bytestream::{WriteRequest, WriteResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

const MIB: usize = 1 << 20;
/// The one upload id of a casd-like client.
const UUID: &str = "5b9e7c3e-0d4a-4f52-9c1e-3a7d2f0b6c11";

fn sha(data: &[u8]) -> Digest {
    Digest::of_bytes(DigestFunction::Sha256, data)
}

fn plain(uuid: &str, data: &[u8]) -> String {
    write_name("bst", uuid, Compression::Identity, &sha(data))
}

fn zstd_name(uuid: &str, data: &[u8]) -> String {
    write_name("bst", uuid, Compression::Zstd, &sha(data))
}

/// Data that zstd shrinks, unlike [`bytes`].
fn compressible(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) % 251) as u8).collect()
}

/// A Write call fed message by message, so a test can hold it open.
fn open_write(
    mut client: ByteStreamClient<Channel>,
) -> (
    mpsc::Sender<WriteRequest>,
    JoinHandle<Result<WriteResponse, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(64);
    let call = tokio::spawn(async move {
        client
            .write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    (tx, call)
}

/// A client whose one connection goes through a TCP relay that the test
/// can cut, as a lost network would: aborting the returned task drops both
/// sockets.
async fn cuttable_client<S>(server: &TestServer<S>) -> (ByteStreamClient<Channel>, JoinHandle<()>) {
    let target = server.url.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let relay = tokio::spawn(async move {
        let (mut client_side, _) = listener.accept().await.unwrap();
        let mut server_side = tokio::net::TcpStream::connect(target).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client_side, &mut server_side).await;
    });
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    (ByteStreamClient::new(channel), relay)
}

async fn send_all(tx: &mpsc::Sender<WriteRequest>, requests: Vec<WriteRequest>) {
    for r in requests {
        tx.send(r).await.unwrap();
    }
}

/// Waits until QueryWriteStatus reports `size` bytes for `name`: the server
/// has taken what was sent.
async fn wait_for<S>(server: &TestServer<S>, name: &str, size: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while query(server, name).await.unwrap() != (size as i64, false) {
        assert!(Instant::now() < deadline, "{name} never reached {size}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn assert_stored<S>(server: &TestServer<S>, data: &[u8]) {
    let back = read(
        server,
        &read_name("bst", Compression::Identity, &sha(data)),
        0,
        0,
    )
    .await
    .unwrap();
    assert!(
        back == data,
        "blob of {} bytes reads back wrong",
        data.len()
    );
    assert_eq!(
        query(server, &plain("any", data)).await.unwrap(),
        (data.len() as i64, true)
    );
}

#[tokio::test]
async fn one_uuid_reused_one_blob_after_another() {
    let server = TestServer::start(Config::default()).await;
    let blobs = [
        bytes(10, 5 * MIB),
        bytes(11, 6 * MIB + 1),
        bytes(12, 5 * MIB + 777),
        bytes(13, 1000),
    ];
    for data in &blobs {
        let r = write(&server, chunks(&plain(UUID, data), data, 0, MIB, true)).await;
        assert_eq!(r.unwrap().committed_size, data.len() as i64);
    }
    for data in &blobs {
        assert_stored(&server, data).await;
        assert_eq!(
            query(&server, &plain(UUID, data)).await.unwrap(),
            (data.len() as i64, true)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_uuid_reused_by_two_streams_at_once() {
    let server = TestServer::start(Config::default()).await;
    let (a, b) = (bytes(20, 5 * MIB), bytes(21, 5 * MIB + 3));
    let (name_a, name_b) = (plain(UUID, &a), plain(UUID, &b));
    let (mut reqs_a, mut reqs_b) = (
        chunks(&name_a, &a, 0, MIB, true),
        chunks(&name_b, &b, 0, MIB, true),
    );
    let (tx_a, call_a) = open_write(server.bytestream());
    let (tx_b, call_b) = open_write(server.bytestream());
    let (rest_a, rest_b) = (reqs_a.split_off(2), reqs_b.split_off(2));
    send_all(&tx_a, reqs_a).await;
    send_all(&tx_b, reqs_b).await;
    // Both uploads are open at once, each with 2 MiB taken.
    wait_for(&server, &name_a, 2 * MIB).await;
    wait_for(&server, &name_b, 2 * MIB).await;
    // A third stream on the same id *and* blob as a running one, from the
    // start (two of buildbox-casd's jobs uploading one input), writes its
    // own copy and succeeds; resuming the running one mid-way is refused.
    let r = write(&server, chunks(&name_a, &a, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, a.len() as i64);
    let r = write(&server, chunks(&name_b, &b, 2 * MIB, MIB, true)).await;
    assert_status(r, Code::FailedPrecondition, "another stream");
    send_all(&tx_a, rest_a).await;
    send_all(&tx_b, rest_b).await;
    drop((tx_a, tx_b));
    assert_eq!(
        call_a.await.unwrap().unwrap().committed_size,
        a.len() as i64
    );
    assert_eq!(
        call_b.await.unwrap().unwrap().committed_size,
        b.len() as i64
    );
    assert_stored(&server, &a).await;
    assert_stored(&server, &b).await;
}

#[tokio::test]
async fn a_failed_upload_does_not_block_its_uuid() {
    let server = TestServer::start(Config::default()).await;
    // Wrong bytes: refused at finish_write; the next blob on the id works,
    // and so does the first one sent right.
    let good = bytes(30, 5 * MIB);
    let mut bad = good.clone();
    bad[4 * MIB] ^= 1;
    let r = write(&server, chunks(&plain(UUID, &good), &bad, 0, MIB, true)).await;
    assert_status(r, Code::InvalidArgument, "does not match the digest");
    let other = bytes(31, 5 * MIB + 5);
    let r = write(&server, chunks(&plain(UUID, &other), &other, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, other.len() as i64);
    let r = write(&server, chunks(&plain(UUID, &good), &good, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, good.len() as i64);

    // A stream that ends before finish_write keeps its bytes; another blob
    // on the id goes through meanwhile; the first is resumed where
    // QueryWriteStatus says.
    let cut = bytes(32, 6 * MIB);
    let kept = 3 * MIB + 5;
    let r = write(
        &server,
        chunks(&plain(UUID, &cut), &cut[..kept], 0, MIB, false),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    let next = bytes(33, 5 * MIB);
    let r = write(&server, chunks(&plain(UUID, &next), &next, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, next.len() as i64);
    let (offset, complete) = query(&server, &plain(UUID, &cut)).await.unwrap();
    assert_eq!((offset, complete), (kept as i64, false));
    let reqs = chunks(&plain(UUID, &cut), &cut, offset as usize, MIB, true);
    assert_eq!(
        write(&server, reqs).await.unwrap().committed_size,
        cut.len() as i64
    );
    for data in [&good, &other, &next, &cut] {
        assert_stored(&server, data).await;
    }
}

/// Resumes `data` at `kept` once the server has noticed that the stream
/// that held it is gone (until then the upload is still in use), checking
/// on the way that QueryWriteStatus keeps reporting `kept`.
async fn resume_when_released<S>(server: &TestServer<S>, data: &[u8], kept: usize) {
    let name = plain(UUID, data);
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        assert_eq!(query(server, &name).await.unwrap(), (kept as i64, false));
        match write(server, chunks(&name, data, kept, MIB, true)).await {
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(response.committed_size, data.len() as i64);
    assert_stored(server, data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_cut_streams_keep_their_bytes_for_resumption() {
    let server = TestServer::start(Config::default()).await;
    // The client drops the call mid-upload, its request stream still open
    // (RST_STREAM).
    let cancelled = bytes(40, 6 * MIB);
    let name = plain(UUID, &cancelled);
    let (tx, call) = open_write(server.bytestream());
    send_all(&tx, chunks(&name, &cancelled[..3 * MIB], 0, MIB, false)).await;
    wait_for(&server, &name, 3 * MIB).await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // The connection dies mid-upload, without the stream being closed.
    let cut = bytes(41, 6 * MIB);
    let name = plain(UUID, &cut);
    let (client, relay) = cuttable_client(&server).await;
    let (tx_cut, call) = open_write(client);
    send_all(&tx_cut, chunks(&name, &cut[..2 * MIB], 0, MIB, false)).await;
    wait_for(&server, &name, 2 * MIB).await;
    relay.abort();
    assert!(call.await.unwrap().is_err());

    // Another blob on the same id meanwhile, then both are resumed.
    let other = bytes(42, 5 * MIB);
    let r = write(&server, chunks(&plain(UUID, &other), &other, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, other.len() as i64);
    resume_when_released(&server, &cancelled, 3 * MIB).await;
    resume_when_released(&server, &cut, 2 * MIB).await;
    drop((tx, tx_cut));
}

#[tokio::test]
async fn writing_a_committed_blob_again_ends_early() {
    let server = TestServer::start(Config::default()).await;
    let data = compressible(5 * MIB);
    let name = plain(UUID, &data);
    let r = write(&server, chunks(&name, &data, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
    // Same id, same blob: success with the full size, whether the client
    // sends everything or just a first chunk.
    let r = write(&server, chunks(&name, &data, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
    let r = write(&server, chunks(&name, &data[..MIB], 0, MIB, false)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
    // Compressed: -1, as REAPI asks.
    let z = zstd::bulk::compress(&data, 3).unwrap();
    let r = write(&server, chunks(&zstd_name(UUID, &data), &z, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, -1);
}

#[tokio::test]
async fn query_write_status_answers_per_blob_on_a_reused_uuid() {
    let server = TestServer::start(Config::default()).await;
    let (a, b, c, d) = (
        bytes(50, 5 * MIB),
        bytes(51, 5 * MIB),
        bytes(52, 5 * MIB),
        bytes(53, 5 * MIB),
    );
    let (cut_a, cut_b) = (MIB + 3, 2 * MIB + 7);
    for (data, cut) in [(&a, cut_a), (&b, cut_b)] {
        let r = write(
            &server,
            chunks(&plain(UUID, data), &data[..cut], 0, MIB, false),
        )
        .await;
        assert_status(r, Code::InvalidArgument, "finish_write");
    }
    write(&server, chunks(&plain(UUID, &c), &c, 0, MIB, true))
        .await
        .unwrap();
    let status = |data| {
        let name = plain(UUID, data);
        let server = &server;
        async move { query(server, &name).await.unwrap() }
    };
    assert_eq!(status(&a).await, (cut_a as i64, false));
    assert_eq!(status(&b).await, (cut_b as i64, false));
    assert_eq!(status(&c).await, (c.len() as i64, true));
    assert_eq!(status(&d).await, (0, false));
    // Another id for a blob kept under UUID has its own (empty) upload.
    assert_eq!(
        query(&server, &plain("other", &a)).await.unwrap(),
        (0, false)
    );
    // Resuming one at the other's offset is refused and changes nothing.
    let r = write(&server, chunks(&plain(UUID, &a), &a, cut_b, MIB, true)).await;
    assert_status(r, Code::InvalidArgument, "write_offset");
    for (data, cut) in [(&b, cut_b), (&a, cut_a)] {
        let r = write(&server, chunks(&plain(UUID, data), data, cut, MIB, true)).await;
        assert_eq!(r.unwrap().committed_size, data.len() as i64);
        assert_eq!(status(data).await, (data.len() as i64, true));
    }
}

#[tokio::test]
async fn a_client_that_starts_over_at_zero_is_not_refused() {
    // Clients that retry without QueryWriteStatus resend from the start.
    let server = TestServer::start(Config::default()).await;
    let data = bytes(55, 5 * MIB);
    let name = plain(UUID, &data);
    let r = write(&server, chunks(&name, &data[..2 * MIB], 0, MIB, false)).await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    let r = write(&server, chunks(&name, &data, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
    assert_stored(&server, &data).await;
}

#[tokio::test]
async fn compressed_blobs_upload_read_and_committed_size() {
    let server = TestServer::start(Config::default()).await;
    let data = compressible(5 * MIB + 11);
    let d = sha(&data);
    let z = zstd::bulk::compress(&data, 3).unwrap();
    assert!(z.len() < data.len() / 4);
    let name = zstd_name(UUID, &data);
    // A fresh upload reports the compressed bytes it took (what Bazel
    // checks); afterwards the blob is complete, -1 compressed.
    let r = write(&server, chunks(&name, &z, 0, 64 << 10, true)).await;
    assert_eq!(r.unwrap().committed_size, z.len() as i64);
    assert_eq!(query(&server, &name).await.unwrap(), (-1, true));
    assert_eq!(
        query(&server, &plain(UUID, &data)).await.unwrap(),
        (data.len() as i64, true)
    );
    let r = write(&server, chunks(&plain(UUID, &data), &data, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);

    // Reads: read_offset counts uncompressed bytes; read_limit must be 0.
    let zread = read_name("bst", Compression::Zstd, &d);
    let back = read(&server, &zread, 0, 0).await.unwrap();
    assert!(zstd::stream::decode_all(&back[..]).unwrap() == data);
    let back = read(&server, &zread, 1000, 0).await.unwrap();
    assert!(zstd::stream::decode_all(&back[..]).unwrap() == data[1000..]);
    let back = read(&server, &zread, data.len() as i64, 0).await.unwrap();
    assert!(zstd::stream::decode_all(&back[..]).unwrap().is_empty());
    assert_status(
        read(&server, &zread, 0, 10).await,
        Code::InvalidArgument,
        "read_limit",
    );
    assert_status(
        read(&server, &zread, data.len() as i64 + 1, 0).await,
        Code::OutOfRange,
        "read_offset",
    );

    // An interrupted compressed upload is not resumable (REAPI and Bazel
    // count its offsets differently): it is dropped, QueryWriteStatus says
    // 0, a resume elsewhere is refused, and starting over works.
    let other = compressible(3 * MIB + 1);
    other_upload_restarts(&server, &other).await;
}

async fn other_upload_restarts<S>(server: &TestServer<S>, data: &[u8]) {
    let z = zstd::bulk::compress(data, 1).unwrap();
    let name = zstd_name(UUID, data);
    let half = z.len() / 2;
    let r = write(server, chunks(&name, &z[..half], 0, 4096, false)).await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    assert_eq!(query(server, &name).await.unwrap(), (0, false));
    let r = write(server, chunks(&name, &z, half, 4096, true)).await;
    assert_status(r, Code::InvalidArgument, "write_offset");
    let r = write(server, chunks(&name, &z, 0, 4096, true)).await;
    assert_eq!(r.unwrap().committed_size, z.len() as i64);
    assert_stored(server, data).await;
}

#[tokio::test]
async fn the_empty_blob_needs_no_upload_and_accepts_one() {
    let server = TestServer::start(Config::default()).await;
    let empty = sha(b"");
    // Nothing was uploaded, and yet it is there.
    let r = read(
        &server,
        &read_name("bst", Compression::Identity, &empty),
        0,
        0,
    )
    .await;
    assert!(r.unwrap().is_empty());
    let z = read(&server, &read_name("bst", Compression::Zstd, &empty), 0, 0).await;
    assert!(zstd::stream::decode_all(&z.unwrap()[..])
        .unwrap()
        .is_empty());
    assert_eq!(query(&server, &plain(UUID, b"")).await.unwrap(), (0, true));
    // A Write of size 0: one message, finish_write, no data.
    let only = |name: String| {
        vec![WriteRequest {
            resource_name: name,
            write_offset: 0,
            finish_write: true,
            data: Default::default(),
        }]
    };
    let r = write(&server, only(plain(UUID, b""))).await;
    assert_eq!(r.unwrap().committed_size, 0);
    let r = write(&server, only(zstd_name(UUID, b""))).await;
    assert_eq!(r.unwrap().committed_size, -1);
}

#[tokio::test]
async fn read_offsets_and_limits() {
    let server = TestServer::start(Config::default()).await;
    let data = bytes(70, 3 * MIB + 5);
    let r = write(&server, chunks(&plain(UUID, &data), &data, 0, MIB, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
    let name = read_name("bst", Compression::Identity, &sha(&data));
    let size = data.len() as i64;
    // read_limit 0 means no limit.
    assert!(read(&server, &name, 0, 0).await.unwrap() == data);
    assert!(read(&server, &name, 7, 0).await.unwrap() == data[7..]);
    assert!(read(&server, &name, 7, 100).await.unwrap() == data[7..107]);
    assert!(read(&server, &name, size - 3, 100).await.unwrap() == data[data.len() - 3..]);
    // At the end: an empty stream, not an error. Past it: OUT_OF_RANGE.
    assert!(read(&server, &name, size, 0).await.unwrap().is_empty());
    assert!(read(&server, &name, size, 10).await.unwrap().is_empty());
    assert_status(
        read(&server, &name, size + 1, 0).await,
        Code::OutOfRange,
        "read_offset",
    );
    // A missing blob is NOT_FOUND even for a zero-length read.
    let missing = read_name("bst", Compression::Identity, &sha(b"missing"));
    assert_status(
        read(&server, &missing, 7, 0).await,
        Code::NotFound,
        "not found",
    );
}

/// Runs on one thread because it pauses tokio's clock: the server's resume
/// window (the default, 600 s) then passes in an instant.
#[tokio::test]
async fn abandoned_uploads_are_bounded_and_expire() {
    let config = Config::default();
    let (limit, window) = (
        config.max_open_uploads() as usize,
        Duration::from_secs(config.upload_resume_secs()),
    );
    let server = TestServer::start_in_memory(config).await;
    let data = bytes(80, 1000);
    let abandoned = |i: usize| plain(&format!("abandoned-{i}"), &data);
    let mut results = futures::stream::iter(0..limit)
        .map(|i| write(&server, chunks(&abandoned(i), &data[..10], 0, 10, false)))
        .buffer_unordered(64);
    while let Some(r) = results.next().await {
        assert_status(r, Code::InvalidArgument, "finish_write");
    }
    drop(results);

    // Past the count bound a new upload is refused; one already open may
    // still go on.
    let fresh = bytes(81, 1000);
    let r = write(&server, chunks(&plain("new", &fresh), &fresh, 0, 500, true)).await;
    assert_status(r, Code::ResourceExhausted, "max_open_uploads");
    let r = write(&server, chunks(&abandoned(0), &data[..20], 10, 10, false)).await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    assert_eq!(query(&server, &abandoned(0)).await.unwrap(), (20, false));
    assert_eq!(query(&server, &abandoned(9)).await.unwrap(), (10, false));

    // After the resume window they are gone and new uploads succeed.
    tokio::time::pause();
    tokio::time::advance(window + Duration::from_secs(1)).await;
    let r = write(&server, chunks(&plain("new", &fresh), &fresh, 0, 500, true)).await;
    assert_eq!(r.unwrap().committed_size, fresh.len() as i64);
    assert_eq!(query(&server, &abandoned(9)).await.unwrap(), (0, false));
    let r = write(&server, chunks(&abandoned(9), &data, 10, 500, true)).await;
    assert_status(r, Code::InvalidArgument, "write_offset");
    let more = futures::stream::iter(0..100)
        .map(|i| {
            write(
                &server,
                chunks(&plain(&format!("later-{i}"), &data), &data, 0, 10, false),
            )
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for r in more {
        assert_status(r, Code::InvalidArgument, "finish_write");
    }
    let r = write(&server, chunks(&abandoned(9), &data, 0, 500, true)).await;
    assert_eq!(r.unwrap().committed_size, data.len() as i64);
}

#[tokio::test]
async fn bytes_held_by_open_uploads_are_bounded() {
    let config = Config {
        max_open_upload_bytes: Some(4 * MIB as u64),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let big = bytes(90, 8 * MIB);
    let r = write(
        &server,
        chunks(&plain(UUID, &big), &big[..5 * MIB], 0, MIB, false),
    )
    .await;
    assert_status(r, Code::InvalidArgument, "finish_write");
    let small = bytes(91, 1000);
    let r = write(&server, chunks(&plain(UUID, &small), &small, 0, 500, true)).await;
    assert_status(r, Code::ResourceExhausted, "max_open_upload_bytes");
    // Finishing the open upload frees its bytes.
    let r = write(
        &server,
        chunks(&plain(UUID, &big), &big, 5 * MIB, MIB, true),
    )
    .await;
    assert_eq!(r.unwrap().committed_size, big.len() as i64);
    let r = write(&server, chunks(&plain(UUID, &small), &small, 0, 500, true)).await;
    assert_eq!(r.unwrap().committed_size, small.len() as i64);
}
