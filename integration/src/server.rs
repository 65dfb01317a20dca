//! Start a real `corral server` process for end-to-end tests.
//!
//! The server listens on an ephemeral loopback port (`--listen
//! 127.0.0.1:0`) and prints one line once it accepts connections; the
//! harness waits for that line and reads the address from it. Data lives in
//! a temporary directory unless the caller gives one (to test restarts).
//! Dropping a [`CorralServer`] kills the process; [`CorralServer::stop`]
//! asks it to shut down with SIGTERM and checks that it did.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a server may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A running `corral server`.
pub struct CorralServer {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    /// Holds the temporary data dir (and config file) alive.
    _temp: tempfile::TempDir,
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
        let (child, addr) =
            start_process(cmd, "corral server", "corral server listening on http://")?;
        Ok(CorralServer {
            child,
            addr,
            data_dir,
            _temp: temp,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what gRPC clients take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `grpc://127.0.0.1:PORT`, what Bazel's `--remote_cache` takes.
    pub fn grpc_url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id (to send signals in tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to 20 s for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        terminate(&mut self.child, "corral server", Duration::from_secs(20))
    }
}

impl Drop for CorralServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` with its stdout piped (and echoed with a `[name]` prefix)
/// and waits for a stdout line starting with `ready_prefix`, followed by the
/// address it listens on. Kills the process if it never gets there.
pub fn start_process(
    mut cmd: Command,
    name: &str,
    ready_prefix: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting `{name}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    let label = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Only the ready line matters; later ones are passed through so
            // a chatty process does not block on a full pipe.
            let _ = tx.send(line.clone());
            println!("[{label}] {line}");
        }
    });
    match wait_ready(&rx, &mut child, name, ready_prefix) {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Sends SIGTERM and waits up to `patience` for the process to exit.
pub fn terminate(child: &mut Child, name: &str, patience: Duration) -> anyhow::Result<ExitStatus> {
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("sending SIGTERM to {pid}"))?;
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {name}"))?
        {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("{name} did not exit within {patience:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_ready(
    rx: &mpsc::Receiver<String>,
    child: &mut Child,
    name: &str,
    ready_prefix: &str,
) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let Some(rest) = line.strip_prefix(ready_prefix) else {
                    continue;
                };
                let addr = rest.split_whitespace().next().unwrap_or_default();
                return addr
                    .parse()
                    .with_context(|| format!("unexpected ready line {line:?}"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .with_context(|| format!("waiting for {name}"))?;
                bail!("{name} exited before it was ready ({status}); its stderr is above");
            }
        }
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("polling {name}"))?
        {
            bail!("{name} exited before it was ready ({status}); its stderr is above");
        }
        if Instant::now() > deadline {
            bail!("{name} printed no ready line within {START_TIMEOUT:?}");
        }
    }
}
