//! What `corral server` and `corral up` wire, gathered so that their own
//! code stays a few lines: the registry with the storage, RPC and
//! scheduler metrics in it, the metered storage stack, the pages' state,
//! and the routes on the gRPC port (and, if configured, on a listener of
//! their own).

use std::net::SocketAddr;
use std::sync::Arc;

use corral_cas::action_cache::metrics::ActionCacheMetrics;
use corral_cas::store::metrics::{instrument, EvictionMetrics, StoreMetrics};
use corral_cas::{Authorization, Storage};
use corral_scheduler::metrics::SchedulerMetrics;
use corral_scheduler::Scheduler;
use tonic::service::Routes;

use crate::access::{AuthorizedAdmin, NoAdmin};
use crate::config::HttpConfig;
use crate::dispatch::same_port_with;
use crate::metrics::Metrics;
use crate::router::router;
use crate::rpc::{RpcLayer, RpcMetrics};
use crate::web::Web;

/// The process's metrics and the layers that feed them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Observability {
    /// The registry `/metrics` shows; a worker in the same process
    /// registers into it too.
    pub metrics: Metrics,
    store: StoreMetrics,
    action_cache: ActionCacheMetrics,
    rpc: RpcMetrics,
    /// `[http] metrics`: whether the layers count at all.
    counting: bool,
    /// Whether every gRPC call gets a span (trace export is on).
    rpc_spans: bool,
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    /// A registry with the storage and RPC metrics registered.
    pub fn new() -> Observability {
        Self::counting(true)
    }

    /// [`Observability::new`], or with no metrics layers when `counting`
    /// is false (`[http] metrics = false`).
    pub fn counting(counting: bool) -> Observability {
        let metrics = Metrics::new();
        let (store, action_cache, rpc) = metrics.register(|r| {
            (
                StoreMetrics::register(r),
                ActionCacheMetrics::register(r),
                RpcMetrics::register(r),
            )
        });
        Observability {
            metrics,
            store,
            action_cache,
            rpc,
            counting,
            rpc_spans: false,
        }
    }

    /// Makes one span per gRPC call on the routes [`Observability::routes`]
    /// builds from now on: for trace export (`[tracing] otlp_endpoint`).
    pub fn trace_rpcs(&mut self, on: bool) {
        self.rpc_spans = on;
    }

    /// What the disk stores count their evictions into
    /// (`corral_cas::factory::build_observed`).
    pub fn evictions(&self) -> EvictionMetrics {
        self.store.evictions()
    }

    /// `storage` with the metrics layers on top.
    pub fn instrument(&self, storage: Storage) -> Storage {
        if !self.counting {
            return storage;
        }
        instrument(storage, &self.store, &self.action_cache)
    }

    /// Counts the scheduler's events and, unless `[http]` turns it off,
    /// links failed responses to their pages at `external_url`.
    pub fn watch_scheduler(&self, scheduler: &Arc<Scheduler>, http: &HttpConfig, addr: SocketAddr) {
        if self.counting {
            self.metrics
                .register(|r| SchedulerMetrics::register(r, scheduler));
        }
        if http.link_failures() {
            scheduler.link_failures(Some(http.external_url(addr)));
        }
    }

    /// The pages' state for this server; admin actions are put to
    /// `authorization` (`admin`, or `operations.cancel` for a cancel).
    pub fn web(
        &self,
        storage: &Storage,
        scheduler: Option<&Arc<Scheduler>>,
        authorization: &Authorization,
        http: &HttpConfig,
        addr: SocketAddr,
    ) -> Web {
        let mut builder = Web::builder(self.metrics.clone())
            .storage(storage.clone())
            .pages(http.pages())
            .grpc_url(format!("http://{addr}"));
        if let Some(s) = scheduler {
            builder = builder.scheduler(s.clone());
        }
        builder = if http.admin() {
            builder.admin(Arc::new(AuthorizedAdmin::new(authorization.clone())))
        } else {
            builder.admin(Arc::new(NoAdmin))
        };
        builder.build()
    }

    /// The gRPC routes, metered, with the HTTP side on the same port
    /// unless `[http] on_grpc_port = false`. Serve them with
    /// `accept_http1(true)`.
    pub fn routes(&self, grpc: Routes, web: &Web, http: &HttpConfig) -> Routes {
        let pages = if http.on_grpc_port() {
            router(web.clone())
        } else {
            axum::Router::new()
        };
        let rpc = RpcLayer {
            metrics: self.counting.then(|| self.rpc.clone()),
            spans: self.rpc_spans,
        };
        same_port_with(grpc, pages, rpc)
    }

    /// The HTTP side alone, for `[http] listen`: the caller serves it
    /// the way it serves the gRPC port (same TLS, same authentication
    /// layer), so pages and admin actions there are put to the same
    /// identity and permissions, and `/metrics` needs the same
    /// credentials. Serve it with `accept_http1(true)`.
    pub fn listener_routes(web: &Web) -> Routes {
        Routes::from(router(web.clone()))
    }
}
