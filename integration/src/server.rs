//! Start a real `corral server` process for end-to-end tests.
//!
//! The server listens on an ephemeral loopback port (`--listen
//! 127.0.0.1:0`) and prints one line once it accepts connections; the
//! harness waits for that line and reads the address from it. Data lives in
//! a temporary directory unless the caller gives one (to test restarts).
//! Dropping a [`CorralServer`] stops the process; [`CorralServer::stop`]
//! asks it to shut down with SIGTERM and checks that it did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

pub use crate::process::ServedProcess;

/// The `corral` binary a test crate was built with, set by [`use_corral`].
static CORRAL_UNDER_TEST: OnceLock<PathBuf> = OnceLock::new();

/// Names the `corral` binary the harness starts: end-to-end tests call
/// `use_corral(env!("CARGO_BIN_EXE_corral"))` first, so they run the binary
/// cargo built for them, never a stale one found by guessing. The first
/// call wins; later ones (every test of a file calls it) change nothing.
pub fn use_corral(path: impl Into<PathBuf>) {
    let _ = CORRAL_UNDER_TEST.set(path.into());
}

/// The `corral` binary to run, in order: `$CORRAL_BIN` (set by `corral
/// bench`, or by hand to test another build); `$NEXTEST_BIN_EXE_corral` or
/// `$CARGO_BIN_EXE_corral`, which nextest and cargo set when running the
/// root package's tests; the path given to [`use_corral`]. Anything else is
/// an error rather than a guess, because a guessed `target/…/corral` may be
/// older than the test.
pub fn corral_binary() -> anyhow::Result<PathBuf> {
    let from_env = [
        "CORRAL_BIN",
        "NEXTEST_BIN_EXE_corral",
        "CARGO_BIN_EXE_corral",
    ]
    .iter()
    .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()));
    let Some(bin) = from_env
        .map(PathBuf::from)
        .or_else(|| CORRAL_UNDER_TEST.get().cloned())
    else {
        bail!(
            "no corral binary to test: run the end-to-end tests with cargo or nextest \
             from the workspace root (they call corral_integration::use_corral), \
             or set CORRAL_BIN"
        );
    };
    if !bin.is_file() {
        bail!("the corral binary {} does not exist", bin.display());
    }
    Ok(bin)
}

/// Options of a server start; `Default` gives a fresh temporary data dir.
#[derive(Debug, Default, Clone)]
pub struct ServerOptions {
    /// Use this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// `--max-cas-bytes`.
    pub max_cas_bytes: Option<u64>,
    /// Contents of a TOML config file passed with `--config`.
    pub config_toml: Option<String>,
    /// Further arguments after `server`.
    pub extra_args: Vec<String>,
    /// Extra environment (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Listen here instead of on an ephemeral port (to restart a server
    /// where its clients expect it).
    pub listen: Option<SocketAddr>,
}

/// A running `corral server`; [`ServedProcess`] gives its address.
pub struct CorralServer {
    process: ServedProcess,
}

impl std::ops::Deref for CorralServer {
    type Target = ServedProcess;
    fn deref(&self) -> &ServedProcess {
        &self.process
    }
}

impl CorralServer {
    /// Starts a server with a fresh temporary data directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(options: ServerOptions) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir().context("creating a temporary directory")?;
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let mut cmd = Command::new(corral_binary()?);
        cmd.arg("server")
            .arg("--listen")
            .arg(
                options
                    .listen
                    .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string()),
            )
            .arg("--data")
            .arg(&data_dir);
        if let Some(max) = options.max_cas_bytes {
            cmd.arg("--max-cas-bytes").arg(max.to_string());
        }
        if let Some(toml) = &options.config_toml {
            let path = temp.path().join("server.toml");
            std::fs::write(&path, toml).context("writing the server config")?;
            cmd.arg("--config").arg(path);
        }
        cmd.args(&options.extra_args)
            .envs(options.env.iter().map(|(k, v)| (k, v)));
        let process = ServedProcess::start(
            cmd,
            "corral server",
            "corral server listening on http://",
            data_dir,
            Some(temp),
        )?;
        Ok(CorralServer { process })
    }

    /// What a worker passes as `--scheduler`: the workers' socket under
    /// the data directory, where a server with no `[workers]` table
    /// listens for them.
    pub fn worker_url(&self) -> String {
        format!(
            "unix:{}",
            self.process
                .data_dir()
                .join("run")
                .join("workers.sock")
                .display()
        )
    }

    /// Sends SIGTERM and waits up to 20 s for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.terminate(Duration::from_secs(20))
    }
}
