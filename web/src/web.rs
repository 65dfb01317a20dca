//! [`Web`]: what the HTTP side reads (the registry, the health checks, the
//! scheduler and the storage stack, each optional) and the seams it asks
//! (admin policy, storage context), built once and shared by every
//! request.

use std::io::Read;
use std::sync::Arc;

use corral_cas::{DigestFunction, RequestContext, Storage};
use corral_scheduler::Scheduler;
use http::Extensions;
use sha2::{Digest as _, Sha256};

use crate::access::{AdminAction, AdminPolicy, ContextSource, OpenAdmin, PrincipalContext};
use crate::error::PageError;
use crate::health::Health;
use crate::metrics::Metrics;

/// The HTTP side's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: Metrics,
    health: Health,
    scheduler: Option<Arc<Scheduler>>,
    storage: Option<Storage>,
    admin: Arc<dyn AdminPolicy>,
    contexts: Arc<dyn ContextSource>,
    grpc_url: Option<String>,
    pages: bool,
    /// Signs admin confirmations, so that another site cannot post one.
    secret: [u8; 32],
}

/// Builds a [`Web`]; every part but the registry is optional.
pub struct WebBuilder {
    inner: Inner,
}

impl Web {
    /// Starts with `metrics` only: `/metrics` and `/healthz`.
    pub fn builder(metrics: Metrics) -> WebBuilder {
        WebBuilder {
            inner: Inner {
                metrics,
                health: Health::default(),
                scheduler: None,
                storage: None,
                admin: Arc::new(OpenAdmin),
                contexts: Arc::new(PrincipalContext),
                grpc_url: None,
                pages: true,
                secret: secret(),
            },
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn health(&self) -> &Health {
        &self.inner.health
    }

    pub(crate) fn pages(&self) -> bool {
        self.inner.pages
    }

    /// The scheduler, or a 404 page saying this server runs none.
    pub(crate) fn scheduler(&self) -> Result<&Arc<Scheduler>, PageError> {
        self.inner
            .scheduler
            .as_ref()
            .ok_or_else(|| PageError::not_found("this server runs no scheduler (execution is off)"))
    }

    /// The scheduler, if there is one.
    pub(crate) fn scheduler_opt(&self) -> Option<&Arc<Scheduler>> {
        self.inner.scheduler.as_ref()
    }

    /// The storage stack, or a 404 page.
    pub(crate) fn storage(&self) -> Result<&Storage, PageError> {
        self.inner
            .storage
            .as_ref()
            .ok_or_else(|| PageError::not_found("this server serves no storage"))
    }

    /// The URL clients reach the gRPC services at, for command lines.
    pub(crate) fn grpc_url(&self) -> &str {
        self.inner
            .grpc_url
            .as_deref()
            .unwrap_or("http://127.0.0.1:8980")
    }

    /// The caller's storage context for `instance`.
    pub(crate) fn context(
        &self,
        extensions: &Extensions,
        instance: &str,
        function: DigestFunction,
    ) -> Result<RequestContext, PageError> {
        self.inner
            .contexts
            .context(extensions, instance, function)
            .map_err(PageError::forbidden)
    }

    /// Records an admin action that was taken, for the audit log.
    pub(crate) fn taken(&self, extensions: &Extensions, action: &AdminAction, instance: &str) {
        self.inner.admin.taken(extensions, action, instance);
    }

    /// Whether the caller may take `action`, which concerns `instance`.
    pub(crate) fn authorize(
        &self,
        extensions: &Extensions,
        action: &AdminAction,
        instance: &str,
    ) -> Result<(), PageError> {
        self.inner
            .admin
            .authorize(extensions, action, instance)
            .map_err(PageError::forbidden)
    }

    /// The token a confirmation form carries for `action`.
    pub(crate) fn token(&self, action: &AdminAction) -> String {
        let mut h = Sha256::new();
        h.update(self.inner.secret);
        h.update(action.verb().as_bytes());
        h.update([0]);
        h.update(action.target().as_bytes());
        hex::encode(h.finalize())
    }
}

impl WebBuilder {
    /// Pages about this scheduler's queues, workers and operations.
    pub fn scheduler(mut self, scheduler: Arc<Scheduler>) -> Self {
        self.inner.health = std::mem::take(&mut self.inner.health)
            .check("scheduler", || Box::pin(async { Ok(()) }));
        self.inner.scheduler = Some(scheduler);
        self
    }

    /// Pages about this storage stack's blobs and action results; its CAS
    /// is also a readiness check.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.inner.health = std::mem::take(&mut self.inner.health).storage(storage.cas.clone());
        self.inner.storage = Some(storage);
        self
    }

    /// Who may take admin actions (default: [`OpenAdmin`]; servers use
    /// [`crate::AuthorizedAdmin`]).
    pub fn admin(mut self, policy: Arc<dyn AdminPolicy>) -> Self {
        self.inner.admin = policy;
        self
    }

    /// Under whose identity pages read storage (default:
    /// [`PrincipalContext`], the authenticated caller).
    pub fn contexts(mut self, contexts: Arc<dyn ContextSource>) -> Self {
        self.inner.contexts = contexts;
        self
    }

    /// The gRPC URL shown in `corral runner exec --remote …` lines.
    pub fn grpc_url(mut self, url: impl Into<String>) -> Self {
        self.inner.grpc_url = Some(url.into());
        self
    }

    /// Whether to serve the pages at all (`/metrics` and health always).
    pub fn pages(mut self, on: bool) -> Self {
        self.inner.pages = on;
        self
    }

    /// An extra readiness check.
    pub fn ready_check<F>(mut self, name: &str, check: F) -> Self
    where
        F: Fn() -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.inner.health = std::mem::take(&mut self.inner.health).check(name, check);
        self
    }

    /// The finished state.
    pub fn build(self) -> Web {
        Web {
            inner: Arc::new(self.inner),
        }
    }
}

/// 32 unpredictable bytes: from the kernel, else (never seen on Linux)
/// from the clock and the process id, which still differ per process.
fn secret() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        tracing::warn!(
            "cannot read /dev/urandom; admin confirmations are signed with a weaker key"
        );
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&Sha256::digest(seed.as_bytes()));
    }
    bytes
}
