//! Capabilities, ContentAddressableStorage and ActionCache through real
//! tonic clients on loopback.

mod common;

use common::{assert_status, bytes, ctx, TestServer};
use corral_cas::{BlobStore, Config, Digest, DigestFunction, RequestContext};
use corral_proto::reapi;
use tonic::Code;

fn upload(d: &Digest, data: Vec<u8>) -> reapi::batch_update_blobs_request::Request {
    reapi::batch_update_blobs_request::Request {
        digest: Some(d.to_proto()),
        data,
        compressor: 0,
    }
}

#[tokio::test]
async fn capabilities_advertise_what_is_implemented() {
    let server = TestServer::start(Config::default()).await;
    let caps = server
        .capabilities()
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let low = caps.low_api_version.unwrap();
    assert_eq!((low.major, low.minor), (2, 0));
    let high = caps.high_api_version.unwrap();
    assert_eq!((high.major, high.minor), (2, 3));
    let cache = caps.cache_capabilities.unwrap();
    assert_eq!(cache.digest_functions, vec![1, 9]);
    assert_eq!(cache.max_batch_total_size_bytes, 4 << 20);
    assert!(
        cache
            .action_cache_update_capabilities
            .unwrap()
            .update_enabled
    );
    assert!(caps.execution_capabilities.is_none());
    server
        .services
        .set_execution_capabilities(Some(reapi::ExecutionCapabilities {
            digest_function: 1,
            exec_enabled: true,
            ..Default::default()
        }));
    let caps = server
        .capabilities()
        .get_capabilities(reapi::GetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(caps.execution_capabilities.unwrap().exec_enabled);
}

#[tokio::test]
async fn batch_round_trip_and_per_blob_statuses() {
    let server = TestServer::start(Config::default()).await;
    let mut cas = server.cas();
    for function in DigestFunction::ALL {
        let blobs: Vec<Vec<u8>> = (0..20).map(|i| bytes(i, 1000 + i as usize)).collect();
        let digests: Vec<Digest> = blobs
            .iter()
            .map(|b| Digest::of_bytes(function, b))
            .collect();
        let missing = cas
            .find_missing_blobs(reapi::FindMissingBlobsRequest {
                blob_digests: digests.iter().map(Digest::to_proto).collect(),
                digest_function: function.to_proto(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(missing.missing_blob_digests.len(), 20);

        let mut requests: Vec<_> = digests
            .iter()
            .zip(&blobs)
            .map(|(d, b)| upload(d, b.clone()))
            .collect();
        // A blob whose data does not match, one whose size is wrong, one
        // without a digest, and a zstd-compressed one.
        let wrong = Digest::of_bytes(function, b"something else");
        requests.push(upload(&wrong, b"not that".to_vec()));
        let short = Digest::new(function, *digests[0].hash(), 5);
        requests.push(upload(&short, blobs[0].clone()));
        requests.push(reapi::batch_update_blobs_request::Request {
            digest: None,
            data: vec![1],
            compressor: 0,
        });
        let plain = bytes(99, 50_000);
        let zd = Digest::of_bytes(function, &plain);
        requests.push(reapi::batch_update_blobs_request::Request {
            digest: Some(zd.to_proto()),
            data: zstd::bulk::compress(&plain, 3).unwrap(),
            compressor: reapi::compressor::Value::Zstd as i32,
        });
        let response = cas
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                requests,
                digest_function: function.to_proto(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let codes: Vec<i32> = response
            .responses
            .iter()
            .map(|r| r.status.as_ref().unwrap().code)
            .collect();
        assert!(codes[..20].iter().all(|&c| c == 0), "{codes:?}");
        assert_eq!(codes[20..], [3, 3, 3, 0]);
        let messages: Vec<&str> = response.responses[20..23]
            .iter()
            .map(|r| r.status.as_ref().unwrap().message.as_str())
            .collect();
        assert!(messages[0].contains("requests[20]"), "{messages:?}");
        assert!(messages[1].contains("requests[21]"), "{messages:?}");
        assert!(messages[2].contains("requests[22].digest"), "{messages:?}");
        assert_eq!(
            server
                .store
                .find_missing(&ctx(), &[wrong, short, zd])
                .await
                .unwrap(),
            vec![wrong, short]
        );

        let mut asked: Vec<reapi::Digest> = digests.iter().map(Digest::to_proto).collect();
        asked.push(wrong.to_proto());
        let read = cas
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                digests: asked,
                digest_function: function.to_proto(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for (r, b) in read.responses.iter().zip(&blobs) {
            assert_eq!(r.status.as_ref().unwrap().code, 0);
            assert_eq!(&r.data, b);
        }
        assert_eq!(
            read.responses[20].status.as_ref().unwrap().code,
            Code::NotFound as i32
        );
    }
}

#[tokio::test]
async fn batch_limits_and_digest_function_errors() {
    let config = Config {
        max_batch_total_size_bytes: Some(100_000),
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let mut cas = server.cas();
    let big = bytes(1, 100_001);
    let d = Digest::of_bytes(DigestFunction::Sha256, &big);
    let r = cas
        .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
            requests: vec![upload(&d, big.clone())],
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "requests");
    let r = cas
        .batch_read_blobs(reapi::BatchReadBlobsRequest {
            digests: vec![d.to_proto()],
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "digests");
    assert!(!server
        .store
        .find_missing(&ctx(), &[d])
        .await
        .unwrap()
        .is_empty());

    for bad in [2, 3, 8, 10, 1234] {
        let r = cas
            .find_missing_blobs(reapi::FindMissingBlobsRequest {
                digest_function: bad,
                ..Default::default()
            })
            .await;
        assert_status(r, Code::InvalidArgument, "digest_function");
        let r = cas
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                digest_function: bad,
                ..Default::default()
            })
            .await;
        assert_status(r, Code::InvalidArgument, "digest_function");
        let r = server
            .ac()
            .get_action_result(reapi::GetActionResultRequest {
                action_digest: Some(d.to_proto()),
                digest_function: bad,
                ..Default::default()
            })
            .await;
        assert_status(r, Code::InvalidArgument, "digest_function");
    }
    let r = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: vec![reapi::Digest {
                hash: "abc".into(),
                size_bytes: 1,
            }],
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "blob_digests[0].hash");
    let r = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: vec![reapi::Digest {
                hash: d.hash_hex(),
                size_bytes: -5,
            }],
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "blob_digests[0].size_bytes");
}

/// The answer lists exactly the missing digests, in the order asked, a
/// digest asked twice twice; the empty blob is never missing; upper-case
/// hex is refused naming the entry.
#[tokio::test]
async fn find_missing_answers_in_request_order() {
    let server = TestServer::start(Config::default()).await;
    let mut cas = server.cas();
    let f = DigestFunction::Sha256;
    let present = Digest::of_bytes(f, b"present");
    server
        .store
        .put(&ctx(), &present, "present".into())
        .await
        .unwrap();
    let a = Digest::of_bytes(f, b"a");
    let b = Digest::of_bytes(f, b"b");
    let empty = Digest::of_bytes(f, b"");
    let ask = [b, present, a, empty, b];
    let missing = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: ask.iter().map(Digest::to_proto).collect(),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .missing_blob_digests;
    assert_eq!(missing, vec![b.to_proto(), a.to_proto(), b.to_proto()]);
    let r = cas
        .find_missing_blobs(reapi::FindMissingBlobsRequest {
            blob_digests: vec![
                a.to_proto(),
                reapi::Digest {
                    hash: a.hash_hex().to_uppercase(),
                    size_bytes: 1,
                },
            ],
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await;
    assert_status(r, Code::InvalidArgument, "blob_digests[1].hash");
}

fn dir_with(children: &[(&str, Digest)], files: &[(&str, Digest)]) -> reapi::Directory {
    reapi::Directory {
        directories: children
            .iter()
            .map(|(n, d)| reapi::DirectoryNode {
                name: n.to_string(),
                digest: Some(d.to_proto()),
            })
            .collect(),
        files: files
            .iter()
            .map(|(n, d)| reapi::FileNode {
                name: n.to_string(),
                digest: Some(d.to_proto()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn get_tree_pages_through_a_tree() {
    let server = TestServer::start(Config::default()).await;
    let store = &server.store;
    let f = DigestFunction::Sha256;
    // 30 leaves under 3 middles under a root; one leaf shared, one missing.
    let mut middles = Vec::new();
    let shared = corral_cas::store::put_message(
        store,
        &RequestContext::internal("", f),
        &dir_with(&[], &[]),
    )
    .await
    .unwrap();
    let mut expected = 1 + 1; // root + shared leaf
    for m in 0..3 {
        let mut leaves = vec![("shared".to_string(), shared)];
        for l in 0..10 {
            let file = Digest::of_bytes(f, format!("{m}-{l}").as_bytes());
            let leaf = dir_with(&[], &[("f", file)]);
            leaves.push((
                format!("l{l}"),
                corral_cas::store::put_message(store, &RequestContext::internal("", f), &leaf)
                    .await
                    .unwrap(),
            ));
            expected += 1;
        }
        let missing = Digest::of_bytes(f, format!("missing{m}").as_bytes());
        leaves.push(("gone".into(), missing));
        let named: Vec<(&str, Digest)> = leaves.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        middles.push(
            corral_cas::store::put_message(
                store,
                &RequestContext::internal("", f),
                &dir_with(&named, &[]),
            )
            .await
            .unwrap(),
        );
        expected += 1;
    }
    let root_dir = dir_with(
        &[("a", middles[0]), ("b", middles[1]), ("c", middles[2])],
        &[],
    );
    let root = corral_cas::store::put_message(store, &RequestContext::internal("", f), &root_dir)
        .await
        .unwrap();

    let mut cas = server.cas();
    let mut all = Vec::new();
    let mut token = String::new();
    let mut calls = 0;
    loop {
        calls += 1;
        // Read only the first page of each call, then resume with its token.
        let mut stream = cas
            .get_tree(reapi::GetTreeRequest {
                root_digest: Some(root.to_proto()),
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let page = stream.message().await.unwrap().unwrap();
        assert!(page.directories.len() <= 7);
        all.extend(page.directories);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(all.len(), expected);
    assert!(calls >= expected / 7);
    assert_eq!(all[0], root_dir);
    let mut unique: Vec<Digest> = all.iter().map(|d| Digest::of_message(f, d)).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), expected);

    // One call streams every page.
    let mut stream = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(root.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(page) = stream.message().await.unwrap() {
        n += page.directories.len();
    }
    assert_eq!(n, expected);

    let r = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(Digest::of_bytes(f, b"nope").to_proto()),
            ..Default::default()
        })
        .await;
    assert_status(r.map(drop), Code::NotFound, "blob");
    let r = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(root.to_proto()),
            page_token: "x1".into(),
            ..Default::default()
        })
        .await;
    assert_status(r.map(drop), Code::InvalidArgument, "page_token");
    let r = cas
        .get_tree(reapi::GetTreeRequest {
            root_digest: Some(root.to_proto()),
            page_size: -1,
            ..Default::default()
        })
        .await;
    assert_status(r.map(drop), Code::InvalidArgument, "page_size");
}

/// `output_directory_format` DIRECTORY_ONLY (BuildStream): the result names
/// the root Directory, not a Tree; a hit needs every Directory below it and
/// every file.
#[tokio::test]
async fn action_cache_accepts_root_directory_outputs_and_checks_them_whole() {
    let server = TestServer::start(Config::default()).await;
    let f = DigestFunction::Sha256;
    let file = Digest::of_bytes(f, b"leaf");
    server
        .store
        .put(&ctx(), &file, "leaf".into())
        .await
        .unwrap();
    let child = dir_with(&[], &[("leaf", file)]);
    let child_d =
        corral_cas::store::put_message(&server.store, &RequestContext::internal("", f), &child)
            .await
            .unwrap();
    let root = dir_with(&[("sub", child_d)], &[]);
    let root_d =
        corral_cas::store::put_message(&server.store, &RequestContext::internal("", f), &root)
            .await
            .unwrap();
    let result = reapi::ActionResult {
        output_directories: vec![reapi::OutputDirectory {
            path: String::new(),
            root_directory_digest: Some(root_d.to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let action = Digest::of_bytes(f, b"bst action");
    let mut ac = server.ac();
    ac.update_action_result(reapi::UpdateActionResultRequest {
        instance_name: "buildstream".into(),
        action_digest: Some(action.to_proto()),
        action_result: Some(result.clone()),
        digest_function: f.to_proto(),
        ..Default::default()
    })
    .await
    .unwrap();
    let get = || reapi::GetActionResultRequest {
        instance_name: "buildstream".into(),
        action_digest: Some(action.to_proto()),
        digest_function: f.to_proto(),
        ..Default::default()
    };
    assert_eq!(
        ac.get_action_result(get()).await.unwrap().into_inner(),
        result
    );
    // A Directory deep in the output disappears: no longer a hit.
    std::fs::remove_file(server.store.path(&child_d)).unwrap();
    assert_status(
        ac.get_action_result(get()).await,
        Code::NotFound,
        "action result",
    );
}

#[tokio::test]
async fn action_cache_per_instance_and_only_complete_hits() {
    let server = TestServer::start(Config::default()).await;
    let f = DigestFunction::Blake3;
    let out = bytes(5, 5000);
    let out_d = Digest::of_bytes(f, &out);
    server.store.put(&ctx(), &out_d, out.into()).await.unwrap();
    let file_in_tree = Digest::of_bytes(f, b"tree file");
    server
        .store
        .put(&ctx(), &file_in_tree, "tree file".into())
        .await
        .unwrap();
    let tree = reapi::Tree {
        root: Some(dir_with(&[], &[("x", file_in_tree)])),
        children: vec![],
    };
    let tree_d =
        corral_cas::store::put_message(&server.store, &RequestContext::internal("", f), &tree)
            .await
            .unwrap();
    let result = reapi::ActionResult {
        output_files: vec![reapi::OutputFile {
            path: "out/a".into(),
            digest: Some(out_d.to_proto()),
            ..Default::default()
        }],
        output_directories: vec![reapi::OutputDirectory {
            path: "out/d".into(),
            tree_digest: Some(tree_d.to_proto()),
            ..Default::default()
        }],
        exit_code: 0,
        ..Default::default()
    };
    let action = Digest::of_bytes(f, b"action");
    let mut ac = server.ac();
    let update = |instance: &str, result: reapi::ActionResult| reapi::UpdateActionResultRequest {
        instance_name: instance.into(),
        action_digest: Some(action.to_proto()),
        action_result: Some(result),
        digest_function: f.to_proto(),
        ..Default::default()
    };
    let get = |instance: &str| reapi::GetActionResultRequest {
        instance_name: instance.into(),
        action_digest: Some(action.to_proto()),
        digest_function: f.to_proto(),
        ..Default::default()
    };
    ac.update_action_result(update("team/a", result.clone()))
        .await
        .unwrap();
    assert_eq!(
        ac.get_action_result(get("team/a"))
            .await
            .unwrap()
            .into_inner(),
        result
    );
    assert_status(
        ac.get_action_result(get("team/b")).await,
        Code::NotFound,
        "action result",
    );
    // Same hash under SHA-256 is another key.
    let mut sha = get("team/a");
    sha.digest_function = DigestFunction::Sha256.to_proto();
    assert_status(
        ac.get_action_result(sha).await,
        Code::NotFound,
        "action result",
    );

    // A file inside the output tree disappears: no longer a hit.
    std::fs::remove_file(server.store.path(&file_in_tree)).unwrap();
    server.store.get(&ctx(), &file_in_tree).await.unwrap_err();
    assert_status(
        ac.get_action_result(get("team/a")).await,
        Code::NotFound,
        "action result",
    );

    // Validation of updates.
    let mut bad = result.clone();
    bad.output_files[0].path = "/etc/passwd".into();
    assert_status(
        ac.update_action_result(update("i", bad)).await,
        Code::InvalidArgument,
        "action_result.output_files[0].path",
    );
    let mut bad = result.clone();
    bad.output_files[0].digest = Some(reapi::Digest {
        hash: "zz".into(),
        size_bytes: 1,
    });
    assert_status(
        ac.update_action_result(update("i", bad)).await,
        Code::InvalidArgument,
        "action_result.output_files[0].digest.hash",
    );
    let mut bad = result.clone();
    bad.output_directories[0].tree_digest = None;
    assert_status(
        ac.update_action_result(update("i", bad)).await,
        Code::InvalidArgument,
        "action_result.output_directories[0]",
    );
    let mut missing = update("i", result.clone());
    missing.action_result = None;
    assert_status(
        ac.update_action_result(missing).await,
        Code::InvalidArgument,
        "action_result",
    );
    let mut missing = update("i", result);
    missing.action_digest = None;
    assert_status(
        ac.update_action_result(missing).await,
        Code::InvalidArgument,
        "action_digest",
    );
}
