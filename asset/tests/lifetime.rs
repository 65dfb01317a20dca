//! How long an asset is served: `expire_at`, `oldest_content_accepted`,
//! completeness against the CAS (blobs, references and whole directory
//! trees), and durability of the disk index across a restart.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{assert_status, file, subdir, AssetServer};
use corral_asset::clock::to_timestamp;
use corral_asset::proto::{
    FetchBlobRequest, FetchDirectoryRequest, PushBlobRequest, PushDirectoryRequest,
};
use corral_asset::{AssetConfig, Clock, IndexKind};
use corral_proto::reapi;
use tonic::Code;

const URI: &str = "urn:fdc:buildstream.build:2020:artifact:proj/elem/key";

fn fetch(uri: &str) -> FetchBlobRequest {
    FetchBlobRequest {
        uris: vec![uri.into()],
        ..Default::default()
    }
}

fn fetch_dir(uri: &str) -> FetchDirectoryRequest {
    FetchDirectoryRequest {
        uris: vec![uri.into()],
        ..Default::default()
    }
}

fn push(uri: &str, digest: &reapi::Digest) -> PushBlobRequest {
    PushBlobRequest {
        uris: vec![uri.into()],
        blob_digest: Some(digest.clone()),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_entry_expires_at_its_expire_at() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let blob = server.upload(b"expiring").await;
    let expire = server.clock.now() + Duration::from_secs(3600);
    let mut req = push(URI, &blob);
    req.expire_at = Some(to_timestamp(expire));
    server.push().push_blob(req).await.unwrap();
    let r = server
        .fetch()
        .fetch_blob(fetch(URI))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(blob.clone()));
    assert_eq!(r.expires_at, Some(to_timestamp(expire)));

    server.clock.advance(Duration::from_secs(3599));
    assert!(server.fetch().fetch_blob(fetch(URI)).await.is_ok());
    server.clock.advance(Duration::from_secs(1));
    assert_status(
        server.fetch().fetch_blob(fetch(URI)).await,
        Code::NotFound,
        &[URI],
    );

    // An expire_at already past is refused.
    let mut req = push(URI, &blob);
    req.expire_at = Some(to_timestamp(server.clock.now() - Duration::from_secs(10)));
    assert_status(
        server.push().push_blob(req).await,
        Code::InvalidArgument,
        &["expire_at", "in the past"],
    );
    // Pushed again without one, it never expires.
    server.push().push_blob(push(URI, &blob)).await.unwrap();
    server.clock.advance(Duration::from_secs(100 * 365 * 86400));
    let r = server
        .fetch()
        .fetch_blob(fetch(URI))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(blob));
    assert!(r.expires_at.is_none());
}

#[tokio::test]
async fn oldest_content_accepted_skips_older_entries() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let old = server.upload(b"old content").await;
    server.push().push_blob(push(URI, &old)).await.unwrap();
    let pushed_at = server.clock.now();
    server.clock.advance(Duration::from_secs(60));

    let mut req = fetch(URI);
    req.oldest_content_accepted = Some(to_timestamp(pushed_at));
    let r = server
        .fetch()
        .fetch_blob(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.blob_digest,
        Some(old.clone()),
        "stored exactly then: accepted"
    );
    req.oldest_content_accepted = Some(to_timestamp(pushed_at + Duration::from_secs(1)));
    assert_status(
        server.fetch().fetch_blob(req.clone()).await,
        Code::NotFound,
        &[URI],
    );

    // A newer push satisfies it; without the field any age is fine.
    let new = server.upload(b"new content").await;
    server.push().push_blob(push(URI, &new)).await.unwrap();
    let r = server.fetch().fetch_blob(req).await.unwrap().into_inner();
    assert_eq!(r.blob_digest, Some(new.clone()));
    let r = server
        .fetch()
        .fetch_blob(fetch(URI))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(new));
}

#[tokio::test]
async fn a_blob_entry_is_served_only_while_its_blobs_are_in_the_cas() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let blob = server.upload(b"artifact").await;
    let meta = server.upload(b"meta").await;
    let log = server.upload(b"log").await;
    let mut req = push(URI, &blob);
    req.references_blobs = vec![meta.clone(), log.clone()];
    server.push().push_blob(req).await.unwrap();
    assert!(server.fetch().fetch_blob(fetch(URI)).await.is_ok());

    server.evict(&log);
    assert_status(
        server.fetch().fetch_blob(fetch(URI)).await,
        Code::NotFound,
        &[URI],
    );
    // Uploaded again, the entry is whole again.
    server.upload(b"log").await;
    assert!(server.fetch().fetch_blob(fetch(URI)).await.is_ok());
    server.evict(&blob);
    assert_status(
        server.fetch().fetch_blob(fetch(URI)).await,
        Code::NotFound,
        &[URI],
    );
}

/// A tree of three levels: root/{top, mid/{m, leaf/{deep}}}.
async fn three_level_tree(server: &AssetServer) -> [reapi::Digest; 6] {
    let top = server.upload(b"top file").await;
    let m = server.upload(b"mid file").await;
    let deep = server.upload(b"deep file").await;
    let leaf = server
        .upload_dir(&reapi::Directory {
            files: vec![file("deep", &deep)],
            ..Default::default()
        })
        .await;
    let mid = server
        .upload_dir(&reapi::Directory {
            files: vec![file("m", &m)],
            directories: vec![subdir("leaf", &leaf)],
            ..Default::default()
        })
        .await;
    let root = server
        .upload_dir(&reapi::Directory {
            files: vec![file("top", &top)],
            directories: vec![subdir("mid", &mid)],
            ..Default::default()
        })
        .await;
    [root, top, mid, m, leaf, deep]
}

#[tokio::test]
async fn a_directory_whose_tree_lost_a_blob_is_not_served() {
    // Each blob of the tree, lost in turn, makes the entry a miss.
    for lost in 0..6 {
        let server = AssetServer::start(AssetConfig::default()).await;
        let tree = three_level_tree(&server).await;
        server
            .push()
            .push_directory(PushDirectoryRequest {
                uris: vec![URI.into()],
                root_directory_digest: Some(tree[0].clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let r = server
            .fetch()
            .fetch_directory(fetch_dir(URI))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.root_directory_digest, Some(tree[0].clone()));
        server.evict(&tree[lost]);
        assert_status(
            server.fetch().fetch_directory(fetch_dir(URI)).await,
            Code::NotFound,
            &[URI],
        );
    }
}

#[tokio::test]
async fn a_referenced_directory_tree_must_stay_whole_too() {
    let server = AssetServer::start(AssetConfig::default()).await;
    let tree = three_level_tree(&server).await;
    let blob = server.upload(b"artifact proto").await;
    let mut req = push(URI, &blob);
    req.references_directories = vec![tree[0].clone()];
    server.push().push_blob(req).await.unwrap();
    assert!(server.fetch().fetch_blob(fetch(URI)).await.is_ok());
    server.evict(&tree[5]);
    assert_status(
        server.fetch().fetch_blob(fetch(URI)).await,
        Code::NotFound,
        &[URI],
    );
}

#[tokio::test]
async fn the_disk_index_survives_a_restart_and_the_memory_one_does_not() {
    let server = AssetServer::start_on_disk(AssetConfig::default()).await;
    let blob = server.upload(b"durable artifact").await;
    let tree = {
        let f = server.upload(b"f").await;
        server
            .upload_dir(&reapi::Directory {
                files: vec![file("f", &f)],
                ..Default::default()
            })
            .await
    };
    let expire = server.clock.now() + Duration::from_secs(7200);
    let mut req = push(URI, &blob);
    req.expire_at = Some(to_timestamp(expire));
    server.push().push_blob(req).await.unwrap();
    server
        .push()
        .push_directory(PushDirectoryRequest {
            uris: vec!["urn:source:x".into()],
            root_directory_digest: Some(tree.clone()),
            instance_name: "team/a".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let server = server.restart().await;
    let r = server
        .fetch()
        .fetch_blob(fetch(URI))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.blob_digest, Some(blob));
    assert_eq!(
        r.expires_at,
        Some(to_timestamp(expire)),
        "expiry is kept too"
    );
    let mut dir_req = fetch_dir("urn:source:x");
    dir_req.instance_name = "team/a".into();
    let r = server
        .fetch()
        .fetch_directory(dir_req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.root_directory_digest, Some(tree));
    assert!(server.dir.path().join("asset/entries").is_dir());

    let memory = AssetConfig {
        index: IndexKind::Memory,
        ..Default::default()
    };
    let server = AssetServer::start(memory).await;
    let blob = server.upload(b"volatile").await;
    server.push().push_blob(push(URI, &blob)).await.unwrap();
    assert!(server.fetch().fetch_blob(fetch(URI)).await.is_ok());
    let server = server.restart().await;
    assert!(
        server.holds(&blob).await,
        "the memory CAS is kept across the restart"
    );
    assert_status(
        server.fetch().fetch_blob(fetch(URI)).await,
        Code::NotFound,
        &[URI],
    );
}
