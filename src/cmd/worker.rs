//! `corral worker`: a worker on this or another machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use corral_worker::config::WorkerConfig;
use corral_worker::daemon::{Worker, WorkerSettings};
use tokio_util::sync::CancellationToken;

/// Options of `corral worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scheduler URL: the server's workers' listener, e.g.
    /// unix:/var/lib/corral/run/workers.sock or https://farm:8981.
    #[arg(long)]
    scheduler: Option<String>,
    /// CAS URL (default: the scheduler's).
    #[arg(long)]
    cas: Option<String>,
    /// Data directory: local CAS, staged trees, build directories.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Actions run at once (default: the number of cores).
    #[arg(long)]
    slots: Option<u32>,
    /// Name shown by the scheduler (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// TOML configuration (docs/worker.md); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// TLS and token towards the scheduler and the CAS (override `[tls]`
    /// and `token_file` of the configuration).
    #[command(flatten)]
    client: corral_cas::ClientFlags,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => WorkerConfig::load(path)?,
        None => WorkerConfig::default(),
    };
    if args.cas.is_some() {
        config.cas = args.cas;
    }
    if args.slots.is_some() {
        config.slots = args.slots;
    }
    if args.name.is_some() {
        config.name = args.name;
    }
    let client = args.client.apply(config.client_options())?;
    config.tls = client.tls;
    config.token_file = client.token_file;
    let scheduler = args
        .scheduler
        .or(config.scheduler.clone())
        .context("no scheduler: pass --scheduler URL or set `scheduler` in the config")?;
    let data = args
        .data
        .or(config.data.clone())
        .context("no data directory: pass --data DIR or set `data` in the config")?;
    let metrics_listen = config.metrics_listen;
    let settings = WorkerSettings {
        config,
        scheduler,
        data,
        corral_binary: std::env::current_exe().context("locating the corral binary")?,
        hidden: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corral-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // `metrics_listen`: this worker's /metrics and /healthz.
        let mut metrics = None;
        if let Some(addr) = metrics_listen {
            let registry = corral_web::Metrics::new();
            metrics = Some(registry.register(corral_worker::WorkerMetrics::register));
            let stop = shutdown.clone();
            let stopped = async move { stop.cancelled().await };
            corral_web::serve::metrics_only(addr, registry, stopped)
                .await
                .context("metrics_listen")?;
        }
        let worker = Worker::start_metered(settings, metrics).await?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            super::server::shutdown_signal().await;
            trigger.cancel();
        });
        worker.run(shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
