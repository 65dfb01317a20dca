//! A real server (CAS services and asset services on one loopback port)
//! for the service tests, a clock the tests move, helpers to put blobs and
//! trees in the CAS, and a tiny HTTP origin ([`http::Origin`]).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

pub mod http;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use corral_asset::proto::fetch_client::FetchClient;
use corral_asset::proto::push_client::PushClient;
use corral_asset::proto::Qualifier;
use corral_asset::{AssetConfig, AssetServices, Clock};
use corral_cas::service::Services;
use corral_cas::{
    BlobStore, Config, Digest, DigestFunction, DiskActionCache, DiskStore, MemoryStore,
    MessageLimits, Storage,
};
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use prost::Message;
use tonic::transport::Channel;

/// A clock that moves only when told.
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    pub fn new() -> Self {
        TestClock(Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        )))
    }
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Which CAS backend a test server has.
#[derive(Clone)]
pub enum Backend {
    /// In memory; the test can remove blobs (eviction).
    Memory(MemoryStore),
    /// On disk under the server's directory (survives a restart).
    Disk,
}

pub struct AssetServer {
    pub url: String,
    pub channel: Channel,
    pub clock: TestClock,
    pub backend: Backend,
    pub config: AssetConfig,
    pub dir: Arc<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AssetServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AssetServer {
    /// A server over a memory CAS with `config`.
    pub async fn start(config: AssetConfig) -> AssetServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::serve(
            config,
            Backend::Memory(MemoryStore::new()),
            dir,
            TestClock::new(),
        )
        .await
    }

    /// A server whose CAS and (with the default config) index are on disk.
    pub async fn start_on_disk(config: AssetConfig) -> AssetServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::serve(config, Backend::Disk, dir, TestClock::new()).await
    }

    /// Stops this server and starts another over the same directory (and
    /// the same memory CAS, if it has one): a restart.
    pub async fn restart(self) -> AssetServer {
        let (config, backend, dir, clock) = (
            self.config.clone(),
            self.backend.clone(),
            self.dir.clone(),
            self.clock.clone(),
        );
        drop(self);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Self::serve(config, backend, dir, clock).await
    }

    async fn serve(
        config: AssetConfig,
        backend: Backend,
        dir: Arc<tempfile::TempDir>,
        clock: TestClock,
    ) -> AssetServer {
        let cas: Arc<dyn BlobStore> = match &backend {
            Backend::Memory(m) => Arc::new(m.clone()),
            Backend::Disk => Arc::new(DiskStore::open(dir.path().join("cas"), 1 << 30).unwrap()),
        };
        let ac = Arc::new(DiskActionCache::open(dir.path().join("ac")).unwrap());
        let storage = Storage::over(cas, ac, MessageLimits::default());
        let services = Services::new(Config::default(), storage.clone());
        let asset = AssetServices::build(&config, storage.cas.clone(), dir.path())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        let mut routes = tonic::service::RoutesBuilder::default();
        services.add_to(&mut routes);
        asset.add_to(&mut routes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_routes(routes.routes())
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
        AssetServer {
            url,
            channel,
            clock,
            backend,
            config,
            dir,
            task,
        }
    }

    pub fn fetch(&self) -> FetchClient<Channel> {
        FetchClient::new(self.channel.clone())
    }

    pub fn push(&self) -> PushClient<Channel> {
        PushClient::new(self.channel.clone())
    }

    pub fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
    }

    /// Uploads `data` with BatchUpdateBlobs under `instance`.
    pub async fn upload_in(
        &self,
        instance: &str,
        function: DigestFunction,
        data: &[u8],
    ) -> reapi::Digest {
        let digest = Digest::of_bytes(function, data).to_proto();
        let response = self
            .cas()
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: instance.to_string(),
                requests: vec![reapi::batch_update_blobs_request::Request {
                    digest: Some(digest.clone()),
                    data: data.to_vec(),
                    compressor: 0,
                }],
                digest_function: function.to_proto(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.responses[0].status.as_ref().unwrap().code, 0);
        digest
    }

    /// Uploads `data` (SHA-256, default instance).
    pub async fn upload(&self, data: &[u8]) -> reapi::Digest {
        self.upload_in("", DigestFunction::Sha256, data).await
    }

    /// Uploads a Directory message.
    pub async fn upload_dir(&self, dir: &reapi::Directory) -> reapi::Digest {
        self.upload(&dir.encode_to_vec()).await
    }

    /// Whether the CAS holds `digest` (default instance, SHA-256).
    pub async fn holds(&self, digest: &reapi::Digest) -> bool {
        let missing = self
            .cas()
            .find_missing_blobs(reapi::FindMissingBlobsRequest {
                instance_name: String::new(),
                blob_digests: vec![digest.clone()],
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .missing_blob_digests;
        missing.is_empty()
    }

    /// Reads a blob back (default instance).
    pub async fn read(&self, digest: &reapi::Digest) -> Vec<u8> {
        let r = self
            .cas()
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: String::new(),
                digests: vec![digest.clone()],
                acceptable_compressors: Vec::new(),
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let one = &r.responses[0];
        assert_eq!(one.status.as_ref().unwrap().code, 0, "{:?}", one.status);
        one.data.clone()
    }

    /// Evicts `digest` from the memory CAS.
    pub fn evict(&self, digest: &reapi::Digest) {
        let Backend::Memory(m) = &self.backend else {
            panic!("evict needs the memory backend")
        };
        let d = Digest::from_proto(DigestFunction::Sha256, digest).unwrap();
        assert!(m.remove(&d), "{digest:?} was not in the CAS");
    }
}

pub fn q(name: &str, value: &str) -> Qualifier {
    Qualifier {
        name: name.into(),
        value: value.into(),
    }
}

/// A file node.
pub fn file(name: &str, digest: &reapi::Digest) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(digest.clone()),
        ..Default::default()
    }
}

/// A directory node.
pub fn subdir(name: &str, digest: &reapi::Digest) -> reapi::DirectoryNode {
    reapi::DirectoryNode {
        name: name.into(),
        digest: Some(digest.clone()),
    }
}

/// Asserts a gRPC error's code and that its message mentions each of
/// `says`.
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: tonic::Code,
    says: &[&str],
) -> tonic::Status {
    let status = r.expect_err("expected an error");
    assert_eq!(status.code(), code, "{status:?}");
    for s in says {
        assert!(
            status.message().contains(s),
            "{:?} does not say {s:?}",
            status.message()
        );
    }
    status
}

/// The `google.rpc.Status` in an error's details.
pub fn details(status: &tonic::Status) -> corral_proto::rpc::Status {
    corral_proto::rpc::Status::decode(status.details()).unwrap()
}

/// SRI of `data` with `algorithm` (`sha256`, `sha384`, `sha512`).
pub fn sri(algorithm: &str, data: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest as _;
    let digest = match algorithm {
        "sha256" => sha2::Sha256::digest(data).to_vec(),
        "sha384" => sha2::Sha384::digest(data).to_vec(),
        "sha512" => sha2::Sha512::digest(data).to_vec(),
        other => panic!("{other}"),
    };
    format!(
        "{algorithm}-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}
