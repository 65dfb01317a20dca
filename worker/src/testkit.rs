//! Helpers shared by the worker's tests and the staging benchmark in
//! `corral-integration`: a real CAS (corral-cas's services over a
//! [`MemoryStore`]) on a loopback port, and a builder for input trees
//! uploaded to it. Compiled only for tests and with the `testkit` feature,
//! so the product does not carry it.

use std::sync::Arc;

use bytes::Bytes;
use corral_cas::service::Services;
use corral_cas::{
    BlobStore, Config, Digest, DigestFunction, MemoryActionCache, MemoryStore, RequestContext,
    Storage,
};
use corral_proto::reapi;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The worker's output upload, for tests that upload what they captured.
pub use crate::upload::upload;

/// The context of the tests' own calls to the store.
pub fn ctx() -> RequestContext {
    RequestContext::internal("", DigestFunction::Sha256)
}

/// A CAS served on `127.0.0.1` for as long as this value lives.
pub struct LoopbackCas {
    /// The store behind the served CAS, for direct checks.
    pub store: Arc<MemoryStore>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for LoopbackCas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LoopbackCas {
    /// Starts the CAS services; `max_batch` sets the advertised batch limit.
    pub async fn start(max_batch: Option<u64>) -> Result<Self> {
        let store = Arc::new(MemoryStore::new());
        let config = Config {
            max_batch_total_size_bytes: max_batch,
            ..Config::default()
        };
        let storage = Storage::over(
            store.clone(),
            Arc::new(MemoryActionCache::new()),
            config.message_limits.clone(),
        );
        let services = Services::new(config, storage);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding a loopback port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        let routes = services.routes();
        let task = tokio::spawn(async move {
            let incoming = corral_cas::service::incoming(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(error = %e, "loopback CAS stopped");
            }
        });
        Ok(LoopbackCas {
            store,
            url: format!("http://{addr}"),
            task,
        })
    }

    /// Stores `data`, returning its SHA-256 digest.
    pub async fn put(&self, data: impl Into<Bytes>) -> Result<Digest> {
        let data = data.into();
        let d = Digest::of_bytes(DigestFunction::Sha256, &data);
        self.store.put(&ctx(), &d, data).await?;
        Ok(d)
    }

    /// Stores a message, returning its digest.
    pub async fn put_message<M: prost::Message>(&self, m: &M) -> Result<Digest> {
        self.put(m.encode_to_vec()).await
    }
}

/// Builds a Directory message node by node.
#[derive(Default, Clone, Debug)]
pub struct DirBuilder {
    /// The message built so far.
    pub dir: reapi::Directory,
}

impl DirBuilder {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file node.
    pub fn file(mut self, name: &str, digest: &Digest, executable: bool) -> Self {
        self.dir.files.push(reapi::FileNode {
            name: name.into(),
            digest: Some(digest.to_proto()),
            is_executable: executable,
            node_properties: None,
        });
        self
    }

    /// Adds a file node with node properties.
    pub fn file_with(mut self, name: &str, digest: &Digest, props: reapi::NodeProperties) -> Self {
        self.dir.files.push(reapi::FileNode {
            name: name.into(),
            digest: Some(digest.to_proto()),
            is_executable: false,
            node_properties: Some(props),
        });
        self
    }

    /// Adds a directory node.
    pub fn dir(mut self, name: &str, digest: &Digest) -> Self {
        self.dir.directories.push(reapi::DirectoryNode {
            name: name.into(),
            digest: Some(digest.to_proto()),
        });
        self
    }

    /// Adds a symlink node.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.dir.symlinks.push(reapi::SymlinkNode {
            name: name.into(),
            target: target.into(),
            node_properties: None,
        });
        self
    }

    /// Sets the directory's own node properties.
    pub fn properties(mut self, props: reapi::NodeProperties) -> Self {
        self.dir.node_properties = Some(props);
        self
    }

    /// Sorts the entries by name, as REAPI asks of clients.
    pub fn build(mut self) -> reapi::Directory {
        self.dir.files.sort_by(|a, b| a.name.cmp(&b.name));
        self.dir.directories.sort_by(|a, b| a.name.cmp(&b.name));
        self.dir.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
        self.dir
    }

    /// Builds and uploads the message, returning its digest.
    pub async fn upload(self, cas: &LoopbackCas) -> Result<Digest> {
        cas.put_message(&self.build()).await
    }
}

/// Uploads a tree of `dirs` × `files_per_dir` distinct small files (each
/// `file_size` bytes, every seventh one executable) and returns its root.
pub async fn upload_wide_tree(
    cas: &LoopbackCas,
    dirs: usize,
    files_per_dir: usize,
    file_size: usize,
    seed: u64,
) -> Result<Digest> {
    let mut root = DirBuilder::new();
    for d in 0..dirs {
        let mut sub = DirBuilder::new();
        for f in 0..files_per_dir {
            let mut data = format!("seed {seed} dir {d} file {f}\n").into_bytes();
            data.resize(file_size.max(data.len()), b'x');
            let digest = cas.put(data).await?;
            sub = sub.file(&format!("f{f:05}.c"), &digest, f % 7 == 0);
        }
        let sub_digest = sub.upload(cas).await?;
        root = root.dir(&format!("d{d:04}"), &sub_digest);
    }
    root.upload(cas).await
}
