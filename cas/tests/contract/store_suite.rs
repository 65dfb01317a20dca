//! What every blob store must do, as functions any test can run against a
//! store: `backend` for what a bare backend promises (it may trust that
//! data matches its digest), `stack` for a store as the factory builds it
//! (which must also refuse wrong data and store nothing of it).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use corral_cas::store::{collect, write_all};
use corral_cas::{BlobStore, Digest, DigestFunction, Error, RequestContext};

/// Deterministic bytes and their digests under both functions.
pub fn blob(seed: u32, len: usize) -> (Bytes, Digest, Digest) {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(31) ^ seed ^ (i >> 9)) as u8)
        .collect();
    let s = Digest::of_bytes(DigestFunction::Sha256, &data);
    let b = Digest::of_bytes(DigestFunction::Blake3, &data);
    (Bytes::from(data), s, b)
}

async fn read_all(
    store: &dyn BlobStore,
    ctx: &RequestContext,
    d: &Digest,
    offset: u64,
    limit: Option<u64>,
) -> Result<Bytes, Error> {
    collect(store.read(ctx, d, offset, limit).await?, 0).await
}

/// find_missing, get, put, read, write with correct data; the empty blob;
/// offsets and limits; concurrent writers of one blob; abandoned uploads.
pub async fn backend(store: Arc<dyn BlobStore>, ctx: &RequestContext, seed: u32) {
    let s = store.as_ref();
    let (data, sha, b3) = blob(seed, 300_000);
    for f in DigestFunction::ALL {
        let empty = Digest::of_bytes(f, b"");
        assert!(s.find_missing(ctx, &[empty]).await.unwrap().is_empty());
        assert!(s.get(ctx, &empty).await.unwrap().is_empty());
        assert!(read_all(s, ctx, &empty, 0, None).await.unwrap().is_empty());
        s.put(ctx, &empty, Bytes::new()).await.unwrap();
        write_all(s, ctx, &empty, Bytes::new()).await.unwrap();
    }
    let mut missing = s.find_missing(ctx, &[sha, b3]).await.unwrap();
    missing.sort();
    let mut both = vec![sha, b3];
    both.sort();
    assert_eq!(missing, both);
    assert!(matches!(s.get(ctx, &sha).await, Err(Error::NotFound(_))));
    let e = s.read(ctx, &sha, 0, None).await.err().unwrap();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    let e = s.read(ctx, &sha, 300_000, None).await.err().unwrap();
    assert!(
        matches!(e, Error::NotFound(_)),
        "zero-length read of a missing blob: {e}"
    );

    s.put(ctx, &sha, data.clone()).await.unwrap();
    s.put(ctx, &sha, data.clone()).await.unwrap();
    assert_eq!(s.find_missing(ctx, &[sha, b3]).await.unwrap(), vec![b3]);
    write_all(s, ctx, &b3, data.clone()).await.unwrap();
    assert!(s.find_missing(ctx, &[sha, b3]).await.unwrap().is_empty());
    assert_eq!(s.get(ctx, &b3).await.unwrap(), data);
    assert_eq!(s.get(ctx, &sha).await.unwrap(), data);

    ranged_reads(s, ctx, &sha, &data).await;
    odd_chunks_and_abandoned_uploads(s, ctx, seed).await;
    concurrent_writers(store.clone(), ctx, seed).await;
}

async fn ranged_reads(s: &dyn BlobStore, ctx: &RequestContext, d: &Digest, data: &Bytes) {
    let len = data.len() as u64;
    let cases = [
        (0, None, 0..data.len()),
        (1000, Some(5000), 1000..6000),
        (len - 1, None, data.len() - 1..data.len()),
        (len, None, data.len()..data.len()),
        (10, Some(0), 10..10),
        (len - 10, Some(1 << 40), data.len() - 10..data.len()),
    ];
    for (offset, limit, range) in cases {
        let got = read_all(s, ctx, d, offset, limit).await.unwrap();
        assert_eq!(got, data.slice(range), "offset {offset} limit {limit:?}");
    }
    let past = s.read(ctx, d, len + 1, None).await.err().unwrap();
    assert_eq!(past.code(), tonic::Code::OutOfRange);
    assert!(past.to_string().contains("read_offset"), "{past}");
}

async fn odd_chunks_and_abandoned_uploads(s: &dyn BlobStore, ctx: &RequestContext, seed: u32) {
    // A 3 MiB blob written in uneven chunks, read back whole.
    let (big, d, _) = blob(seed + 1, 3 << 20);
    let mut w = s.write(ctx, &d).await.unwrap();
    let mut rest = big.clone();
    let mut n = 1;
    while !rest.is_empty() {
        let take = rest.len().min(n * 7919);
        w.write(rest.split_to(take)).await.unwrap();
        n += 3;
    }
    assert_eq!(w.committed(), big.len() as u64);
    w.commit().await.unwrap();
    assert_eq!(read_all(s, ctx, &d, 0, None).await.unwrap(), big);

    // A writer dropped without commit leaves nothing behind.
    let (data, d, _) = blob(seed + 2, 10_000);
    let mut w = s.write(ctx, &d).await.unwrap();
    w.write(data).await.unwrap();
    drop(w);
    assert_eq!(s.find_missing(ctx, &[d]).await.unwrap(), vec![d]);
}

async fn concurrent_writers(store: Arc<dyn BlobStore>, ctx: &RequestContext, seed: u32) {
    let (data, d, _) = blob(seed + 3, 2_000_000);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, data, ctx) = (store.clone(), data.clone(), ctx.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.put(&ctx, &d, data).await
                } else {
                    write_all(store.as_ref(), &ctx, &d, data).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get(ctx, &d).await.unwrap(), data);
}

/// [`backend`], plus the refusals a storage stack owes its clients: wrong
/// hash, wrong size, over-long and short uploads are refused with the
/// right error, and nothing of them is stored.
pub async fn stack(store: Arc<dyn BlobStore>, ctx: &RequestContext, seed: u32) {
    backend(store.clone(), ctx, seed).await;
    let s = store.as_ref();
    let (data, sha, _) = blob(seed + 10, 1000);
    let (other, _, _) = blob(seed + 11, 1000);

    let wrong_size = Digest::new(DigestFunction::Sha256, *sha.hash(), 999);
    let e = s.put(ctx, &wrong_size, data.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.to_string().starts_with("data"), "{e}");
    let e = s.put(ctx, &sha, other.clone()).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(s.find_missing(ctx, &[sha]).await.unwrap(), vec![sha]);

    // Over-long, short and wrong uploads.
    let mut w = s.write(ctx, &sha).await.unwrap();
    w.write(data.slice(..600)).await.unwrap();
    let e = w.write(data.slice(..600)).await.unwrap_err();
    assert!(e.to_string().starts_with("data"), "{e}");
    assert_eq!(w.committed(), 600);
    let e = w.commit().await.unwrap_err();
    assert!(e.to_string().starts_with("finish_write"), "{e}");
    let mut w = s.write(ctx, &sha).await.unwrap();
    w.write(other.clone()).await.unwrap();
    let e = w.commit().await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(s.find_missing(ctx, &[sha]).await.unwrap(), vec![sha]);
    assert!(matches!(s.get(ctx, &sha).await, Err(Error::NotFound(_))));

    // The right bytes after all that are taken.
    write_all(s, ctx, &sha, data.clone()).await.unwrap();
    assert_eq!(s.get(ctx, &sha).await.unwrap(), data);
}
