//! A real server on a loopback port for the service tests, and helpers to
//! talk ByteStream to it.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

pub mod bytestream;

use std::sync::Arc;

use corral_cas::service::Services;
use corral_cas::{
    BlobStore, Config, DigestFunction, DiskActionCache, DiskStore, MemoryStore, RequestContext,
    Storage,
};
use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
use corral_proto::reapi::action_cache_client::ActionCacheClient;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::transport::Channel;

/// The context of a test's own calls to a store (default instance name).
pub fn ctx() -> RequestContext {
    RequestContext::internal("", DigestFunction::Sha256)
}

/// A server over `store` (the disk store unless a test asks for another),
/// with the standard layers over it; `store` is the bare backend.
pub struct TestServer<S = DiskStore> {
    pub url: String,
    pub channel: Channel,
    pub services: Services,
    pub store: S,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl<S> Drop for TestServer<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX: usize = 64 << 20;

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let max = config.max_cas_bytes.unwrap_or(1 << 30);
        let store = DiskStore::open(dir.path().join("cas"), max).unwrap();
        TestServer::serve(config, store, dir).await
    }
}

impl TestServer<MemoryStore> {
    /// A server over a memory store: for tests that open many uploads at
    /// once, which on disk would each hold a file descriptor.
    pub async fn start_in_memory(config: Config) -> TestServer<MemoryStore> {
        let dir = tempfile::tempdir().unwrap();
        TestServer::serve(config, MemoryStore::new(), dir).await
    }
}

impl<S: BlobStore + Clone> TestServer<S> {
    async fn serve(config: Config, store: S, dir: tempfile::TempDir) -> TestServer<S> {
        let cas: Arc<dyn BlobStore> = Arc::new(store.clone());
        let ac = Arc::new(DiskActionCache::open(dir.path().join("ac")).unwrap());
        let storage = Storage::over(cas, ac, config.message_limits.clone());
        let services = Services::new(config, storage);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = services.routes();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(corral_cas::service::incoming(listener))
                .await
                .unwrap();
        });
        let url = format!("http://{addr}");
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        TestServer {
            url,
            channel,
            services,
            store,
            dir,
            task,
        }
    }
}

impl<S> TestServer<S> {
    pub fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX)
    }

    pub fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone())
            .max_decoding_message_size(MAX)
            .max_encoding_message_size(MAX)
    }

    pub fn ac(&self) -> ActionCacheClient<Channel> {
        ActionCacheClient::new(self.channel.clone())
    }

    pub fn capabilities(&self) -> CapabilitiesClient<Channel> {
        CapabilitiesClient::new(self.channel.clone())
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Asserts a gRPC error's code and that its message mentions `field`.
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    field: &str,
) {
    let status = r.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "{:?} does not name {field}",
        status.message()
    );
}
