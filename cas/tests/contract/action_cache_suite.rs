//! What every action-cache stack must do: results kept per instance name,
//! malformed results refused, and a hit only when every blob the result
//! names exists (output files, stdout/stderr, each Tree and the files in
//! it, or every Directory under a root Directory).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use corral_cas::{BlobStore, Digest, RequestContext, Storage};
use corral_proto::reapi;
use prost::Message;

fn file(name: &str, d: &Digest) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(d.to_proto()),
        ..Default::default()
    }
}

async fn put(storage: &Storage, ctx: &RequestContext, data: Bytes) -> Digest {
    let d = Digest::of_bytes(ctx.digest_function(), &data);
    storage.cas.put(ctx, &d, data).await.unwrap();
    d
}

fn result_with(out: &Digest, dir: reapi::OutputDirectory) -> reapi::ActionResult {
    reapi::ActionResult {
        output_files: vec![reapi::OutputFile {
            path: "out".into(),
            digest: Some(out.to_proto()),
            ..Default::default()
        }],
        output_directories: vec![dir],
        ..Default::default()
    }
}

/// Runs the suite in `ctx`'s instance; `seed` keeps runs on one store apart.
pub async fn run(storage: &Storage, ctx: &RequestContext, seed: &str) {
    let ac = storage.action_cache.as_ref();
    let f = ctx.digest_function();
    let action = Digest::of_bytes(f, format!("action {seed}").as_bytes());
    let out = Digest::of_bytes(f, format!("out {seed}").as_bytes());
    let in_tree = Digest::of_bytes(f, format!("in tree {seed}").as_bytes());
    let leaf = reapi::Directory {
        files: vec![file("t", &in_tree)],
        ..Default::default()
    };
    let tree = reapi::Tree {
        root: Some(leaf.clone()),
        children: vec![],
    };
    let tree_digest = Digest::of_message(f, &tree);
    let with_tree = result_with(
        &out,
        reapi::OutputDirectory {
            path: "dir".into(),
            tree_digest: Some(tree_digest.to_proto()),
            ..Default::default()
        },
    );
    assert!(ac.get(ctx, &action).await.unwrap().is_none());
    ac.update(ctx, &action, with_tree.clone()).await.unwrap();
    // Nothing it names is stored yet: a miss, each blob in turn.
    assert!(ac.get(ctx, &action).await.unwrap().is_none());
    put(storage, ctx, Bytes::from(format!("out {seed}"))).await;
    assert!(ac.get(ctx, &action).await.unwrap().is_none());
    put(storage, ctx, Bytes::from(tree.encode_to_vec())).await;
    assert!(
        ac.get(ctx, &action).await.unwrap().is_none(),
        "file in the Tree missing"
    );
    put(storage, ctx, Bytes::from(format!("in tree {seed}"))).await;
    assert_eq!(ac.get(ctx, &action).await.unwrap(), Some(with_tree.clone()));

    // Another instance name does not see it.
    let other = RequestContext::internal(&format!("{}/elsewhere-{seed}", ctx.instance_name()), f);
    assert!(ac.get(&other, &action).await.unwrap().is_none());

    directory_only(storage, ctx, seed, &out).await;

    // A malformed result is refused and changes nothing.
    let mut bad = with_tree.clone();
    bad.output_files[0].path = "/abs".into();
    let e = ac.update(ctx, &action, bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.to_string().contains("action_result.output_files[0].path"),
        "{e}"
    );
    assert_eq!(ac.get(ctx, &action).await.unwrap(), Some(with_tree));
}

/// DIRECTORY_ONLY results: every Directory under the root must exist.
async fn directory_only(storage: &Storage, ctx: &RequestContext, seed: &str, out: &Digest) {
    let ac = storage.action_cache.as_ref();
    let f = ctx.digest_function();
    let action = Digest::of_bytes(f, format!("dir action {seed}").as_bytes());
    let child = reapi::Directory {
        files: vec![file("c", out)],
        ..Default::default()
    };
    let child_d = Digest::of_message(f, &child);
    let root = reapi::Directory {
        directories: vec![reapi::DirectoryNode {
            name: "sub".into(),
            digest: Some(child_d.to_proto()),
        }],
        ..Default::default()
    };
    let root_d = put(storage, ctx, Bytes::from(root.encode_to_vec())).await;
    let result = result_with(
        out,
        reapi::OutputDirectory {
            path: "d".into(),
            root_directory_digest: Some(root_d.to_proto()),
            ..Default::default()
        },
    );
    ac.update(ctx, &action, result.clone()).await.unwrap();
    assert!(
        ac.get(ctx, &action).await.unwrap().is_none(),
        "child Directory missing"
    );
    put(storage, ctx, Bytes::from(child.encode_to_vec())).await;
    assert_eq!(ac.get(ctx, &action).await.unwrap(), Some(result));
}
