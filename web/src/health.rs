//! `/healthz` and `/readyz` for process supervisors and Kubernetes.
//!
//! `/healthz` answers 200 whenever the process serves HTTP at all: it is
//! alive. `/readyz` answers 200 only when every readiness check passes
//! within [`CHECK_TIMEOUT`] (the storage answers, a scheduler is there),
//! else 503 naming what failed; a load balancer sends no clients to a
//! server that is not ready.

use std::sync::Arc;
use std::time::Duration;

use corral_cas::{BlobStore, BoundedStore, Digest, DigestFunction, RequestContext};
use futures::future::BoxFuture;

/// How long one readiness check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The named readiness checks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<(String, Check)>,
}

impl Health {
    /// Adds a check named `name`.
    pub fn check<F>(mut self, name: &str, check: F) -> Health
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks.push((name.to_string(), Arc::new(check)));
        self
    }

    /// Adds a check that the CAS answers a FindMissingBlobs.
    pub fn storage(self, cas: BoundedStore) -> Health {
        self.check("storage", move || {
            let cas = cas.clone();
            Box::pin(async move {
                let probe = Digest::of_bytes(DigestFunction::Sha256, b"corral readiness probe");
                let ctx = RequestContext::internal("", DigestFunction::Sha256);
                cas.find_missing(&ctx, &[probe])
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("the CAS did not answer: {e}"))
            })
        })
    }

    /// Runs every check; `Ok` lists them, `Err` says which failed and why.
    pub async fn ready(&self) -> Result<String, String> {
        let mut report = String::new();
        let mut failed = false;
        for (name, check) in &self.checks {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            match outcome {
                Ok(()) => report.push_str(&format!("{name}: ok\n")),
                Err(e) => {
                    failed = true;
                    report.push_str(&format!("{name}: {e}\n"));
                }
            }
        }
        if failed {
            Err(report)
        } else {
            report.push_str("ready\n");
            Ok(report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_only_when_every_check_passes() {
        let storage = corral_cas::Storage::in_memory();
        let health = Health::default().storage(storage.cas);
        assert_eq!(health.ready().await.unwrap(), "storage: ok\nready\n");
        let failing = health.check("scheduler", || Box::pin(async { Err("stopped".into()) }));
        let report = failing.ready().await.unwrap_err();
        assert!(report.contains("storage: ok"), "{report}");
        assert!(report.contains("scheduler: stopped"), "{report}");
    }
}
