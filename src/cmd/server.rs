//! `corral server`: the client-facing REAPI services on one port.
//!
//! Today that is the storage half (Capabilities, CAS, ByteStream,
//! ActionCache) over a disk store under `--data`. Settings come from flags
//! and, optionally, a TOML file; a flag wins over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use corral_cas::service::{server_builder, Services};
use corral_cas::{BlobStore, DiskActionCache, DiskStore};
use serde::Deserialize;

/// How long running calls may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Options of `corral server`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8980 (port 0 picks a free one).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the CAS and the action cache (created if missing).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Upper bound on CAS bytes kept on disk; least-recently-used blobs are
    /// evicted beyond it.
    #[arg(long)]
    max_cas_bytes: Option<u64>,
    /// TOML configuration file (see docs/storage.md).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The server's TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    listen: Option<SocketAddr>,
    /// Data directory; `--data` overrides it.
    data: Option<PathBuf>,
    /// Storage settings (`[cas]` table).
    #[serde(default)]
    cas: corral_cas::Config,
}

fn load_config(path: &Path) -> anyhow::Result<ServerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => load_config(path)?,
        None => ServerConfig::default(),
    };
    let listen = args
        .listen
        .or(config.listen)
        .context("no listen address: pass --listen ADDR or set `listen` in the config")?;
    let data = args
        .data
        .or(config.data.take())
        .context("no data directory: pass --data DIR or set `data` in the config")?;
    if let Some(max) = args.max_cas_bytes {
        config.cas.max_cas_bytes = Some(max);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corral-server")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(listen, data, config.cas))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    listen: SocketAddr,
    data: PathBuf,
    cas_config: corral_cas::Config,
) -> anyhow::Result<()> {
    let max_bytes = cas_config.max_cas_bytes();
    let cas_dir = data.join("cas");
    let store = tokio::task::spawn_blocking(move || DiskStore::open(cas_dir, max_bytes))
        .await
        .context("opening the CAS")??;
    let store: Arc<dyn BlobStore> = Arc::new(store);
    let action_cache = Arc::new(
        DiskActionCache::open(data.join("ac"), store.clone())
            .context("opening the action cache")?,
    );
    let services = Services::new(cas_config, store, action_cache);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = server_builder()
        .add_routes(services.routes())
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    // One line on stdout, once the socket accepts connections: scripts and
    // tests wait for it and read the port from it.
    println!("corral server listening on http://{addr}");
    tracing::info!(%addr, data = %data.display(), "serving");
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result.context("serving")?,
        () = shutdown_signal() => {
            // Stop accepting and let running calls finish, but not forever:
            // a client that keeps its connection open must not hold the
            // process.
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result.context("serving")?,
                Err(_) => tracing::warn!(
                    grace = ?SHUTDOWN_GRACE,
                    "connections still open after the grace period; closing them"
                ),
            }
        }
    }
    tracing::info!("shut down");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
