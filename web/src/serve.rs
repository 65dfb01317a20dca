//! Serving the HTTP side on a listener of its own: `[http] listen` of a
//! server, or a standalone worker's `metrics_listen`.

use std::future::Future;
use std::net::SocketAddr;

use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::web::Web;

/// Binds `addr` and serves `router` on it until `stop` resolves; returns
/// the bound address (the real port when 0 was asked for).
pub async fn spawn(
    addr: SocketAddr,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("listening for HTTP on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(%bound, error = %e, "the HTTP listener stopped");
        }
    });
    tracing::info!(%bound, "serving HTTP (metrics, health)");
    Ok((bound, task))
}

/// `/metrics`, `/healthz` and `/readyz` of `metrics` alone on `addr`: a
/// standalone worker's `metrics_listen`.
pub async fn metrics_only(
    addr: SocketAddr,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let web = Web::builder(metrics).pages(false).build();
    spawn(addr, crate::router::router(web), stop).await
}
