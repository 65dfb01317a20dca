//! Start the whole farm, `corral up`, as a real process for end-to-end
//! tests: server, scheduler, a worker and its runner, on an ephemeral
//! loopback port with data in a temporary directory.
//!
//! [`CorralFarm::stop`] sends SIGTERM, waits for a clean exit and then
//! checks what the issue promises: no process started by the farm and no
//! mount under its data directory is left behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::ServedProcess;
use crate::server::corral_binary;

/// Options of a farm start; `Default` is `corral up` with no config.
#[derive(Debug, Default, Clone)]
pub struct FarmOptions {
    /// Contents of a TOML file passed with `--config` (`[cas]`,
    /// `[scheduler]`, `[worker]` tables).
    pub config_toml: Option<String>,
    /// `--slots`.
    pub slots: Option<u32>,
    /// Extra environment, e.g. `RUST_LOG`.
    pub env: Vec<(String, String)>,
    /// Give no `--data` and set `XDG_CACHE_HOME` to this directory instead,
    /// so the farm keeps its data where `corral up` does by default
    /// (`$XDG_CACHE_HOME/corral`): for tests of the defaults other commands
    /// share with it. The caller owns the directory, which outlives the
    /// farm; every directory above it must be open to the sandbox's user.
    pub cache_home: Option<std::path::PathBuf>,
    /// The config turns TLS on for the client port (`[tls]`), so the
    /// ready line says `https://`.
    pub https: bool,
}

/// A running `corral up`; [`ServedProcess`] gives its address.
pub struct CorralFarm {
    process: ServedProcess,
}

impl std::ops::Deref for CorralFarm {
    type Target = ServedProcess;
    fn deref(&self) -> &ServedProcess {
        &self.process
    }
}

impl CorralFarm {
    /// `corral up` with embedded defaults.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(FarmOptions::default())
    }

    pub fn start_with(options: FarmOptions) -> anyhow::Result<Self> {
        let temp = tempfile::tempdir().context("creating a temporary directory")?;
        // The sandbox's user must traverse down to the worker's directories.
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755))
            .context("opening the temporary directory to the sandbox's user")?;
        let mut cmd = Command::new(corral_binary()?);
        cmd.arg("up").arg("--listen").arg("127.0.0.1:0");
        let data_dir = if let Some(home) = &options.cache_home {
            cmd.env("XDG_CACHE_HOME", home);
            home.join("corral")
        } else {
            let data_dir = temp.path().join("data");
            cmd.arg("--data").arg(&data_dir);
            data_dir
        };
        if let Some(slots) = options.slots {
            cmd.arg("--slots").arg(slots.to_string());
        }
        if let Some(toml) = &options.config_toml {
            let path = temp.path().join("up.toml");
            std::fs::write(&path, toml).context("writing the farm config")?;
            cmd.arg("--config").arg(path);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let ready = if options.https {
            "corral up: ready on https://"
        } else {
            "corral up: ready on http://"
        };
        let process = ServedProcess::start(cmd, "corral up", ready, data_dir, Some(temp))?;
        Ok(CorralFarm { process })
    }

    /// SIGTERM, a clean exit within 60 s, and nothing left behind: no
    /// descendant process of the farm and no mount under its data
    /// directory.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let before = descendants(self.process.pid());
        let status = self.process.terminate(Duration::from_secs(60))?;
        // Processes the farm started may need a moment to be reaped.
        let mut alive = Vec::new();
        for _ in 0..100 {
            alive = before
                .iter()
                .copied()
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            if alive.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !alive.is_empty() {
            bail!("processes started by corral up outlived it: {alive:?}");
        }
        let mounts =
            std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let data = self.process.data_dir().display().to_string();
        let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&data)).collect();
        if !left.is_empty() {
            bail!(
                "mounts under the farm's data directory outlived it:\n{}",
                left.join("\n")
            );
        }
        Ok(status)
    }
}

/// Every process below `pid`, found through /proc's parent links.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces.
            let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                continue;
            };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                parents.push((p, ppid));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}
