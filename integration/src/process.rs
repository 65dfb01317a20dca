//! A child process of the test that serves on a loopback address: started,
//! awaited until it prints its ready line, stopped with SIGTERM. Shared by
//! [`crate::server::CorralServer`] and [`crate::farm::CorralFarm`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A started process, its address and its data directory. Dropping it
/// stops it (SIGTERM, then SIGKILL after 30 s).
pub struct ServedProcess {
    child: Child,
    name: String,
    addr: SocketAddr,
    data_dir: PathBuf,
    /// Holds a temporary data directory (and config file) alive.
    _temp: Option<tempfile::TempDir>,
}

impl ServedProcess {
    /// Starts `cmd` and waits for a stdout line starting with
    /// `ready_prefix` followed by the address it listens on.
    pub fn start(
        cmd: Command,
        name: &str,
        ready_prefix: &str,
        data_dir: PathBuf,
        temp: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let (child, addr) = start_process(cmd, name, ready_prefix)?;
        Ok(ServedProcess {
            child,
            name: name.to_string(),
            addr,
            data_dir,
            _temp: temp,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, what gRPC clients and BuildStream take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `grpc://127.0.0.1:PORT`, what Bazel's `--remote_*` flags take.
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

    /// Sends SIGTERM and waits up to `patience` for the exit.
    pub fn terminate(&mut self, patience: Duration) -> anyhow::Result<ExitStatus> {
        terminate(&mut self.child, &self.name, patience)
    }
}

impl Drop for ServedProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = terminate(&mut self.child, &self.name, Duration::from_secs(30));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` with its stdout piped (and echoed with a `[name]` prefix)
/// and waits for a stdout line starting with `ready_prefix`, followed by the
/// address it listens on. Kills the process if it never gets there.
fn start_process(
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

/// Runs `cmd` to its end with stdin empty and stdout and stderr captured,
/// as `Command::output` does, but kills it and fails if it is still
/// running after `limit`: a test of a command that should exit must not
/// hang the suite when it does not. The output is read while the command
/// runs, so a chatty one cannot block on a full pipe.
pub fn output_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<std::process::Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.with_context(|| format!("waiting for {cmd:?}")),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            bail!("{cmd:?} did not finish within {limit:?}")
        }
    }
}
