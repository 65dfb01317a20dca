//! Where workers connect: the `[workers]` table of `corral server` and
//! `corral up`.
//!
//! Workers are principals of their own. The worker protocol (and the CAS
//! calls workers make) are served on a listener apart from the client
//! port, so no build client can register as a worker and hand the farm
//! forged results. By default it is a UNIX socket in a directory only the
//! server's user can enter: the kernel then vouches for every peer.
//! Workers on other machines connect over TCP with TLS and client
//! certificates required (`[workers.tls]`); the certificate names the
//! worker, and the policy's `[[workers]]` entries say which names may
//! serve. A worker address beyond loopback without that refuses to start.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use corral_tls::{ClientAuth, ServerTls, TlsServerConfig};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::authenticate::Authenticate;

/// The longest path a UNIX socket address holds (`sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The `[workers]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// `unix:/PATH` or `HOST:PORT`. Default: `unix:DATA/run/workers.sock`,
    /// with `DATA/run` open to the server's user only. A TCP address
    /// beyond loopback needs `[workers.tls]` with `client_ca` (client
    /// certificates required).
    pub listen: Option<String>,
    /// TLS of a TCP workers' listener (`[workers.tls]`, the same fields as
    /// `[tls]`): `cert`, `key`, and `client_ca` so that every worker
    /// proves who it is with a certificate. Without
    /// `[auth.worker_authentication]`, workers are then named by their
    /// certificate (mTLS). Default: none (plaintext, loopback only).
    pub tls: TlsServerConfig,
}

/// A parsed `[workers] listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerAddress {
    /// A UNIX socket.
    Unix(PathBuf),
    /// A TCP address (loopback only).
    Tcp(SocketAddr),
}

impl WorkersConfig {
    /// Where to listen; relative socket paths are under `data`.
    pub fn address(&self, data: &Path) -> anyhow::Result<WorkerAddress> {
        let Some(listen) = &self.listen else {
            return Ok(WorkerAddress::Unix(data.join("run").join("workers.sock")));
        };
        if let Some(path) = listen.strip_prefix("unix:") {
            return Ok(WorkerAddress::Unix(data.join(path)));
        }
        let addr: SocketAddr = listen.parse().with_context(|| {
            format!("[workers] listen = {listen:?}: expected unix:PATH or HOST:PORT")
        })?;
        if !addr.ip().is_loopback() {
            let missing = self.missing_for_network();
            if !missing.is_empty() {
                bail!(
                    "[workers] listen = {listen:?} is not a loopback address, and workers on \
                     other machines must prove who they are with a client certificate; \
                     missing: {}; or use a UNIX socket (unix:PATH) or a loopback address",
                    missing.join("; ")
                );
            }
        }
        Ok(WorkerAddress::Tcp(addr))
    }

    /// The settings a worker listener beyond loopback lacks.
    fn missing_for_network(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.tls.is_enabled() {
            missing.push("[workers.tls] cert and key (TLS for the workers' listener)");
        }
        if self.tls.client_ca.is_none() {
            missing.push("[workers.tls] client_ca (the CA of the workers' certificates)");
        } else if self.tls.client_auth() != ClientAuth::Required {
            missing.push("[workers.tls] client_auth = \"required\" (the default with client_ca)");
        }
        missing
    }

    /// The TLS of the workers' listener, when `[workers.tls]` turns it on;
    /// it is for TCP only (on a UNIX socket the kernel names the peer).
    pub fn server_tls(&self, address: &WorkerAddress) -> anyhow::Result<Option<ServerTls>> {
        if matches!(address, WorkerAddress::Unix(_)) && self.tls != TlsServerConfig::default() {
            bail!(
                "[workers.tls] is set, but [workers] listen is a UNIX socket: TLS is for a \
                 TCP workers' listener (listen = \"HOST:PORT\")"
            );
        }
        super::listen::server_tls(&self.tls, "workers.tls")
    }

    /// With client certificates on the workers' listener and no
    /// `[auth.worker_authentication]` method, workers are named by their
    /// certificates: peer credentials (the default) mean nothing over TCP.
    pub fn default_authentication(&self, auth: &mut corral_auth::config::AuthConfig) {
        if self.tls.is_enabled()
            && self.tls.client_auth() != ClientAuth::None
            && !auth.worker_authentication.has_methods()
        {
            auth.worker_authentication.mtls = Some(corral_auth::config::MtlsConfig::default());
        }
    }
}

/// The workers' listener, serving until the token is cancelled.
pub struct WorkerListener {
    /// What a worker passes as `--scheduler`.
    pub url: String,
    /// The serving task.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `address` and serves `routes` on it (with `tls`, for TCP) until
/// `stop` is cancelled.
pub async fn serve(
    address: &WorkerAddress,
    tls: Option<&ServerTls>,
    authenticate: Authenticate,
    routes: tonic::service::Routes,
    stop: CancellationToken,
) -> anyhow::Result<WorkerListener> {
    match address {
        WorkerAddress::Unix(path) => {
            let listener = bind_unix(path).await?;
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let shutdown = async move { stop.cancelled().await };
            let router = corral_cas::service::server_builder()
                .layer(authenticate)
                .add_routes(routes);
            Ok(WorkerListener {
                url: format!("unix:{}", path.display()),
                task: tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown)),
            })
        }
        WorkerAddress::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("[workers] listening on {addr}"))?;
            let bound = listener
                .local_addr()
                .context("reading the workers' address")?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            Ok(WorkerListener {
                url: format!("{scheme}://{bound}"),
                task: super::listen::spawn(listener, tls, authenticate, routes, stop),
            })
        }
    }
}

/// Binds a UNIX socket at `path`, in a directory made private when it is
/// the default one, replacing a stale socket but never one a running
/// server still answers on.
async fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "[workers] socket path {} is {} bytes long; a UNIX socket path holds at most \
             {MAX_SOCKET_PATH}: choose a shorter data directory or set [workers] listen",
            path.display(),
            path.as_os_str().len()
        );
    }
    let dir = path
        .parent()
        .with_context(|| format!("[workers] socket path {} has no directory", path.display()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the workers' socket directory {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("closing {} to other users", dir.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "another server is serving workers on {} (is this data directory in use?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("[workers] listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("closing {} to other users", path.display()))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_a_socket_under_the_data_directory() {
        let address = WorkersConfig::default().address(Path::new("/d")).unwrap();
        assert_eq!(address, WorkerAddress::Unix("/d/run/workers.sock".into()));
    }

    #[test]
    fn a_non_loopback_address_is_refused_naming_what_is_missing() {
        let mut config = WorkersConfig {
            listen: Some("0.0.0.0:8981".into()),
            ..WorkersConfig::default()
        };
        let e = config.address(Path::new("/d")).unwrap_err().to_string();
        assert!(e.contains("0.0.0.0:8981") && e.contains("loopback"), "{e}");
        assert!(
            e.contains("[workers.tls] cert") && e.contains("client_ca"),
            "{e}"
        );
        // TLS without client certificates is not enough either.
        config.tls = toml::from_str("cert = 'c.pem'\nkey = 'k.pem'").unwrap();
        let e = config.address(Path::new("/d")).unwrap_err().to_string();
        assert!(
            !e.contains("cert and key") && e.contains("client_ca"),
            "{e}"
        );
        config.tls = toml::from_str(
            "cert = 'c.pem'\nkey = 'k.pem'\nclient_ca = 'ca.pem'\nclient_auth = 'optional'",
        )
        .unwrap();
        let e = config.address(Path::new("/d")).unwrap_err().to_string();
        assert!(e.contains("client_auth"), "{e}");
        config.tls.client_auth = None;
        assert!(matches!(
            config.address(Path::new("/d")).unwrap(),
            WorkerAddress::Tcp(_)
        ));
    }

    #[test]
    fn client_certificates_name_workers_unless_told_otherwise() {
        let config = WorkersConfig {
            listen: Some("0.0.0.0:8981".into()),
            tls: toml::from_str("cert = 'c.pem'\nkey = 'k.pem'\nclient_ca = 'ca.pem'").unwrap(),
        };
        let mut auth = corral_auth::config::AuthConfig::default();
        config.default_authentication(&mut auth);
        assert!(auth.worker_authentication.mtls.is_some());
        let mut auth: corral_auth::config::AuthConfig =
            toml::from_str("[worker_authentication.static_tokens]\nfile = 't'").unwrap();
        config.default_authentication(&mut auth);
        assert!(auth.worker_authentication.mtls.is_none());
        let e = config
            .server_tls(&WorkerAddress::Unix("/d/w.sock".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[workers.tls]") && e.contains("UNIX"), "{e}");
    }

    #[test]
    fn loopback_and_relative_sockets_are_taken() {
        let tcp = WorkersConfig {
            listen: Some("127.0.0.1:0".into()),
            ..WorkersConfig::default()
        };
        assert!(matches!(
            tcp.address(Path::new("/d")).unwrap(),
            WorkerAddress::Tcp(_)
        ));
        let unix = WorkersConfig {
            listen: Some("unix:w.sock".into()),
            ..WorkersConfig::default()
        };
        assert_eq!(
            unix.address(Path::new("/d")).unwrap(),
            WorkerAddress::Unix("/d/w.sock".into())
        );
    }

    #[tokio::test]
    async fn a_socket_in_use_is_not_taken_over_but_a_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("w.sock");
        let first = bind_unix(&path).await.unwrap();
        let mode = std::fs::metadata(dir.path().join("run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let e = bind_unix(&path).await.unwrap_err().to_string();
        assert!(e.contains("another server"), "{e}");
        drop(first);
        bind_unix(&path).await.unwrap();
    }
}
