//! The shared contract, run against every backend on its own (disk,
//! memory, remote gRPC against a real served CAS, sharded) and against
//! every stack as the config factory builds it, including namespaces and
//! each action-cache backend.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod action_cache_suite;
#[path = "../common/mod.rs"]
mod common;
mod store_suite;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use corral_cas::factory::build;
use corral_cas::store::ShardedStore;
use corral_cas::{
    ActionCacheSpec, BlobStore, Config, DigestFunction, DiskStore, GrpcStore, MemoryStore,
    RequestContext, Storage,
};

fn ctx(instance: &str) -> RequestContext {
    RequestContext::internal(instance, DigestFunction::Sha256)
}

fn blake3(instance: &str) -> RequestContext {
    RequestContext::internal(instance, DigestFunction::Blake3)
}

/// A served CAS with a small batch limit, so the remote store uses both
/// the batch calls and ByteStream.
async fn served() -> TestServer {
    TestServer::start(Config {
        max_batch_total_size_bytes: Some(256 << 10),
        ..Default::default()
    })
    .await
}

async fn stack_from(cas_toml: &str, ac_toml: &str, data: &std::path::Path) -> Storage {
    let cas: Config = toml::from_str(cas_toml).unwrap();
    let ac: ActionCacheSpec = toml::from_str(ac_toml).unwrap();
    build(&cas, &ac, data).await.unwrap()
}

/// The whole contract on a stack: the store suite and the action-cache
/// suite, in the default instance and a named one, with both functions.
async fn full_contract(storage: &Storage) {
    let cas: Arc<dyn BlobStore> = Arc::new(storage.cas.clone());
    store_suite::stack(cas.clone(), &ctx(""), 100).await;
    store_suite::stack(cas, &blake3("some/instance"), 200).await;
    action_cache_suite::run(storage, &ctx(""), "a").await;
    action_cache_suite::run(storage, &blake3("some/instance"), "b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend() {
    store_suite::backend(Arc::new(MemoryStore::new()), &ctx(""), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1 << 30).unwrap();
    store_suite::backend(Arc::new(store), &ctx(""), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_backend() {
    let server = served().await;
    let remote = GrpcStore::connect(&server.url, "inst").await.unwrap();
    store_suite::backend(Arc::new(remote), &ctx("inst"), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let shards: Vec<Arc<dyn BlobStore>> = vec![
        Arc::new(MemoryStore::new()),
        Arc::new(DiskStore::open(dir.path(), 1 << 30).unwrap()),
        Arc::new(MemoryStore::new()),
    ];
    let sharded = ShardedStore::new(shards).unwrap();
    store_suite::backend(Arc::new(sharded), &ctx(""), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_over_any_backend_with_storage_over() {
    full_contract(&Storage::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_stack_disk_and_disk_action_cache() {
    let dir = tempfile::tempdir().unwrap();
    full_contract(&stack_from("", "", dir.path()).await).await;
    assert!(dir.path().join("cas/sha256").is_dir());
    assert!(dir.path().join("ac").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stack() {
    let dir = tempfile::tempdir().unwrap();
    let storage = stack_from(
        "[store]\ntype = \"memory\"",
        "type = \"memory\"",
        dir.path(),
    )
    .await;
    full_contract(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_stack() {
    let dir = tempfile::tempdir().unwrap();
    let cas = r#"
        [store]
        type = "sharded"
        [[store.shards]]
        type = "disk"
        [[store.shards]]
        type = "memory"
        [[store.shards]]
        type = "disk"
        max_bytes = 1073741824
    "#;
    let storage = stack_from(cas, "", dir.path()).await;
    full_contract(&storage).await;
    assert!(dir.path().join("cas/shard-0/sha256").is_dir());
    assert!(dir.path().join("cas/shard-2/sha256").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_stack_and_remote_action_cache() {
    let server = served().await;
    let dir = tempfile::tempdir().unwrap();
    let cas = format!("[store]\ntype = \"remote\"\nurl = \"{}\"", server.url);
    let ac = format!("type = \"remote\"\nurl = \"{}\"", server.url);
    let storage = stack_from(&cas, &ac, dir.path()).await;
    full_contract(&storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_stack_keeps_namespaces_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cas = r#"
        namespaces = { "team-a" = "a", "team-a/shared" = "default" }
        [stores.a]
        type = "memory"
    "#;
    let storage = stack_from(cas, "", dir.path()).await;
    full_contract(&storage).await;
    let store: Arc<dyn BlobStore> = Arc::new(storage.cas.clone());
    store_suite::stack(store.clone(), &ctx("team-a/x"), 300).await;
    action_cache_suite::run(&storage, &ctx("team-a"), "c").await;

    // A blob of team-a is not visible to anyone else, and the reverse;
    // team-a/shared is the default namespace again.
    let (data, d, _) = store_suite::blob(77, 5000);
    store.put(&ctx("team-a/x"), &d, data.clone()).await.unwrap();
    assert!(store
        .find_missing(&ctx("team-a"), &[d])
        .await
        .unwrap()
        .is_empty());
    for other in ["", "team-b", "team-ab", "team-a/shared", "team-a/shared/y"] {
        assert_eq!(
            store.find_missing(&ctx(other), &[d]).await.unwrap(),
            vec![d],
            "{other:?} sees team-a's blob"
        );
    }
    let (data, d, _) = store_suite::blob(78, 5000);
    store.put(&ctx("team-a/shared/y"), &d, data).await.unwrap();
    assert!(store.find_missing(&ctx(""), &[d]).await.unwrap().is_empty());
    assert_eq!(
        store.find_missing(&ctx("team-a"), &[d]).await.unwrap(),
        vec![d]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_refuses_what_it_cannot_build() {
    let dir = tempfile::tempdir().unwrap();
    let two_at_one_path = r#"
        [store]
        type = "sharded"
        [[store.shards]]
        type = "disk"
        path = "same"
        [[store.shards]]
        type = "disk"
        path = "same"
    "#;
    let cas: Config = toml::from_str(two_at_one_path).unwrap();
    let e = build(&cas, &ActionCacheSpec::default(), dir.path())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("share"), "{e}");
    // Nothing listens on port 1: connecting fails, naming the url.
    let cas: Config =
        toml::from_str("[store]\ntype = \"remote\"\nurl = \"http://127.0.0.1:1\"").unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        build(&cas, &ActionCacheSpec::default(), dir.path()),
    )
    .await
    .unwrap()
    .err()
    .unwrap();
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
}
