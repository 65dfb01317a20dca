//! The process's one metrics registry and its exposition at `/metrics`.
//!
//! Each crate defines the counters it moves where it moves them
//! (`corral_cas::store::metrics`, `corral_scheduler::metrics`,
//! `corral_worker::WorkerMetrics`, [`crate::rpc`]) and registers them
//! into a `prometheus_client` [`Registry`] it is handed; this crate owns
//! the registry, shared by everything in the process (in `corral up` the
//! server and the worker), and writes it in the Prometheus text format
//! (0.0.4), which every Prometheus and `promtool` read.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The shared registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding the process's own series: `corral_build_info`
    /// and `corral_start_time_seconds`.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register(
            "corral_build",
            "The running Corral's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let started = Gauge::<i64>::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        started.set(now);
        registry.register(
            "corral_start_time_seconds",
            "When this process started, in seconds since the epoch",
            started,
        );
        Metrics {
            registry: Arc::new(RwLock::new(registry)),
        }
    }

    /// Registers metrics: `add` gets the registry and returns what the
    /// caller keeps (its counters).
    pub fn register<T>(&self, add: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self.registry.write().unwrap_or_else(|p| p.into_inner());
        add(&mut registry)
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        if let Err(e) = prometheus_text::encode(&mut text, &registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_are_exposed_with_the_process_ones() {
        let metrics = Metrics::new();
        let c: Counter = metrics.register(|r| {
            let c = Counter::default();
            r.register("corral_test_things", "Things", c.clone());
            c
        });
        c.inc_by(3);
        let text = metrics.encode();
        assert!(
            text.contains("# TYPE corral_test_things_total counter"),
            "{text}"
        );
        assert!(text.contains("corral_test_things_total 3"), "{text}");
        assert!(text.contains("corral_build_info{version=\""), "{text}");
        assert!(text.contains("corral_start_time_seconds "), "{text}");
    }
}
