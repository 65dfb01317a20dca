//! A whole worker from its configuration: the data directory's layout, the
//! runner, the local CAS and stager, the executor and the scheduler
//! session. `corral worker` and `corral up` both start one of these.
//!
//! Layout under the data directory:
//! `cas/` (local CAS), `trees/` (staged input roots), `builds/` (one
//! directory per running action), `images/` (the image cache) and
//! `runner.sock`. The first three must
//! share a filesystem, since staging is hardlinking.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{WorkerConfig, DEFAULT_MAX_CAS_BYTES};
use crate::error::{Error, Result};
use crate::executor::{
    ActionExecutor, Cancellable, LocalExecutor, LocalOptions, Metered, Timestamped, WorkerMetrics,
};
use crate::fsutil::{allow_traversal, check_traversable, remove_tree};
use crate::images::Images;
use crate::inputs::Inputs;
use crate::outputs::Outputs;
use crate::runner::{Runner, RunnerSpec};
use crate::session::{self, SessionOptions};
use crate::stage::StagerOptions;
use crate::validate::SymlinkPolicy;
use crate::{LocalCas, LocalCasOptions, RemoteCas, Stager};

/// Everything needed to start a worker, resolved from config and flags.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// The worker's TOML settings.
    pub config: WorkerConfig,
    /// Scheduler URL.
    pub scheduler: String,
    /// Data directory.
    pub data: PathBuf,
    /// The `corral` binary, to start `corral runner` from.
    pub corral_binary: PathBuf,
    /// More host paths no action may see, besides the worker's own data
    /// directory, key and token (`corral up` adds the server's data
    /// directory and secrets). The runner covers them in roots that bind
    /// the host's directories.
    pub hidden: Vec<PathBuf>,
}

/// A started worker; [`Worker::run`] serves until shutdown.
pub struct Worker {
    runner: Arc<Runner>,
    executor: Arc<dyn ActionExecutor>,
    session: SessionOptions,
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))
}

fn device_of(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

impl Worker {
    /// Prepares the data directory (removing build directories a crash
    /// left), starts or reaches the runner and connects to the CAS.
    pub async fn start(settings: WorkerSettings) -> Result<Worker> {
        Self::start_metered(settings, None).await
    }

    /// [`Worker::start`], measuring every run into `metrics` (the
    /// executor's metrics layer) when given.
    pub async fn start_metered(
        settings: WorkerSettings,
        metrics: Option<WorkerMetrics>,
    ) -> Result<Worker> {
        let WorkerSettings {
            config,
            scheduler,
            data,
            corral_binary,
            hidden,
        } = settings;
        // Checked first: a wrong CA or token file is reported before any
        // runner is started.
        let connector = config
            .client_options()
            .connector()
            .map_err(|e| Error::Config(format!("the worker's TLS or token settings: {e}")))?;
        let (cas_dir, trees, builds) = (data.join("cas"), data.join("trees"), data.join("builds"));
        for d in [&cas_dir, &trees, &builds] {
            create_dir(d)?;
        }
        let dev = device_of(&cas_dir)?;
        for d in [&trees, &builds] {
            if device_of(d)? != dev {
                return Err(Error::Config(format!(
                    "{} and {} are on different filesystems; staging hardlinks from the local CAS, \
                     so both must be on one filesystem",
                    cas_dir.display(),
                    d.display()
                )));
            }
        }
        {
            let builds = builds.clone();
            tokio::task::spawn_blocking(move || {
                remove_tree(&builds)?;
                create_dir(&builds)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        }

        let spec = match &config.runner_socket {
            Some(socket) => RunnerSpec::Connect {
                socket: socket.clone(),
            },
            None => {
                let mut args = vec!["runner".to_string()];
                if let Some(c) = &config.runner_config {
                    args.push("--config".into());
                    args.push(c.display().to_string());
                }
                let own = std::iter::once(data.clone()).chain(config.private_files());
                for path in own.chain(hidden) {
                    args.push("--hide".into());
                    args.push(path.display().to_string());
                }
                RunnerSpec::Spawn {
                    program: corral_binary,
                    args,
                    socket: data.join("runner.sock"),
                }
            }
        };
        let runner = Arc::new(Runner::new(spec));
        let ready = runner.ready().await?;
        for line in &ready.enforced_limits {
            tracing::info!("runner enforces {line}");
        }
        let owner = Some((ready.sandbox_uid, ready.sandbox_gid));
        for d in [&data, &trees, &builds] {
            allow_traversal(d)?;
        }
        for d in [&trees, &builds] {
            check_traversable(d, (ready.sandbox_uid, ready.sandbox_gid))?;
        }

        let cas_url = config.cas.clone().unwrap_or_else(|| scheduler.clone());
        let remote = RemoteCas::connect_with(&cas_url, "", &connector).await?;
        let transfers = config.parallel_transfers.unwrap_or(8).max(1);
        let local = {
            let options = LocalCasOptions {
                max_bytes: config.max_cas_bytes.unwrap_or(DEFAULT_MAX_CAS_BYTES),
                max_exec_bytes: config.max_cas_bytes.unwrap_or(DEFAULT_MAX_CAS_BYTES) / 4,
                parallel_fetches: transfers,
            };
            let cas_dir = cas_dir.clone();
            tokio::task::spawn_blocking(move || LocalCas::open(&cas_dir, &options, remote))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        };
        let stager = {
            let options = StagerOptions {
                policy: SymlinkPolicy::default(),
                max_files: config.max_staged_files.unwrap_or(1_000_000),
                owner,
            };
            tokio::task::spawn_blocking(move || Stager::open(local, trees, options))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
        };
        let images = if config.images_enabled() {
            let (dir, images_config) =
                (data.join(crate::config::IMAGES_DIR), config.images.clone());
            let images = tokio::task::spawn_blocking(move || Images::open(&dir, images_config))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            Some(Arc::new(images))
        } else {
            None
        };
        let name = config.name.clone().unwrap_or_else(host_name);
        let remote = stager.cas().remote().clone();
        let local = LocalExecutor::new(
            LocalOptions {
                builds_dir: builds,
                profile: config.profile.clone(),
                owner,
            },
            Inputs::new(stager, images),
            runner.clone(),
            Outputs::new(remote, transfers),
        );
        // The stack of docs/worker.md: timestamps ▸ metrics (when on) ▸
        // cancellation ▸ the local executor's steps.
        let clock = Arc::new(SystemClock);
        let executor: Arc<dyn ActionExecutor> = match metrics {
            Some(m) => Arc::new(Timestamped::new(
                Metered::new(Cancellable::new(local), m),
                name.clone(),
                clock,
            )),
            None => Arc::new(Timestamped::new(
                Cancellable::new(local),
                name.clone(),
                clock,
            )),
        };
        let slots = config
            .slots
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        if slots == 0 {
            return Err(Error::Config("slots must be at least 1".into()));
        }
        let session = SessionOptions {
            scheduler_url: scheduler,
            connector,
            name,
            platform: config.platform(),
            slots,
            backoff: (Duration::from_millis(100), Duration::from_secs(10)),
        };
        Ok(Worker {
            runner,
            executor,
            session,
        })
    }

    /// Serves the scheduler until `shutdown` is cancelled and running
    /// actions have finished, then stops the runner it started.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let result = session::run(self.session, self.executor, shutdown).await;
        self.runner.stop().await;
        result
    }
}

/// The kernel's host name, or `corral-worker`.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "corral-worker".into())
}
