//! Serving a set of routes on a TCP listener, in plaintext or TLS, and the
//! rule that keeps a farm off the network until it is protected.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::authenticate::Authenticate;

/// A serving task.
pub type ServeTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Refuses to expose the client port beyond loopback without TLS and an
/// authentication policy, naming each missing setting. On loopback, a farm
/// with neither is the zero-config farm of `corral up`.
pub fn check_exposure(listen: SocketAddr, tls_on: bool, policy_on: bool) -> anyhow::Result<()> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    let mut missing = Vec::new();
    if !tls_on {
        missing.push("[tls] cert and key (TLS for the client port)");
    }
    if !policy_on {
        missing.push("[auth] policy or policy_file, with [auth.authentication] (who may do what)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "refusing to listen on {listen}: it is not a loopback address, and a farm reachable \
         from the network must be protected; missing: {}",
        missing.join("; ")
    )
}

/// Serves `routes` on `listener` (with TLS when `tls` is given) until `stop`
/// is cancelled, through the layers every Corral listener has.
pub fn spawn(
    listener: tokio::net::TcpListener,
    tls: Option<&corral_tls::ServerTls>,
    authenticate: Authenticate,
    routes: tonic::service::Routes,
    stop: CancellationToken,
) -> ServeTask {
    let shutdown = async move { stop.cancelled().await };
    // HTTP/1 too: browsers and scrapers reach the pages and /metrics on
    // this port (corral-web splits them from gRPC by content type).
    let router = corral_cas::service::server_builder()
        .accept_http1(true)
        .layer(authenticate)
        .add_routes(routes);
    match tls {
        Some(tls) => {
            tokio::spawn(router.serve_with_incoming_shutdown(tls.incoming(listener), shutdown))
        }
        None => tokio::spawn(
            router.serve_with_incoming_shutdown(corral_cas::service::incoming(listener), shutdown),
        ),
    }
}

/// The TLS of a listener from its table, when it turns TLS on.
pub fn server_tls(
    config: &corral_tls::TlsServerConfig,
    table: &str,
) -> anyhow::Result<Option<corral_tls::ServerTls>> {
    if !config.is_enabled() {
        return Ok(None);
    }
    corral_tls::ServerTls::from_config(config)
        .map(Some)
        .with_context(|| format!("[{table}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_nothing_and_the_network_needs_both() {
        let lo: SocketAddr = "127.0.0.1:8980".parse().unwrap();
        check_exposure(lo, false, false).unwrap();
        let any: SocketAddr = "0.0.0.0:8980".parse().unwrap();
        let e = check_exposure(any, false, false).unwrap_err().to_string();
        assert!(
            e.contains("0.0.0.0:8980") && e.contains("[tls]") && e.contains("[auth]"),
            "{e}"
        );
        let e = check_exposure(any, true, false).unwrap_err().to_string();
        assert!(!e.contains("[tls]") && e.contains("[auth]"), "{e}");
        let e = check_exposure(any, false, true).unwrap_err().to_string();
        assert!(e.contains("[tls]") && !e.contains("[auth] policy"), "{e}");
        check_exposure(any, true, true).unwrap();
    }
}
