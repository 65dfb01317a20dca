//! Downloads on a FetchBlob miss, from a real HTTP origin on loopback:
//! only what the policy allows, once, verified against `checksum.sri`,
//! within size and time limits, with every redirect checked.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::http::{Origin, Route};
use common::{assert_status, q, sri, AssetServer};
use corral_asset::clock::to_timestamp;
use corral_asset::proto::{FetchBlobRequest, Qualifier};
use corral_asset::{AssetConfig, Clock, DownloadConfig};
use corral_cas::{Digest, DigestFunction};
use tonic::Code;

fn allowing(hosts: &[String]) -> AssetConfig {
    AssetConfig {
        download: DownloadConfig {
            allowed_hosts: hosts.to_vec(),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn fetch<S: AsRef<str>>(uris: &[S], qualifiers: Vec<Qualifier>) -> FetchBlobRequest {
    FetchBlobRequest {
        uris: uris.iter().map(|u| u.as_ref().to_string()).collect(),
        qualifiers,
        ..Default::default()
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn a_miss_is_downloaded_once_verified_and_served_from_the_cas_after() {
    let origin = Origin::start("127.0.0.1").await;
    let data = content(3 << 20);
    origin.route("/dist/tool.tar.gz", Route::Body(data.clone()));
    let server = AssetServer::start(allowing(&[origin.addr.to_string()])).await;
    let url = origin.url("/dist/tool.tar.gz");
    for (i, algorithm) in ["sha256", "sha384", "sha512"].iter().enumerate() {
        let checksum = vec![q("checksum.sri", &sri(algorithm, &data))];
        let r = server
            .fetch()
            .fetch_blob(fetch(&[&url], checksum.clone()))
            .await
            .unwrap()
            .into_inner();
        let expected = Digest::of_bytes(DigestFunction::Sha256, &data).to_proto();
        assert_eq!(r.blob_digest.as_ref(), Some(&expected));
        assert_eq!(r.uri, url);
        assert_eq!(r.qualifiers, checksum);
        assert_eq!(
            server.read(&expected).await,
            data,
            "the CAS holds the bytes"
        );
        assert_eq!(
            origin.hits("/dist/tool.tar.gz"),
            i + 1,
            "one download per checksum"
        );
        // Asked again: from the index, the origin is not asked.
        server
            .fetch()
            .fetch_blob(fetch(&[&url], checksum))
            .await
            .unwrap();
        assert_eq!(origin.hits("/dist/tool.tar.gz"), i + 1);
    }
    // BLAKE3 digests on request.
    let r = server
        .fetch()
        .fetch_blob(FetchBlobRequest {
            digest_function: DigestFunction::Blake3.to_proto(),
            ..fetch(&[&url], vec![])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.blob_digest,
        Some(Digest::of_bytes(DigestFunction::Blake3, &data).to_proto())
    );
    assert_eq!(r.digest_function, DigestFunction::Blake3.to_proto());
    // With the origin gone, the index and CAS still answer.
    drop(origin);
    let r = server
        .fetch()
        .fetch_blob(fetch(
            &[&url],
            vec![q("checksum.sri", &sri("sha256", &data))],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.blob_digest.is_some());
}

#[tokio::test]
async fn by_default_nothing_is_downloaded() {
    let origin = Origin::start("127.0.0.1").await;
    origin.route("/f", Route::Body(b"data".to_vec()));
    let server = AssetServer::start(AssetConfig::default()).await;
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&[origin.url("/f")], vec![]))
            .await,
        Code::NotFound,
        &["allows no downloads"],
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn a_host_the_policy_does_not_allow_is_refused() {
    let origin = Origin::start("127.0.0.1").await;
    origin.route("/f", Route::Body(b"data".to_vec()));
    // Another port of the same address is not allowed.
    let server = AssetServer::start(allowing(&["127.0.0.1:1".to_string()])).await;
    let url = origin.url("/f");
    assert_status(
        server.fetch().fetch_blob(fetch(&[&url], vec![])).await,
        Code::PermissionDenied,
        &[&url, "not allowed"],
    );
    assert_eq!(origin.total_hits(), 0);
    // URNs and qualifiers the server cannot honour are never downloaded.
    let server = AssetServer::start(allowing(&[origin.addr.to_string()])).await;
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&["urn:x:y".to_string()], vec![]))
            .await,
        Code::NotFound,
        &["http or https"],
    );
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&[url], vec![q("vcs.commit", "abc")]))
            .await,
        Code::NotFound,
        &["vcs.commit"],
    );
    assert_eq!(origin.total_hits(), 0);
}

#[tokio::test]
async fn a_checksum_mismatch_stores_nothing_and_names_the_uri() {
    let origin = Origin::start("127.0.0.1").await;
    let data = b"what the origin serves".to_vec();
    origin.route("/f", Route::Body(data.clone()));
    let server = AssetServer::start(allowing(&["127.0.0.1".to_string()])).await;
    let url = origin.url("/f");
    let wrong = sri("sha256", b"what the client expected");
    let status = assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&[&url], vec![q("checksum.sri", &wrong)]))
            .await,
        Code::Aborted,
        &[
            &url,
            "does not match checksum.sri",
            &wrong,
            &sri("sha256", &data),
        ],
    );
    assert!(status.message().contains("nothing was stored"));
    let digest = Digest::of_bytes(DigestFunction::Sha256, &data).to_proto();
    assert!(!server.holds(&digest).await, "the bytes are not in the CAS");
    // Not in the index either: asking again downloads again.
    assert!(server
        .fetch()
        .fetch_blob(fetch(&[&url], vec![q("checksum.sri", &wrong)]))
        .await
        .is_err());
    assert_eq!(origin.hits("/f"), 2);
    let spool = server.dir.path().join("asset/downloads");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool is empty"
    );
}

#[tokio::test]
async fn downloads_over_the_size_limit_are_refused() {
    let origin = Origin::start("127.0.0.1").await;
    origin.route("/announced", Route::Body(content(4096)));
    origin.route("/streamed", Route::Unannounced(content(4096)));
    origin.route("/fits", Route::Unannounced(content(1000)));
    let mut config = allowing(&["127.0.0.1".to_string()]);
    config.download.max_bytes = 1000;
    let server = AssetServer::start(config).await;
    for path in ["/announced", "/streamed"] {
        let url = origin.url(path);
        assert_status(
            server.fetch().fetch_blob(fetch(&[&url], vec![])).await,
            Code::ResourceExhausted,
            &[&url, "larger than the limit of 1000 bytes", "max_bytes"],
        );
        let digest = Digest::of_bytes(DigestFunction::Sha256, &content(4096)).to_proto();
        assert!(!server.holds(&digest).await);
    }
    let r = server
        .fetch()
        .fetch_blob(fetch(&[origin.url("/fits")], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.read(&r.blob_digest.unwrap()).await, content(1000));
}

#[tokio::test]
async fn redirects_are_checked_against_the_policy() {
    let allowed = Origin::start("127.0.0.1").await;
    let elsewhere = Origin::start("127.0.0.2").await;
    elsewhere.route("/payload", Route::Body(b"from elsewhere".to_vec()));
    allowed.route("/payload", Route::Body(b"from the allowed host".to_vec()));
    allowed.route("/to-elsewhere", Route::Redirect(elsewhere.url("/payload")));
    allowed.route("/to-here", Route::Redirect("/payload".to_string()));
    allowed.route("/loop", Route::Redirect("/loop".to_string()));
    let server = AssetServer::start(allowing(&[allowed.addr.to_string()])).await;

    let url = allowed.url("/to-elsewhere");
    assert_status(
        server.fetch().fetch_blob(fetch(&[&url], vec![])).await,
        Code::PermissionDenied,
        &[
            &url,
            "redirect refused",
            &elsewhere.url("/payload"),
            "not allowed",
        ],
    );
    assert_eq!(
        elsewhere.total_hits(),
        0,
        "the disallowed host is never contacted"
    );

    let r = server
        .fetch()
        .fetch_blob(fetch(&[allowed.url("/to-here")], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        server.read(&r.blob_digest.unwrap()).await,
        b"from the allowed host"
    );

    assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&[allowed.url("/loop")], vec![]))
            .await,
        Code::PermissionDenied,
        &["more than 5 redirects"],
    );
}

#[tokio::test]
async fn slow_downloads_time_out_and_origin_errors_are_reported() {
    let origin = Origin::start("127.0.0.1").await;
    origin.route(
        "/slow",
        Route::Slow(Duration::from_secs(30), b"late".to_vec()),
    );
    origin.route("/gone", Route::Status(404));
    origin.route("/secret", Route::Status(403));
    origin.route("/broken", Route::Status(500));
    origin.route("/ok", Route::Body(b"mirror content".to_vec()));
    let mut config = allowing(&["127.0.0.1".to_string()]);
    config.download.timeout_secs = 60;
    let server = AssetServer::start(config).await;
    // The request's own timeout shortens the configured one.
    let started = std::time::Instant::now();
    assert_status(
        server
            .fetch()
            .fetch_blob(FetchBlobRequest {
                timeout: Some(corral_proto::protobuf::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..fetch(&[origin.url("/slow")], vec![])
            })
            .await,
        Code::DeadlineExceeded,
        &[&origin.url("/slow"), "did not finish within 1s"],
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    for (path, code) in [
        ("/gone", Code::NotFound),
        ("/secret", Code::PermissionDenied),
        ("/broken", Code::Unavailable),
    ] {
        assert_status(
            server
                .fetch()
                .fetch_blob(fetch(&[origin.url(path)], vec![]))
                .await,
            code,
            &[&origin.url(path), "HTTP"],
        );
    }
    // A dead mirror first, a live one second: the live one answers and is
    // named.
    let r = server
        .fetch()
        .fetch_blob(fetch(&[origin.url("/gone"), origin.url("/ok")], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.uri, origin.url("/ok"));
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch(&[format!("http://{closed}/x")], vec![]))
            .await,
        Code::Unavailable,
        &[&format!("http://{closed}/x")],
    );
}

#[tokio::test]
async fn oldest_content_accepted_downloads_again() {
    let origin = Origin::start("127.0.0.1").await;
    origin.route("/v", Route::Body(b"version 1".to_vec()));
    let server = AssetServer::start(allowing(&["127.0.0.1".to_string()])).await;
    let url = origin.url("/v");
    let first = server
        .fetch()
        .fetch_blob(fetch(&[&url], vec![]))
        .await
        .unwrap()
        .into_inner();
    server.clock.advance(Duration::from_secs(10));
    origin.route("/v", Route::Body(b"version 2".to_vec()));
    let cached = server
        .fetch()
        .fetch_blob(fetch(&[&url], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cached.blob_digest, first.blob_digest);
    assert_eq!(origin.hits("/v"), 1);
    let fresh = server
        .fetch()
        .fetch_blob(FetchBlobRequest {
            oldest_content_accepted: Some(to_timestamp(server.clock.now())),
            ..fetch(&[&url], vec![])
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(origin.hits("/v"), 2);
    assert_eq!(server.read(&fresh.blob_digest.unwrap()).await, b"version 2");
}
