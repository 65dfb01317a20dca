//! Fetch and Push through real tonic clients: every RPC, qualifier
//! matching, instance and digest-function separation, and each way a
//! request can be refused.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{assert_status, details, file, q, sri, subdir, AssetServer};
use corral_asset::proto::{
    FetchBlobRequest, FetchDirectoryRequest, PushBlobRequest, PushDirectoryRequest,
};
use corral_asset::status_details::{BadRequest, BAD_REQUEST_URL};
use corral_asset::AssetConfig;
use corral_cas::DigestFunction;
use corral_proto::error_details::{PreconditionFailure, PRECONDITION_FAILURE_URL};
use corral_proto::reapi;
use prost::Message;
use tonic::Code;

const ARTIFACT: &str = "urn:fdc:buildstream.build:2020:artifact:proj/hello/0123abcd";

fn fetch_blob(uris: &[&str], qualifiers: Vec<corral_asset::proto::Qualifier>) -> FetchBlobRequest {
    FetchBlobRequest {
        uris: uris.iter().map(|u| u.to_string()).collect(),
        qualifiers,
        ..Default::default()
    }
}

fn push_blob(
    uris: &[&str],
    qualifiers: Vec<corral_asset::proto::Qualifier>,
    digest: &reapi::Digest,
) -> PushBlobRequest {
    PushBlobRequest {
        uris: uris.iter().map(|u| u.to_string()).collect(),
        qualifiers,
        blob_digest: Some(digest.clone()),
        ..Default::default()
    }
}

#[tokio::test]
async fn push_blob_then_fetch_it_by_any_uri() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let blob = server.upload(b"artifact proto").await;
    let meta = server.upload(b"metadata").await;
    let mut req = push_blob(&[ARTIFACT, "urn:x:weak-key"], vec![], &blob);
    req.references_blobs = vec![meta.clone()];
    server.push().push_blob(req).await.unwrap();

    for uri in [ARTIFACT, "urn:x:weak-key"] {
        let r = server
            .fetch()
            .fetch_blob(fetch_blob(&["urn:x:unknown", uri], vec![]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.blob_digest.as_ref(), Some(&blob));
        assert_eq!(r.uri, uri, "the response names the URI that matched");
        assert_eq!(r.status.unwrap().code, 0);
        assert_eq!(r.digest_function, DigestFunction::Sha256.to_proto());
        assert!(r.expires_at.is_none());
    }
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch_blob(&["urn:x:unknown"], vec![]))
            .await,
        Code::NotFound,
        &["urn:x:unknown", "allows no downloads"],
    );
}

#[tokio::test]
async fn push_directory_then_fetch_it() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let a = server.upload(b"file a").await;
    let leaf = server
        .upload_dir(&reapi::Directory {
            files: vec![file("a", &a)],
            ..Default::default()
        })
        .await;
    let root = server
        .upload_dir(&reapi::Directory {
            directories: vec![subdir("sub", &leaf)],
            ..Default::default()
        })
        .await;
    let uri = "urn:fdc:buildstream.build:2020:source:proj/base/abc";
    server
        .push()
        .push_directory(PushDirectoryRequest {
            uris: vec![uri.into()],
            root_directory_digest: Some(root.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = server
        .fetch()
        .fetch_directory(FetchDirectoryRequest {
            uris: vec![uri.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.root_directory_digest, Some(root.clone()));
    assert_eq!(r.uri, uri);
    // A directory is not a blob, and the other way round.
    assert_status(
        server.fetch().fetch_blob(fetch_blob(&[uri], vec![])).await,
        Code::NotFound,
        &[uri],
    );
    server
        .push()
        .push_blob(push_blob(&["urn:only:blob"], vec![], &a))
        .await
        .unwrap();
    assert_status(
        server
            .fetch()
            .fetch_directory(FetchDirectoryRequest {
                uris: vec!["urn:only:blob".into()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["directories are served only as pushed"],
    );
}

#[tokio::test]
async fn qualifiers_must_match_exactly_in_any_order() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let tar = server.upload(b"a tarball").await;
    let git = server.upload(b"a git archive").await;
    let uri = "https://example.com/repo.git";
    let pushed = vec![
        q("resource_type", "application/x-git"),
        q("vcs.commit", "0123abcd"),
    ];
    server
        .push()
        .push_blob(push_blob(&[uri], pushed.clone(), &git))
        .await
        .unwrap();
    server
        .push()
        .push_blob(push_blob(&[uri], vec![], &tar))
        .await
        .unwrap();

    let reversed: Vec<_> = pushed.iter().rev().cloned().collect();
    let r = server
        .fetch()
        .fetch_blob(fetch_blob(&[uri], reversed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(git.clone()));
    assert_eq!(
        r.qualifiers, pushed,
        "the qualifiers come back, sorted by name"
    );
    let r = server
        .fetch()
        .fetch_blob(fetch_blob(&[uri], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.blob_digest,
        Some(tar),
        "no qualifiers: the unqualified entry"
    );
    for differs in [
        vec![q("resource_type", "application/x-git")],
        vec![
            q("resource_type", "application/x-git"),
            q("vcs.commit", "fedcba98"),
        ],
        vec![
            q("resource_type", "application/x-git"),
            q("vcs.commit", "0123abcd"),
            q("vcs.branch", "main"),
        ],
    ] {
        assert_status(
            server
                .fetch()
                .fetch_blob(fetch_blob(&[uri], differs.clone()))
                .await,
            Code::NotFound,
            &[uri],
        );
    }
}

#[tokio::test]
async fn instances_and_digest_functions_are_separate() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let data = b"shared bytes";
    let sha = server
        .upload_in("team-a", DigestFunction::Sha256, data)
        .await;
    let b3 = server
        .upload_in("team-a", DigestFunction::Blake3, data)
        .await;
    let mut req = push_blob(&[ARTIFACT], vec![], &sha);
    req.instance_name = "team-a".into();
    server.push().push_blob(req).await.unwrap();
    let mut req = push_blob(&[ARTIFACT], vec![], &b3);
    req.instance_name = "team-a".into();
    req.digest_function = DigestFunction::Blake3.to_proto();
    server.push().push_blob(req).await.unwrap();

    let mut get = fetch_blob(&[ARTIFACT], vec![]);
    get.instance_name = "team-a".into();
    let r = server
        .fetch()
        .fetch_blob(get.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(sha));
    get.digest_function = DigestFunction::Blake3.to_proto();
    let r = server
        .fetch()
        .fetch_blob(get.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(b3));
    assert_eq!(r.digest_function, DigestFunction::Blake3.to_proto());
    get.instance_name = "team-b".into();
    assert_status(
        server.fetch().fetch_blob(get).await,
        Code::NotFound,
        &["team-b"],
    );
}

#[tokio::test]
async fn requests_without_uris_or_with_bad_ones_are_invalid() {
    let server = AssetServer::start(AssetConfig::default()).await;
    // BuildStream probes a remote with an empty FetchBlob and PushBlob and
    // expects INVALID_ARGUMENT (UNIMPLEMENTED would make it skip us).
    assert_status(
        server.fetch().fetch_blob(FetchBlobRequest::default()).await,
        Code::InvalidArgument,
        &["uris"],
    );
    assert_status(
        server.push().push_blob(PushBlobRequest::default()).await,
        Code::InvalidArgument,
        &["uris"],
    );
    assert_status(
        server
            .fetch()
            .fetch_directory(FetchDirectoryRequest::default())
            .await,
        Code::InvalidArgument,
        &["uris"],
    );
    assert_status(
        server
            .push()
            .push_directory(PushDirectoryRequest::default())
            .await,
        Code::InvalidArgument,
        &["uris"],
    );
    for bad in ["not a uri", "relative/path", "http://", ""] {
        assert_status(
            server
                .fetch()
                .fetch_blob(fetch_blob(&["urn:ok:1", bad], vec![]))
                .await,
            Code::InvalidArgument,
            &["uris[1]"],
        );
    }
    let blob = server.upload(b"x").await;
    assert_status(
        server
            .push()
            .push_blob(push_blob(&["nope"], vec![], &blob))
            .await,
        Code::InvalidArgument,
        &["uris[0]", "not a URI"],
    );
    // A push needs its digest; a malformed one is named.
    let mut req = push_blob(&[ARTIFACT], vec![], &blob);
    req.blob_digest = None;
    assert_status(
        server.push().push_blob(req).await,
        Code::InvalidArgument,
        &["blob_digest"],
    );
    let mut req = push_blob(&[ARTIFACT], vec![], &blob);
    req.references_blobs = vec![reapi::Digest {
        hash: "zz".into(),
        size_bytes: 1,
    }];
    assert_status(
        server.push().push_blob(req).await,
        Code::InvalidArgument,
        &["references_blobs[0]"],
    );
    let mut req = fetch_blob(&[ARTIFACT], vec![]);
    req.digest_function = 99;
    assert_status(
        server.fetch().fetch_blob(req).await,
        Code::InvalidArgument,
        &["digest_function"],
    );
    let mut req = fetch_blob(&[ARTIFACT], vec![]);
    req.oldest_content_accepted = Some(corral_proto::protobuf::Timestamp {
        seconds: 1,
        nanos: 2_000_000_000,
    });
    assert_status(
        server.fetch().fetch_blob(req).await,
        Code::InvalidArgument,
        &["oldest_content_accepted.nanos"],
    );
}

#[tokio::test]
async fn unknown_qualifiers_are_refused_by_name_unless_ignorable() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let blob = server.upload(b"x").await;
    let quals = vec![q("bazel.canonical_id", "abc"), q("colour", "red")];
    let status = assert_status(
        server
            .fetch()
            .fetch_blob(fetch_blob(&[ARTIFACT], quals.clone()))
            .await,
        Code::InvalidArgument,
        &["\"bazel.canonical_id\"", "\"colour\"", "not supported"],
    );
    let rpc = details(&status);
    assert_eq!(rpc.code, Code::InvalidArgument as i32);
    assert_eq!(rpc.details[0].type_url, BAD_REQUEST_URL);
    let bad = BadRequest::decode(&rpc.details[0].value[..]).unwrap();
    let described: Vec<(&str, &str)> = bad
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.description.as_str()))
        .collect();
    assert_eq!(
        described,
        vec![
            ("qualifiers.name", "\"bazel.canonical_id\" not supported"),
            ("qualifiers.name", "\"colour\" not supported"),
        ]
    );
    assert_status(
        server
            .push()
            .push_blob(push_blob(&[ARTIFACT], quals.clone(), &blob))
            .await,
        Code::InvalidArgument,
        &["\"colour\""],
    );

    // Configured as ignorable, they are accepted and take no part in
    // matching.
    let config = AssetConfig {
        ignored_qualifiers: ["bazel.canonical_id".to_string(), "colour".to_string()].into(),
        ..Default::default()
    };
    let server = AssetServer::start(config).await;
    let blob = server.upload(b"x").await;
    server
        .push()
        .push_blob(push_blob(&[ARTIFACT], quals, &blob))
        .await
        .unwrap();
    let r = server
        .fetch()
        .fetch_blob(fetch_blob(&[ARTIFACT], vec![q("colour", "blue")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(blob));
    assert!(r.qualifiers.is_empty());
}

#[tokio::test]
async fn malformed_qualifier_values_are_invalid() {
    let server = AssetServer::start(AssetConfig::default()).await;
    for (name, value, says) in [
        ("checksum.sri", "sha256-not*base64", "not base64"),
        ("checksum.sri", "sha1-AAAA", "not supported"),
        ("checksum.sri", "sha256-AAAA", "32 bytes"),
        ("checksum.sri", "", "is empty"),
        ("resource_type", "tarball", "not a media type"),
        ("directory", "../up", "\"..\""),
    ] {
        assert_status(
            server
                .fetch()
                .fetch_blob(fetch_blob(
                    &[ARTIFACT],
                    vec![q("vcs.branch", "main"), q(name, value)],
                ))
                .await,
            Code::InvalidArgument,
            &["qualifiers[1].value", says],
        );
    }
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch_blob(
                &[ARTIFACT],
                vec![q("directory", "a"), q("directory", "a")],
            ))
            .await,
        Code::InvalidArgument,
        &["qualifiers[1].name", "twice"],
    );
}

#[tokio::test]
async fn push_naming_blobs_the_cas_lacks_is_refused_listing_them() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let present = server.upload(b"present").await;
    let absent_blob =
        corral_cas::Digest::of_bytes(DigestFunction::Sha256, b"never uploaded").to_proto();
    let absent_file =
        corral_cas::Digest::of_bytes(DigestFunction::Sha256, b"file not uploaded").to_proto();
    let absent_dir =
        corral_cas::Digest::of_bytes(DigestFunction::Sha256, b"dir not uploaded").to_proto();
    // A tree whose Directory is there but one of its files is not.
    let partial = server
        .upload_dir(&reapi::Directory {
            files: vec![file("ok", &present), file("gone", &absent_file)],
            ..Default::default()
        })
        .await;
    let mut req = push_blob(&[ARTIFACT], vec![], &absent_blob);
    req.references_blobs = vec![present.clone()];
    req.references_directories = vec![partial.clone(), absent_dir.clone()];
    let status = assert_status(
        server.push().push_blob(req).await,
        Code::FailedPrecondition,
        &[&absent_blob.hash, &absent_file.hash, &absent_dir.hash],
    );
    assert!(
        !status.message().contains(&present.hash),
        "{}",
        status.message()
    );
    let rpc = details(&status);
    assert_eq!(rpc.details[0].type_url, PRECONDITION_FAILURE_URL);
    let failure = PreconditionFailure::decode(&rpc.details[0].value[..]).unwrap();
    let mut subjects: Vec<String> = failure
        .violations
        .iter()
        .map(|v| v.subject.clone())
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = [&absent_blob, &absent_file, &absent_dir]
        .iter()
        .map(|d| format!("blobs/{}/{}", d.hash, d.size_bytes))
        .collect();
    expected.sort();
    assert_eq!(subjects, expected);
    assert!(failure.violations.iter().all(|v| v.r#type == "MISSING"));
    // Nothing was stored.
    assert_status(
        server
            .fetch()
            .fetch_blob(fetch_blob(&[ARTIFACT], vec![]))
            .await,
        Code::NotFound,
        &[ARTIFACT],
    );
    // PushDirectory of a root that is not there.
    assert_status(
        server
            .push()
            .push_directory(PushDirectoryRequest {
                uris: vec![ARTIFACT.into()],
                root_directory_digest: Some(absent_dir.clone()),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        &[&absent_dir.hash],
    );
    // A root that is a blob but not a Directory.
    let not_dir = server.upload(b"\xff\xff not a directory").await;
    assert_status(
        server
            .push()
            .push_directory(PushDirectoryRequest {
                uris: vec![ARTIFACT.into()],
                root_directory_digest: Some(not_dir),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        &["root_directory_digest"],
    );
}

#[tokio::test]
async fn a_pushed_blob_must_match_its_checksum_qualifier() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let data = b"the real content";
    let blob = server.upload(data).await;
    let uri = "https://example.com/file.bin";
    for algorithm in ["sha256", "sha384", "sha512"] {
        let checksum = vec![q("checksum.sri", &sri(algorithm, data))];
        server
            .push()
            .push_blob(push_blob(&[uri], checksum.clone(), &blob))
            .await
            .unwrap();
        let r = server
            .fetch()
            .fetch_blob(fetch_blob(&[uri], checksum))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.blob_digest.as_ref(), Some(&blob));
    }
    let wrong = vec![q("checksum.sri", &sri("sha256", b"other content"))];
    assert_status(
        server
            .push()
            .push_blob(push_blob(&[uri], wrong.clone(), &blob))
            .await,
        Code::InvalidArgument,
        &["checksum.sri", "does not match", &blob.hash],
    );
    assert_status(
        server.fetch().fetch_blob(fetch_blob(&[uri], wrong)).await,
        Code::NotFound,
        &[uri],
    );
}

#[tokio::test]
async fn services_can_be_turned_off() {
    let server = AssetServer::start(AssetConfig {
        push: false,
        ..Default::default()
    })
    .await;
    assert_status(
        server.push().push_blob(PushBlobRequest::default()).await,
        Code::Unimplemented,
        &[],
    );
    assert_status(
        server.fetch().fetch_blob(FetchBlobRequest::default()).await,
        Code::InvalidArgument,
        &["uris"],
    );
    let server = AssetServer::start(AssetConfig {
        fetch: false,
        ..Default::default()
    })
    .await;
    assert_status(
        server.fetch().fetch_blob(FetchBlobRequest::default()).await,
        Code::Unimplemented,
        &[],
    );
}
