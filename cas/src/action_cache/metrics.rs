//! The metrics layer of the action-cache stack: hits, misses and updates,
//! counted on top of every other layer (a hit here is what a client was
//! served: complete, with provenance checked).
//!
//! Like the CAS's ([`crate::store::metrics`]), the counters are registered
//! into a `prometheus_client` registry owned by whoever exposes them; the
//! labels are a closed set (the result), never an instance name or digest.

use std::sync::Arc;

use async_trait::async_trait;
use corral_proto::reapi;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::ActionCache;
use crate::context::RequestContext;
use crate::digest::Digest;
use crate::error::Result;

/// The action-cache counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ActionCacheMetrics {
    hit: Counter,
    miss: Counter,
    lookup_error: Counter,
    updated: Counter,
    update_error: Counter,
}

impl ActionCacheMetrics {
    /// New counters, registered in `registry` under `corral_action_cache_*`.
    pub fn register(registry: &mut Registry) -> ActionCacheMetrics {
        let lookups = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let updates = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let m = ActionCacheMetrics {
            hit: lookups.get_or_create_owned(&[("result", "hit")]),
            miss: lookups.get_or_create_owned(&[("result", "miss")]),
            lookup_error: lookups.get_or_create_owned(&[("result", "error")]),
            updated: updates.get_or_create_owned(&[("result", "ok")]),
            update_error: updates.get_or_create_owned(&[("result", "error")]),
        };
        registry.register(
            "corral_action_cache_lookups",
            "GetActionResult lookups by result (hit: a complete result was served; miss; error)",
            lookups,
        );
        registry.register(
            "corral_action_cache_updates",
            "Action results written (by clients and by the scheduler), by result (ok, error)",
            updates,
        );
        m
    }
}

/// Counts lookups and updates of the action cache below.
pub struct MeteredActionCache {
    inner: Arc<dyn ActionCache>,
    metrics: ActionCacheMetrics,
}

impl MeteredActionCache {
    /// Counts calls to `inner` into `metrics`.
    pub fn new(inner: Arc<dyn ActionCache>, metrics: ActionCacheMetrics) -> Self {
        MeteredActionCache { inner, metrics }
    }
}

#[async_trait]
impl ActionCache for MeteredActionCache {
    async fn get(
        &self,
        ctx: &RequestContext,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>> {
        let result = self.inner.get(ctx, action).await;
        match &result {
            Ok(Some(_)) => self.metrics.hit.inc(),
            Ok(None) => self.metrics.miss.inc(),
            Err(_) => self.metrics.lookup_error.inc(),
        };
        result
    }

    async fn update(
        &self,
        ctx: &RequestContext,
        action: &Digest,
        result: reapi::ActionResult,
    ) -> Result<()> {
        let outcome = self.inner.update(ctx, action, result).await;
        match &outcome {
            Ok(()) => self.metrics.updated.inc(),
            Err(_) => self.metrics.update_error.inc(),
        };
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;
    use crate::MemoryActionCache;

    #[tokio::test]
    async fn counts_hits_misses_and_updates() {
        let mut registry = Registry::default();
        let metrics = ActionCacheMetrics::register(&mut registry);
        let ac = MeteredActionCache::new(Arc::new(MemoryActionCache::new()), metrics);
        let ctx = RequestContext::internal("", DigestFunction::Sha256);
        let action = Digest::of_bytes(DigestFunction::Sha256, b"an action");
        assert!(ac.get(&ctx, &action).await.unwrap().is_none());
        ac.update(&ctx, &action, reapi::ActionResult::default())
            .await
            .unwrap();
        assert!(ac.get(&ctx, &action).await.unwrap().is_some());
        assert!(ac.get(&ctx, &action).await.unwrap().is_some());

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("corral_action_cache_lookups_total{result=\"hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("corral_action_cache_lookups_total{result=\"miss\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corral_action_cache_lookups_total{result=\"error\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("corral_action_cache_updates_total{result=\"ok\"} 1"),
            "{text}"
        );
    }
}
