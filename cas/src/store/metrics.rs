//! The metrics layer of the storage stack: counts what clients and the
//! farm ask of the CAS, without changing any answer.
//!
//! [`StoreMetrics`] holds the counters; [`StoreMetrics::register`] puts
//! them into a `prometheus_client` [`Registry`] that whoever serves
//! `/metrics` owns (corral-web), so this crate needs no HTTP and no
//! knowledge of who exposes them. [`MeteredStore`] is the layer, put on
//! top of a built stack by [`instrument`]. Eviction is counted by the disk
//! store itself ([`EvictionMetrics`], handed to it by the factory), since
//! only it knows what it removed and how long ago that was last used.
//!
//! No label holds a digest, an instance name or anything else a client
//! chooses: labels are the operation and its result, a closed set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{BlobStore, BlobWriter, BoundedStore, ChunkStream};
use crate::action_cache::metrics::{ActionCacheMetrics, MeteredActionCache};
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::factory::Storage;

/// `op` and `result` labels of a lookup.
type LookupLabels = [(&'static str, &'static str); 2];

/// The CAS counters. Cheap to clone: every clone counts into the same
/// series.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    find_missing_hit: Counter,
    find_missing_miss: Counter,
    get_hit: Counter,
    get_miss: Counter,
    read_hit: Counter,
    read_miss: Counter,
    errors: Family<[(&'static str, &'static str); 1], Counter>,
    batch_sizes: Histogram,
    stored_blobs: Counter,
    stored_bytes: Counter,
    read_bytes: Counter,
    evictions: EvictionMetrics,
}

/// What a disk store reports when it evicts: bytes and blobs removed, and
/// how long ago the last removed blob was used, which is the cache's
/// effective retention.
#[derive(Clone, Debug, Default)]
pub struct EvictionMetrics {
    bytes: Counter,
    blobs: Counter,
    last_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl EvictionMetrics {
    /// Counts `victims`, the last of which was used `age` ago.
    pub fn evicted(&self, victims: &[Digest], age: Option<Duration>) {
        if victims.is_empty() {
            return;
        }
        self.blobs.inc_by(victims.len() as u64);
        self.bytes.inc_by(victims.iter().map(Digest::size).sum());
        if let Some(age) = age {
            self.last_age.set(age.as_secs_f64());
        }
    }

    /// Bytes evicted so far (for tests and logs).
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Seconds since the last evicted blob was used, when it was evicted.
    pub fn last_age_seconds(&self) -> f64 {
        self.last_age.get()
    }
}

impl StoreMetrics {
    /// New counters, registered in `registry` under `corral_cas_*`.
    pub fn register(registry: &mut Registry) -> StoreMetrics {
        let lookups = Family::<LookupLabels, Counter>::default();
        let counter = |op, result| lookups.get_or_create_owned(&[("op", op), ("result", result)]);
        let m = StoreMetrics {
            find_missing_hit: counter("find_missing", "hit"),
            find_missing_miss: counter("find_missing", "miss"),
            get_hit: counter("get", "hit"),
            get_miss: counter("get", "miss"),
            read_hit: counter("read", "hit"),
            read_miss: counter("read", "miss"),
            errors: Family::default(),
            batch_sizes: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            stored_blobs: Counter::default(),
            stored_bytes: Counter::default(),
            read_bytes: Counter::default(),
            evictions: EvictionMetrics::default(),
        };
        registry.register(
            "corral_cas_lookups",
            "Blobs looked up in the CAS, by operation (find_missing, get, read) and result (hit: present, miss: absent)",
            lookups,
        );
        registry.register(
            "corral_cas_errors",
            "CAS calls that failed for a reason other than a missing blob, by operation",
            m.errors.clone(),
        );
        registry.register(
            "corral_cas_find_missing_batch_size",
            "Digests per FindMissingBlobs call",
            m.batch_sizes.clone(),
        );
        registry.register(
            "corral_cas_stored_blobs",
            "Blobs written to the CAS (whole or streamed)",
            m.stored_blobs.clone(),
        );
        registry.register(
            "corral_cas_stored_bytes",
            "Bytes written to the CAS",
            m.stored_bytes.clone(),
        );
        registry.register(
            "corral_cas_read_bytes",
            "Bytes read from the CAS (whole blobs and streams)",
            m.read_bytes.clone(),
        );
        for op in ["find_missing", "get", "put", "read", "write"] {
            m.errors.get_or_create_owned(&[("op", op)]);
        }
        m.evictions.register(registry);
        m
    }

    /// The eviction counters, for the disk stores of this stack.
    pub fn evictions(&self) -> EvictionMetrics {
        self.evictions.clone()
    }

    fn error(&self, op: &'static str) {
        self.errors.get_or_create(&[("op", op)]).inc();
    }
}

impl EvictionMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "corral_cas_evicted_bytes",
            "Bytes the disk CAS evicted (least recently used first)",
            self.bytes.clone(),
        );
        registry.register(
            "corral_cas_evicted_blobs",
            "Blobs the disk CAS evicted",
            self.blobs.clone(),
        );
        registry.register(
            "corral_cas_last_evicted_age_seconds",
            "How long before its eviction the last evicted blob was last used: the CAS's effective retention",
            self.last_age.clone(),
        );
    }
}

/// Puts the metrics layers on top of a built stack: the CAS as services
/// and the scheduler see it, and the action cache. What the layers below
/// use internally (the completeness check's lookups) is not counted as a
/// client's call.
pub fn instrument(storage: Storage, cas: &StoreMetrics, ac: &ActionCacheMetrics) -> Storage {
    let metered: Arc<dyn BlobStore> =
        Arc::new(MeteredStore::new(storage.cas.inner().clone(), cas.clone()));
    let action_cache = Arc::new(MeteredActionCache::new(
        storage.action_cache.clone(),
        ac.clone(),
    ));
    Storage {
        cas: BoundedStore::new(metered, storage.cas.limits().clone()),
        action_cache,
        ..storage
    }
}

/// Counts every call it passes to the store below.
pub struct MeteredStore {
    inner: Arc<dyn BlobStore>,
    metrics: StoreMetrics,
}

impl MeteredStore {
    /// Counts calls to `inner` into `metrics`.
    pub fn new(inner: Arc<dyn BlobStore>, metrics: StoreMetrics) -> Self {
        MeteredStore { inner, metrics }
    }
}

#[async_trait]
impl BlobStore for MeteredStore {
    fn keeps_owners(&self) -> bool {
        self.inner.keeps_owners()
    }

    fn restore_owners(&self, owner: super::owners::OwnerId, digests: &[Digest]) {
        self.inner.restore_owners(owner, digests)
    }

    async fn find_missing(&self, ctx: &RequestContext, digests: &[Digest]) -> Result<Vec<Digest>> {
        let m = &self.metrics;
        m.batch_sizes.observe(digests.len() as f64);
        match self.inner.find_missing(ctx, digests).await {
            Ok(missing) => {
                let misses = missing.len() as u64;
                m.find_missing_miss.inc_by(misses);
                m.find_missing_hit
                    .inc_by((digests.len() as u64).saturating_sub(misses));
                Ok(missing)
            }
            Err(e) => {
                m.error("find_missing");
                Err(e)
            }
        }
    }

    async fn get(&self, ctx: &RequestContext, digest: &Digest) -> Result<Bytes> {
        let m = &self.metrics;
        let result = self.inner.get(ctx, digest).await;
        match &result {
            Ok(data) => {
                m.get_hit.inc();
                m.read_bytes.inc_by(data.len() as u64);
            }
            Err(Error::NotFound(_)) => {
                m.get_miss.inc();
            }
            Err(_) => m.error("get"),
        }
        result
    }

    async fn put(&self, ctx: &RequestContext, digest: &Digest, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        let result = self.inner.put(ctx, digest, data).await;
        match &result {
            Ok(()) => {
                self.metrics.stored_blobs.inc();
                self.metrics.stored_bytes.inc_by(len);
            }
            Err(_) => self.metrics.error("put"),
        }
        result
    }

    async fn read(
        &self,
        ctx: &RequestContext,
        digest: &Digest,
        offset: u64,
        limit: Option<u64>,
    ) -> Result<ChunkStream> {
        let m = &self.metrics;
        match self.inner.read(ctx, digest, offset, limit).await {
            Ok(stream) => {
                m.read_hit.inc();
                let bytes = m.read_bytes.clone();
                Ok(stream
                    .inspect(move |chunk| {
                        if let Ok(c) = chunk {
                            bytes.inc_by(c.len() as u64);
                        }
                    })
                    .boxed())
            }
            Err(e) => {
                if matches!(e, Error::NotFound(_)) {
                    m.read_miss.inc();
                } else {
                    m.error("read");
                }
                Err(e)
            }
        }
    }

    async fn write(&self, ctx: &RequestContext, digest: &Digest) -> Result<Box<dyn BlobWriter>> {
        match self.inner.write(ctx, digest).await {
            Ok(inner) => Ok(Box::new(MeteredWriter {
                inner,
                metrics: self.metrics.clone(),
            })),
            Err(e) => {
                self.metrics.error("write");
                Err(e)
            }
        }
    }
}

/// Counts a streamed upload once it is committed.
struct MeteredWriter {
    inner: Box<dyn BlobWriter>,
    metrics: StoreMetrics,
}

#[async_trait]
impl BlobWriter for MeteredWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.inner.write(data).await
    }

    fn committed(&self) -> u64 {
        self.inner.committed()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let bytes = self.inner.committed();
        let metrics = self.metrics;
        let result = self.inner.commit().await;
        match &result {
            Ok(()) => {
                metrics.stored_blobs.inc();
                metrics.stored_bytes.inc_by(bytes);
            }
            Err(_) => metrics.error("write"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;
    use crate::store::{collect, write_all};
    use crate::MemoryStore;

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[tokio::test]
    async fn counts_hits_misses_bytes_and_batch_sizes() {
        let mut registry = Registry::default();
        let metrics = StoreMetrics::register(&mut registry);
        let store = MeteredStore::new(Arc::new(MemoryStore::new()), metrics);
        let ctx = RequestContext::internal("", DigestFunction::Sha256);
        let data = Bytes::from_static(b"hello metrics");
        let d = Digest::of_bytes(DigestFunction::Sha256, &data);
        let absent = Digest::of_bytes(DigestFunction::Sha256, b"absent");

        assert!(store.get(&ctx, &d).await.is_err());
        store.put(&ctx, &d, data.clone()).await.unwrap();
        let big = Bytes::from(vec![7u8; 3000]);
        let big_d = Digest::of_bytes(DigestFunction::Sha256, &big);
        write_all(&store, &ctx, &big_d, big).await.unwrap();
        assert_eq!(store.get(&ctx, &d).await.unwrap(), data);
        let streamed = collect(store.read(&ctx, &big_d, 0, None).await.unwrap(), 3000);
        assert_eq!(streamed.await.unwrap().len(), 3000);
        let missing = store.find_missing(&ctx, &[d, absent, big_d]).await.unwrap();
        assert_eq!(missing, vec![absent]);

        let text = encoded(&registry);
        assert_eq!(
            line(&text, "corral_cas_lookups_total{op=\"get\",result=\"hit\"}"),
            "corral_cas_lookups_total{op=\"get\",result=\"hit\"} 1"
        );
        assert!(text.contains("corral_cas_lookups_total{op=\"get\",result=\"miss\"} 1"));
        assert!(text.contains("corral_cas_lookups_total{op=\"find_missing\",result=\"hit\"} 2"));
        assert!(text.contains("corral_cas_lookups_total{op=\"find_missing\",result=\"miss\"} 1"));
        assert!(text.contains("corral_cas_lookups_total{op=\"read\",result=\"hit\"} 1"));
        assert!(text.contains("corral_cas_stored_blobs_total 2"));
        assert!(
            text.contains("corral_cas_stored_bytes_total 3013"),
            "{text}"
        );
        assert!(text.contains("corral_cas_read_bytes_total 3013"), "{text}");
        assert!(text.contains("corral_cas_find_missing_batch_size_count 1"));
        assert!(text.contains("corral_cas_find_missing_batch_size_sum 3.0"));
        assert!(!text.contains(&d.hash_hex()), "no digest in any label");
    }

    #[tokio::test]
    async fn a_disk_store_reports_what_it_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::DiskStore::open(dir.path(), 250).unwrap();
        let mut registry = Registry::default();
        let metrics = StoreMetrics::register(&mut registry);
        disk.observe_evictions(metrics.evictions());
        let ctx = RequestContext::internal("", DigestFunction::Sha256);
        for i in 0..4u8 {
            let data = Bytes::from(vec![i; 100]);
            let d = Digest::of_bytes(DigestFunction::Sha256, &data);
            disk.put(&ctx, &d, data).await.unwrap();
        }
        // 400 bytes into a 250-byte store: the two oldest went.
        assert_eq!(metrics.evictions().bytes(), 200);
        let age = metrics.evictions().last_age_seconds();
        assert!((0.0..60.0).contains(&age), "{age}");
    }

    #[test]
    fn eviction_counts_and_keeps_the_last_age() {
        let mut registry = Registry::default();
        let m = StoreMetrics::register(&mut registry).evictions();
        let d = |i: u8, size| Digest::new(DigestFunction::Sha256, [i; 32], size);
        m.evicted(&[d(1, 10), d(2, 30)], Some(Duration::from_secs(90)));
        m.evicted(&[], Some(Duration::from_secs(5)));
        assert_eq!(m.bytes(), 40);
        assert_eq!(m.last_age_seconds(), 90.0);
        let text = encoded(&registry);
        assert!(text.contains("corral_cas_evicted_blobs_total 2"), "{text}");
        assert!(
            text.contains("corral_cas_last_evicted_age_seconds 90.0"),
            "{text}"
        );
    }
}
