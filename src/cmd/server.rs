//! `corral server`: the client-facing REAPI services on one port.
//!
//! Storage (Capabilities, CAS, ByteStream, ActionCache over the storage
//! stack `corral_cas::factory` builds from `[cas]` and `[action_cache]`;
//! by default disk stores under `--data`), the Remote Asset services
//! (`[asset]`, docs/asset.md) and, unless the config turns it
//! off, execution (the scheduler's Execution and Operations services and
//! the worker protocol).
//! Settings come from flags and, optionally, a TOML file; a flag wins over
//! the file. [`start`] is shared with `corral up`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use corral_cas::service::Services;
use corral_scheduler::{Scheduler, SchedulerConfig, SystemClock};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::listen;
use super::security::Security;
use super::worker_listener::{self, WorkersConfig};
use tokio::task::JoinHandle;

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
    /// evicted beyond it. Default: what the store holds plus 90 % of the
    /// free space of its file system, measured at start. Sets `[cas]
    /// max_cas_bytes`.
    #[arg(long)]
    max_cas_bytes: Option<u64>,
    /// TOML configuration file (see docs/storage.md).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The server's TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` overrides it.
    pub listen: Option<SocketAddr>,
    /// Data directory; `--data` overrides it.
    pub data: Option<PathBuf>,
    /// Serve Execution, Operations and the worker protocol. Default true;
    /// false makes a storage-only server.
    pub execution: bool,
    /// Storage settings (`[cas]` table and its sub-tables).
    pub cas: corral_cas::Config,
    /// The action cache's backend (`[action_cache]` table).
    pub action_cache: corral_cas::ActionCacheSpec,
    /// Scheduler settings (`[scheduler]` table, docs/scheduler.md).
    pub scheduler: SchedulerConfig,
    /// Where workers connect (`[workers]` table), when execution is on.
    pub workers: WorkersConfig,
    /// TLS for the client port (`[tls]` table, docs/security.md). Off by
    /// default; required to listen beyond loopback.
    pub tls: corral_tls::TlsServerConfig,
    /// Authentication, the tenancy policy and the audit log (`[auth]`,
    /// docs/security.md). None by default: the zero-config local farm,
    /// which must stay on loopback.
    pub auth: corral_auth::config::AuthConfig,
    /// The Remote Asset services (`[asset]` table, docs/asset.md).
    pub asset: corral_asset::AssetConfig,
    /// Pages, `/metrics` and health over HTTP (`[http]` table,
    /// docs/observability.md); by default on the gRPC port.
    pub http: corral_web::HttpConfig,
    /// OpenTelemetry trace export (`[tracing]` table,
    /// docs/observability.md). Off by default.
    pub tracing: corral_web::TracingConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: None,
            data: None,
            execution: true,
            cas: corral_cas::Config::default(),
            action_cache: corral_cas::ActionCacheSpec::default(),
            scheduler: SchedulerConfig::default(),
            workers: WorkersConfig::default(),
            tls: corral_tls::TlsServerConfig::default(),
            auth: corral_auth::config::AuthConfig::default(),
            asset: corral_asset::AssetConfig::default(),
            http: corral_web::HttpConfig::default(),
            tracing: corral_web::TracingConfig::default(),
        }
    }
}

pub fn load_config(path: &Path) -> anyhow::Result<ServerConfig> {
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
    runtime.block_on(async {
        let server = start(listen, &data, config).await?;
        // One line on stdout, once the socket accepts connections: scripts
        // and tests wait for it and read the port from it.
        println!("corral server listening on http://{}", server.addr);
        if let Some(url) = &server.worker_url {
            println!("corral server: workers connect with --scheduler {url}");
        }
        shutdown_signal().await;
        server.stop().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A server started by [`start`].
pub struct RunningServer {
    /// The bound address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The scheduler, when execution is on.
    pub scheduler: Option<Arc<Scheduler>>,
    /// What workers pass as `--scheduler`, when execution is on.
    pub worker_url: Option<String>,
    /// The registry `/metrics` shows (a worker in this process adds to it).
    pub metrics: corral_web::Metrics,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// The trace export, flushed at [`RunningServer::stop`].
    traces: Option<corral_web::TraceExport>,
}

impl RunningServer {
    /// Stops accepting and lets running calls finish, but not forever: a
    /// client that keeps its connection open must not hold the process.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut task in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(joined) => joined.context("server task")?.context("serving")?,
                Err(_) => {
                    tracing::warn!(
                        grace = ?SHUTDOWN_GRACE,
                        "connections still open after the grace period; closing them"
                    );
                    task.abort();
                }
            }
        }
        tracing::info!("server shut down");
        if let Some(traces) = self.traces {
            // Flushing blocks until the collector took the last batch.
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        Ok(())
    }
}

/// Builds the storage stack (relative paths under `data`), the services,
/// and serves them on `listen` in a background task.
pub async fn start(
    listen: SocketAddr,
    data: &Path,
    config: ServerConfig,
) -> anyhow::Result<RunningServer> {
    let tls = listen::server_tls(&config.tls, "tls")?;
    let mut auth = config.auth;
    config.workers.default_authentication(&mut auth);
    let security = Security::load(auth, data)?;
    listen::check_exposure(listen, tls.is_some(), security.has_policy)?;
    if config.execution {
        // The same rule for the workers' listener, before anything is built.
        config.workers.address(data)?;
    }
    let traces = super::export_traces(&config.tracing)?;
    let mut observability = corral_web::Observability::counting(config.http.metrics());
    observability.trace_rpcs(traces.is_some());
    let evictions = Some(observability.evictions());
    let storage =
        corral_cas::factory::build_observed(&config.cas, &config.action_cache, data, evictions)
            .await
            .context("building the storage stack ([cas], [action_cache])")?;
    let storage = observability.instrument(security.confine(storage, data)?);
    let http_storage = storage.clone();
    let services =
        Services::with_authorization(config.cas, storage.clone(), security.authorization.clone());
    let mut routes = tonic::service::RoutesBuilder::default();
    services.add_to(&mut routes);
    corral_asset::AssetServices::build(&config.asset, storage.cas.clone(), data)
        .await
        .context("building the asset services ([asset])")?
        .with_authorization(security.authorization.clone())
        .add_to(&mut routes);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let stop = CancellationToken::new();
    security.reload_on_sighup(stop.clone());
    let mut tasks = Vec::new();
    let (scheduler, worker_url) = if config.execution {
        let worker_address = config.workers.address(data)?;
        let worker_tls = config.workers.server_tls(&worker_address)?;
        let scheduler = Scheduler::with_tenancy(
            config.scheduler,
            storage.cas,
            storage.action_cache,
            Arc::new(SystemClock::new()),
            security.scheduler_tenancy(),
            security.authorization.clone(),
        )
        .context("scheduler configuration")?;
        services.set_execution_capabilities(Some(scheduler.execution_capabilities()));
        scheduler.add_to(&mut routes);
        let mut worker_routes = tonic::service::RoutesBuilder::default();
        scheduler.add_worker_service_to(&mut worker_routes);
        services.add_worker_storage_to(&mut worker_routes);
        let workers = worker_listener::serve(
            &worker_address,
            worker_tls.as_ref(),
            security.workers.clone(),
            worker_routes.routes(),
            stop.clone(),
        )
        .await?;
        tasks.push(workers.task);
        scheduler.spawn_ticker();
        observability.watch_scheduler(&scheduler, &config.http, addr);
        (Some(scheduler), Some(workers.url))
    } else {
        (None, None)
    };

    let web = observability.web(
        &http_storage,
        scheduler.as_ref(),
        &security.authorization,
        &config.http,
        addr,
    );
    let routes = observability.routes(routes.routes(), &web, &config.http);
    if let Some(http_listen) = config.http.listen {
        // The same protection as the client port: TLS and the policy's
        // authentication, and no plaintext or open listener off loopback.
        listen::check_exposure(http_listen, tls.is_some(), security.has_policy)
            .context("[http] listen")?;
        let http_listener = tokio::net::TcpListener::bind(http_listen)
            .await
            .with_context(|| format!("[http] listen: listening on {http_listen}"))?;
        let bound = http_listener
            .local_addr()
            .context("[http] listen: reading the bound address")?;
        tracing::info!(%bound, "serving HTTP (pages, metrics, health)");
        tasks.push(listen::spawn(
            http_listener,
            tls.as_ref(),
            security.clients.clone(),
            corral_web::Observability::listener_routes(&web),
            stop.clone(),
        ));
    }
    tasks.push(listen::spawn(
        listener,
        tls.as_ref(),
        security.clients.clone(),
        routes,
        stop.clone(),
    ));
    tracing::info!(%addr, data = %data.display(), workers = ?worker_url, "serving");
    Ok(RunningServer {
        addr,
        scheduler,
        worker_url,
        metrics: observability.metrics,
        stop,
        tasks,
        traces,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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
