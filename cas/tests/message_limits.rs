//! Messages decoded from client-named blobs are bounded: GetTree refuses a
//! Directory larger than one response can carry (it used to fail with
//! OUT_OF_RANGE "encoded message length too large"), and an ActionResult
//! whose Tree is over `[cas.message_limits] tree` is a miss, not an error.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{ctx, TestServer};
use corral_cas::{BlobStore, Config, Digest, DigestFunction, MessageLimits};
use corral_proto::reapi;
use prost::Message;
use tonic::Code;

/// A Directory of `files` entries, each naming a distinct digest: about
/// 100 bytes per entry.
fn wide_directory(files: usize) -> reapi::Directory {
    reapi::Directory {
        files: (0..files)
            .map(|i| reapi::FileNode {
                name: format!("file-{i:08}"),
                digest: Some(Digest::of_bytes(DigestFunction::Sha256, &i.to_le_bytes()).to_proto()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn put(server: &TestServer, message: &impl Message) -> Digest {
    let data = Bytes::from(message.encode_to_vec());
    let d = Digest::of_bytes(DigestFunction::Sha256, &data);
    server.store.put(&ctx(), &d, data).await.unwrap();
    d
}

#[tokio::test]
async fn get_tree_refuses_a_directory_larger_than_a_response() {
    // 64 KiB batches: responses of at most 2 × 64 KiB + 1 MiB.
    let server = TestServer::start(Config {
        max_batch_total_size_bytes: Some(64 << 10),
        ..Default::default()
    })
    .await;
    let limit = 2 * (64 << 10) + (1 << 20);
    let wide = wide_directory(15_000);
    assert!(wide.encoded_len() > limit);
    let wide_d = put(&server, &wide).await;

    let mut cas = server.cas();
    let status = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(wide_d.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(message.starts_with("root_digest"), "{message}");
    assert!(message.contains(&wide_d.to_string()), "{message}");
    assert!(message.contains("GetTree"), "{message}");

    // Below the root: the stream ends with the same error for that child,
    // after the pages before it.
    let root = reapi::Directory {
        directories: vec![reapi::DirectoryNode {
            name: "wide".into(),
            digest: Some(wide_d.to_proto()),
        }],
        ..Default::default()
    };
    let root_d = put(&server, &root).await;
    let mut stream = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(root_d.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without refusing the wide directory"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(&wide_d.to_string()),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("directories[0]"),
        "{}",
        status.message()
    );

    // A directory that fits is still served whole.
    let fits = wide_directory(1000);
    let fits_d = put(&server, &fits).await;
    let mut stream = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(fits_d.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let page = stream.message().await.unwrap().unwrap();
    assert_eq!(page.directories, vec![fits]);
}

#[tokio::test]
async fn an_action_result_whose_tree_is_over_the_limit_is_a_miss() {
    let server = TestServer::start(Config {
        message_limits: MessageLimits {
            tree: Some(1000),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let tree = reapi::Tree {
        root: Some(wide_directory(100)),
        children: vec![],
    };
    let tree_d = put(&server, &tree).await;
    let result = reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: "out".into(),
            tree_digest: Some(tree_d.to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let action = Digest::of_bytes(DigestFunction::Sha256, b"an action");
    let mut ac = server.ac();
    ac.update_action_result(reapi::UpdateActionResultRequest {
        action_digest: Some(action.to_proto()),
        action_result: Some(result),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = ac
        .get_action_result(reapi::GetActionResultRequest {
            action_digest: Some(action.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
