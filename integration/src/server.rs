//! Start a real `corral server` process for end-to-end tests.
//!
//! The server listens on an ephemeral loopback port (`--listen
//! 127.0.0.1:0`) and prints one line once it accepts connections; the
//! harness waits for that line and reads the address from it. Data lives in
//! a temporary directory unless the caller gives one (to test restarts).
//! Dropping a [`CorralServer`] stops the process; [`CorralServer::stop`]
//! asks it to shut down with SIGTERM and checks that it did.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context};

pub use crate::process::ServedProcess;

/// The `corral` binary to test: `$CORRAL_BIN` if set, else the one cargo
/// built next to the running test (`target/<profile>/corral`).
pub fn corral_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CORRAL_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test> → target/<profile>/corral
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("corral"))
        .context("the test executable has no grandparent directory")?;
    if !candidate.is_file() {
        bail!(
            "the corral binary is missing at {}: run `cargo build --bin corral` first \
             (integration/run-all-tests.sh does), or set CORRAL_BIN",
            candidate.display()
        );
    }
    Ok(candidate)
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

    /// Sends SIGTERM and waits up to 20 s for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.terminate(Duration::from_secs(20))
    }
}
