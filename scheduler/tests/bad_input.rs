//! Execute with an Action or Command digest that claims more than
//! `[cas.message_limits]` allows: refused with INVALID_ARGUMENT naming the
//! field and the limit, from the digest alone — the store is never asked
//! for the blob and the process's memory does not grow.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corral_cas::store::{BlobWriter, ChunkStream};
use corral_cas::{
    BlobStore, Digest, DigestFunction, MemoryActionCache, MemoryStore, MessageLimits,
    RequestContext, Storage,
};
use corral_proto::prost::bytes::Bytes;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::tonic::transport::{Channel, Server};
use corral_proto::tonic::{self, Code};
use corral_scheduler::{ManualClock, Scheduler, SchedulerConfig};

/// A memory store that counts whole-blob and streamed reads.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    reads: AtomicUsize,
}

#[tonic::async_trait]
impl BlobStore for CountingStore {
    async fn find_missing(
        &self,
        ctx: &RequestContext,
        digests: &[Digest],
    ) -> corral_cas::Result<Vec<Digest>> {
        self.inner.find_missing(ctx, digests).await
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> corral_cas::Result<Bytes> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(ctx, digest).await
    }

    async fn put(&self, ctx: &RequestContext, d: &Digest, data: Bytes) -> corral_cas::Result<()> {
        self.inner.put(ctx, d, data).await
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> corral_cas::Result<ChunkStream> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(ctx, digest, offset, limit).await
    }

    async fn write(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
    ) -> corral_cas::Result<Box<dyn BlobWriter>> {
        self.inner.write(ctx, digest).await
    }
}

/// Resident memory of this process, in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

async fn serve(scheduler: Arc<Scheduler>) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let mut routes = tonic::service::RoutesBuilder::default();
    scheduler.add_to(&mut routes);
    let routes = routes.routes();
    tokio::spawn(async move {
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming(corral_cas::service::incoming(listener))
            .await
            .expect("server runs");
    });
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

async fn execute(channel: &Channel, action: &Digest) -> tonic::Status {
    let response = ExecutionClient::new(channel.clone())
        .execute(reapi::ExecuteRequest {
            action_digest: Some(action.to_proto()),
            ..Default::default()
        })
        .await;
    match response {
        Ok(_) => panic!("Execute of {action} was accepted"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn an_action_digest_claiming_a_gibibyte_is_refused_before_any_read() {
    let store = Arc::new(CountingStore::default());
    let storage = Storage::over(
        store.clone(),
        Arc::new(MemoryActionCache::new()),
        MessageLimits::default(),
    );
    let scheduler = Scheduler::new(
        SchedulerConfig::default(),
        storage.cas,
        storage.action_cache,
        Arc::new(ManualClock::new()),
    )
    .expect("default config is valid");
    let channel = serve(scheduler).await;
    let ctx = RequestContext::internal("", DigestFunction::Sha256);

    // Warm up the connection and the server's code paths first, so the
    // memory measured below is only what the refusals cost.
    let small = Digest::of_bytes(DigestFunction::Sha256, b"absent");
    assert_eq!(
        execute(&channel, &small).await.code(),
        Code::FailedPrecondition
    );
    let reads_before = store.reads.load(Ordering::SeqCst);
    let rss_before = rss_kib();

    let huge = Digest::new(DigestFunction::Sha256, [0x5a; 32], 1 << 30);
    for _ in 0..20 {
        let status = execute(&channel, &huge).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let message = status.message();
        assert!(message.starts_with("action_digest"), "{message}");
        assert!(message.contains("1073741824"), "{message}");
        assert!(message.contains("4194304"), "{message}");
        assert!(message.contains("[cas.message_limits] action"), "{message}");
    }

    // A small Action whose Command claims 5 MiB: refused naming the field.
    let command = Digest::new(DigestFunction::Sha256, [0x33; 32], 5 << 20);
    let action = reapi::Action {
        command_digest: Some(command.to_proto()),
        input_root_digest: Some(
            Digest::of_message(DigestFunction::Sha256, &reapi::Directory::default()).to_proto(),
        ),
        ..Default::default()
    };
    let data = Bytes::from(action.encode_to_vec());
    let action_d = Digest::of_bytes(DigestFunction::Sha256, &data);
    store.put(&ctx, &action_d, data).await.expect("put action");
    let status = execute(&channel, &action_d).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("action.command_digest"),
        "{}",
        status.message()
    );

    let rss_after = rss_kib();
    // One read: the small Action. The gibibyte and the Command never.
    assert_eq!(store.reads.load(Ordering::SeqCst), reads_before + 1);
    let grown = rss_after.saturating_sub(rss_before);
    eprintln!("VmRSS before {rss_before} KiB, after {rss_after} KiB, grown {grown} KiB");
    assert!(grown < 32 << 10, "memory grew by {grown} KiB");
}
