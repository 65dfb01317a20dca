//! Drive Bazel 4.2.3 (Debian `bazel-bootstrap`) offline in a scratch
//! directory, for end-to-end tests against a Corral server.
//!
//! A fixture workspace is copied to a temporary directory (so Bazel's
//! `bazel-*` symlinks and outputs never land in the source tree) and Bazel
//! runs with its own `--output_user_root` there, ignoring the user's rc file
//! (not the system one: Debian's Bazel needs it to find its install base).
//! C++ rules get the offline `rules_cc` stub and
//! Debian's `rules_java` through `--override_repository`, as FIELD-NOTES
//! describes. The Bazel server is shut down when [`Bazel`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Where Debian's `bazel-rules-java` puts `rules_java`.
pub const RULES_JAVA: &str = "/usr/share/bazel/rules/java";

/// A fixture directory under `integration/fixtures/bazel/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/bazel")
        .join(name)
}

/// Fails with a message naming what is missing when Bazel or `rules_java`
/// are not installed (tests must not skip silently).
pub fn check_installed() -> anyhow::Result<()> {
    let found = Command::new("bazel")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(found, Ok(s) if s.success()) {
        bail!("`bazel` is not installed: install Debian's bazel-bootstrap (integration/install-deps.sh does)");
    }
    if !Path::new(RULES_JAVA).is_dir() {
        bail!("{RULES_JAVA} is missing: install Debian's bazel-rules-java (integration/install-deps.sh does)");
    }
    Ok(())
}

/// The outcome of one Bazel command.
#[derive(Debug)]
pub struct BazelRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl BazelRun {
    /// The spawn summary line, e.g. `7 processes: 4 internal, 3 remote
    /// cache hit.`, parsed into (kind, count) pairs; `None` if absent.
    pub fn processes(&self) -> Option<ProcessSummary> {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains(" processes: ") || l.contains(" process: "))?;
        let (head, tail) = line
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": "))?;
        let total = head.split_whitespace().next()?.parse().ok()?;
        let mut kinds = Vec::new();
        for part in tail.trim_end_matches('.').split(", ") {
            let (count, kind) = part.split_once(' ')?;
            kinds.push((kind.to_string(), count.parse().ok()?));
        }
        Some(ProcessSummary { total, kinds })
    }
}

/// Bazel's count of spawned processes by how they were satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    pub total: u32,
    /// e.g. `("remote cache hit", 3)`, `("internal", 4)`,
    /// `("processwrapper-sandbox", 3)`.
    pub kinds: Vec<(String, u32)>,
}

impl ProcessSummary {
    pub fn count(&self, kind: &str) -> u32 {
        self.kinds
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A scratch copy of a workspace and a Bazel to run in it.
pub struct Bazel {
    dir: tempfile::TempDir,
    workspace: PathBuf,
    /// Extra environment for every Bazel run (e.g. `NETRC`).
    env: Vec<(String, String)>,
}

impl Bazel {
    /// Copies the fixture workspace `fixture(workspace_name)` to a scratch
    /// directory.
    pub fn new(workspace_name: &str) -> anyhow::Result<Self> {
        check_installed()?;
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let workspace = dir.path().join("workspace");
        copy_dir(&fixture(workspace_name), &workspace)?;
        Ok(Bazel {
            dir,
            workspace,
            env: Vec::new(),
        })
    }

    /// Sets `key=value` in the environment of every later run.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// A scratch path beside the workspace, for files a test hands Bazel.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// A path under `bazel-bin/`.
    pub fn bin(&self, relative: &str) -> PathBuf {
        self.workspace.join("bazel-bin").join(relative)
    }

    /// Flags that keep C++ and Java rules offline.
    pub fn offline_flags() -> Vec<String> {
        vec![
            format!(
                "--override_repository=rules_cc={}",
                fixture("rules_cc").display()
            ),
            format!("--override_repository=rules_java={RULES_JAVA}"),
        ]
    }

    /// Flags that run every action remotely on the farm at `executor`
    /// (`grpc://…`) under `instance`, with a timeout long enough for a
    /// busy test machine.
    pub fn remote_execution_flags(executor: &str, instance: &str) -> Vec<String> {
        vec![
            format!("--remote_executor={executor}"),
            format!("--remote_instance_name={instance}"),
            "--spawn_strategy=remote".to_string(),
            "--genrule_strategy=remote".to_string(),
            "--remote_timeout=120".to_string(),
        ]
    }

    /// Runs `bazel <command> <args…>` in the workspace.
    pub fn run(&self, command: &str, args: &[String]) -> anyhow::Result<BazelRun> {
        let output = Command::new("bazel")
            .arg("--nohome_rc")
            .arg(format!(
                "--output_user_root={}",
                self.dir.path().join("output_user_root").display()
            ))
            .arg("--max_idle_secs=120")
            .arg(command)
            .args(args)
            .current_dir(&self.workspace)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running bazel {command}"))?;
        Ok(BazelRun {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `bazel build` with the offline flags plus `flags`; an error carrying
    /// Bazel's output if the build fails.
    pub fn build(&self, targets: &[&str], flags: &[String]) -> anyhow::Result<BazelRun> {
        let mut args = Self::offline_flags();
        args.push("--color=no".into());
        args.push("--curses=no".into());
        args.extend(flags.iter().cloned());
        args.extend(targets.iter().map(|t| t.to_string()));
        let run = self.run("build", &args)?;
        if !run.success {
            bail!("bazel build {targets:?} failed:\n{}", run.stderr);
        }
        Ok(run)
    }

    /// `bazel clean`: drops local outputs and the local action cache, so a
    /// following build must get everything from the remote cache.
    pub fn clean(&self) -> anyhow::Result<()> {
        let run = self.run("clean", &[])?;
        if !run.success {
            bail!("bazel clean failed:\n{}", run.stderr);
        }
        Ok(())
    }
}

impl Drop for Bazel {
    fn drop(&mut self) {
        let _ = self.run("shutdown", &[]);
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_process_summary() {
        let run = BazelRun {
            success: true,
            stdout: String::new(),
            stderr: "INFO: Elapsed time: 1s\nINFO: 7 processes: 4 internal, 3 remote cache hit.\n"
                .into(),
        };
        let p = run.processes().unwrap();
        assert_eq!(p.total, 7);
        assert_eq!(p.count("remote cache hit"), 3);
        assert_eq!(p.count("internal"), 4);
        assert_eq!(p.count("processwrapper-sandbox"), 0);
        let run = BazelRun {
            success: true,
            stdout: String::new(),
            stderr: "INFO: 1 process: 1 internal.".into(),
        };
        assert_eq!(run.processes().unwrap().count("internal"), 1);
    }
}
