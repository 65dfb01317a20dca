//! `corral up`: the whole farm on this machine with embedded defaults. A
//! server (CAS, action cache, scheduler) on `127.0.0.1:8980`, and one worker
//! in the same process that starts its runner as a child process (the
//! runner must fork its container helper while single-threaded, which this
//! multi-threaded process no longer is).
//!
//! Data lives under `$XDG_CACHE_HOME/corral` (`~/.cache/corral`, or
//! `/var/cache/corral` for root) unless `--data` says otherwise: `server/`
//! and `worker/` beneath it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use corral_scheduler::SchedulerConfig;
use corral_worker::config::WorkerConfig;
use corral_worker::daemon::{Worker, WorkerSettings};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::server::{self, ServerConfig};

/// How long the worker may take to register after start.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long running actions may take to finish after Ctrl-C or SIGTERM.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Options of `corral up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address the REAPI services listen on.
    #[arg(long, default_value = "127.0.0.1:8980")]
    listen: SocketAddr,
    /// Data directory (default: $XDG_CACHE_HOME/corral; for root without
    /// XDG_CACHE_HOME, /var/cache/corral).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Actions run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
    /// TOML configuration with `[cas]`, `[action_cache]`, `[scheduler]`,
    /// `[workers]`, `[asset]` and `[worker]` tables, each as for `corral
    /// server` and `corral worker`.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// `corral up --config FILE`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UpConfig {
    cas: corral_cas::Config,
    action_cache: corral_cas::ActionCacheSpec,
    scheduler: SchedulerConfig,
    worker: WorkerConfig,
    workers: super::worker_listener::WorkersConfig,
    tls: corral_tls::TlsServerConfig,
    auth: corral_auth::config::AuthConfig,
    asset: corral_asset::AssetConfig,
    http: corral_web::HttpConfig,
    tracing: corral_web::TracingConfig,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config: UpConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
        }
        None => UpConfig::default(),
    };
    let data = match args.data {
        Some(d) => d,
        None => super::defaults::data_dir().context("pass --data DIR")?,
    };
    let mut worker_config = config.worker;
    if args.slots.is_some() {
        worker_config.slots = args.slots;
    }
    let server_config = ServerConfig {
        listen: Some(args.listen),
        data: Some(super::defaults::server_dir(&data)),
        execution: true,
        cas: config.cas,
        action_cache: config.action_cache,
        scheduler: config.scheduler,
        workers: config.workers,
        tls: config.tls,
        auth: config.auth,
        asset: config.asset,
        http: config.http,
        tracing: config.tracing,
    };
    let corral_binary = std::env::current_exe().context("locating the corral binary")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corral-up")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(up(
        args.listen,
        &data,
        server_config,
        worker_config,
        corral_binary,
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn up(
    listen: SocketAddr,
    data: &Path,
    server_config: ServerConfig,
    worker_config: WorkerConfig,
    corral_binary: PathBuf,
) -> anyhow::Result<()> {
    let scheme = if server_config.tls.is_enabled() {
        "https"
    } else {
        "http"
    };
    let hidden = private_files(&server_config, data);
    let server = server::start(listen, &super::defaults::server_dir(data), server_config).await?;
    let url = format!("{scheme}://{}", server.addr);
    let worker_url = server
        .worker_url
        .clone()
        .context("the server serves no workers' listener")?;
    // The worker shares the server's process, and so its /metrics.
    let metrics = server
        .metrics
        .register(corral_worker::WorkerMetrics::register);
    let settings = WorkerSettings {
        config: worker_config,
        scheduler: worker_url,
        data: super::defaults::worker_dir(data),
        corral_binary,
        hidden,
    };
    let worker = Worker::start_metered(settings, Some(metrics))
        .await
        .context("starting the worker")?;
    let shutdown = CancellationToken::new();
    let mut worker_task = tokio::spawn(worker.run(shutdown.clone()));

    let scheduler = server
        .scheduler
        .clone()
        .context("the server runs without a scheduler")?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let slots = loop {
        if let Some(w) = scheduler.workers().first() {
            break w.slots;
        }
        if worker_task.is_finished() || tokio::time::Instant::now() > deadline {
            shutdown.cancel();
            let outcome = worker_task.await;
            server.stop().await?;
            return match outcome {
                Ok(Err(e)) => Err(e).context("the worker stopped before registering"),
                _ => anyhow::bail!("the worker did not register within {READY_TIMEOUT:?}"),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    print_ready(&url, slots, data);

    tokio::select! {
        () = server::shutdown_signal() => {}
        result = &mut worker_task => {
            // The worker only stops on its own when it fails.
            server.stop().await?;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e).context("the worker stopped"),
                Err(e) => Err(e).context("the worker task failed"),
            };
        }
    }
    eprintln!("corral up: stopping (running actions may take up to {DRAIN_GRACE:?} to finish)");
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_GRACE, &mut worker_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "worker stopped with an error"),
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("running actions did not finish in time; stopping anyway");
            worker_task.abort();
        }
    }
    server.stop().await?;
    eprintln!("corral up: stopped");
    Ok(())
}

/// The one ready line (scripts and tests wait for it), then how to use the
/// farm.
fn print_ready(url: &str, slots: usize, data: &Path) {
    let grpc = url
        .replacen("https://", "grpcs://", 1)
        .replacen("http://", "grpc://", 1);
    println!(
        "corral up: ready on {url} ({slots} slots, data in {})",
        data.display()
    );
    println!();
    println!("Bazel:");
    println!("  bazel build --remote_executor={grpc} --spawn_strategy=remote --genrule_strategy=remote //...");
    println!();
    println!("BuildStream (project.conf or buildstream.conf):");
    println!("  remote-execution:");
    for service in [
        "execution-service",
        "storage-service",
        "action-cache-service",
    ] {
        println!("    {service}:");
        println!("      url: {url}");
        println!("      instance-name: buildstream");
    }
    println!();
    println!("The farm's pages: {url}/ (metrics at {url}/metrics)");
    println!();
    println!("Ctrl-C stops the farm.");
}

/// What the farm's actions must never read, though `corral up` runs them
/// on the machine that holds it: the whole data directory (every tenant's
/// blobs and results, the audit log), the TLS keys and the token files.
fn private_files(config: &ServerConfig, data: &Path) -> Vec<PathBuf> {
    let server_data = super::defaults::server_dir(data);
    let keys = [&config.tls.key, &config.workers.tls.key]
        .into_iter()
        .flatten()
        .map(|key| std::path::absolute(key).unwrap_or_else(|_| key.clone()));
    // `[auth]` paths are relative to the server's data directory.
    let auth = config
        .auth
        .private_files()
        .into_iter()
        .map(|path| server_data.join(path));
    std::iter::once(data.to_path_buf())
        .chain(keys)
        .chain(auth)
        .collect()
}
