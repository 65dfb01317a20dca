//! Where workers connect: the `[workers]` table of `corral server` and
//! `corral up`.
//!
//! Workers are principals of their own. The worker protocol (and the CAS
//! calls workers make) are served on a listener apart from the client
//! port, so no build client can register as a worker and hand the farm
//! forged results. By default it is a UNIX socket in a directory only the
//! server's user can enter: the kernel then vouches for every peer.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
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
    /// with `DATA/run` open to the server's user only. A TCP address must
    /// be loopback.
    pub listen: Option<String>,
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
            bail!(
                "[workers] listen = {listen:?} is not a loopback address: workers on other \
                 machines would reach the worker protocol unauthenticated; use a UNIX socket \
                 (unix:PATH) or a loopback address"
            );
        }
        Ok(WorkerAddress::Tcp(addr))
    }
}

/// The workers' listener, serving until the token is cancelled.
pub struct WorkerListener {
    /// What a worker passes as `--scheduler`.
    pub url: String,
    /// The serving task.
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Binds `address` and serves `routes` on it until `stop` is cancelled.
pub async fn serve(
    address: &WorkerAddress,
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
            Ok(WorkerListener {
                url: format!("http://{bound}"),
                task: super::listen::spawn(listener, None, authenticate, routes, stop),
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
    fn a_non_loopback_address_is_refused_naming_it() {
        let config = WorkersConfig {
            listen: Some("0.0.0.0:8981".into()),
        };
        let e = config.address(Path::new("/d")).unwrap_err().to_string();
        assert!(e.contains("0.0.0.0:8981") && e.contains("loopback"), "{e}");
    }

    #[test]
    fn loopback_and_relative_sockets_are_taken() {
        let tcp = WorkersConfig {
            listen: Some("127.0.0.1:0".into()),
        };
        assert!(matches!(
            tcp.address(Path::new("/d")).unwrap(),
            WorkerAddress::Tcp(_)
        ));
        let unix = WorkersConfig {
            listen: Some("unix:w.sock".into()),
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
