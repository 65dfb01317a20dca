//! cgroup v1 limits for the process tree of one run.
//!
//! libcontainer creates the per-run cgroup (from `linux.cgroupsPath`) under
//! every mounted v1 controller and moves the container into it. The runner
//! writes the limits itself between create and start, and reads the usage
//! before delete, so the spec never carries `linux.resources` (whose devices
//! part fails without root).
//!
//! As root the parent directory is created on demand. An unprivileged
//! runner needs a parent that root delegated to it (`corral runner
//! delegate`), since cgroup v1 has no delegation of its own.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// The v1 controller directories under /sys/fs/cgroup (named hierarchies and
/// the v2 `unified` mount excluded).
pub fn controllers() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(ROOT) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "unified" || name == "systemd" || name.starts_with("name=") {
            continue;
        }
        let path = entry.path();
        if path.join("cgroup.procs").exists() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Makes `parent` exist under every controller, owned by `uid`/`gid`, with
/// cpuset values copied from the root so children can hold tasks.
pub fn delegate(parent: &str, uid: u32, gid: u32) -> Result<Vec<PathBuf>> {
    let controllers = controllers();
    if controllers.is_empty() {
        return Err(Error::Container(format!(
            "no cgroup v1 controllers are mounted under {ROOT}"
        )));
    }
    let mut made = Vec::new();
    for ctrl in controllers {
        let dir = ctrl.join(parent);
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let (from, to) = (ctrl.join(file), dir.join(file));
            if to.exists() && fs::read_to_string(&to).is_ok_and(|s| s.trim().is_empty()) {
                let value = fs::read_to_string(&from)
                    .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
                fs::write(&to, value.trim())
                    .map_err(|e| Error::io(format!("write {}", to.display()), e))?;
            }
        }
        // cgroup.clone_children makes new cpuset children inherit cpus/mems.
        let clone = dir.join("cgroup.clone_children");
        if dir.join("cpuset.cpus").exists() {
            fs::write(&clone, "1")
                .map_err(|e| Error::io(format!("write {}", clone.display()), e))?;
        }
        let chown = |p: &Path| {
            nix::unistd::chown(p, Some(uid.into()), Some(gid.into()))
                .map_err(|e| Error::sys(format!("chown {}", p.display()), e))
        };
        chown(&dir)?;
        for file in ["cgroup.procs", "tasks"] {
            chown(&dir.join(file))?;
        }
        made.push(dir);
    }
    Ok(made)
}

/// Whether this process may create child cgroups under `parent` in every
/// controller (what libcontainer will need).
pub fn usable(parent: &str) -> bool {
    let controllers = controllers();
    !controllers.is_empty()
        && controllers.iter().all(|c| {
            let dir = c.join(parent);
            nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
        })
}

/// The cgroup of one run, relative to each controller's root.
#[derive(Debug, Clone)]
pub struct RunCgroup {
    pub relative: String,
}

/// What the cgroup saw once the run is over.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub peak_memory_bytes: u64,
    pub oom_killed: bool,
    pub pids_limit_hit: bool,
}

impl RunCgroup {
    fn file(&self, controller: &str, file: &str) -> PathBuf {
        Path::new(ROOT)
            .join(controller)
            .join(self.relative.trim_start_matches('/'))
            .join(file)
    }

    fn write(&self, controller: &str, file: &str, value: &str) -> Result<()> {
        let path = self.file(controller, file);
        fs::write(&path, value).map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    /// Writes the limits; called after create, before start.
    pub fn apply(
        &self,
        memory: Option<u64>,
        pids: Option<u64>,
        cpu_millis: Option<u64>,
    ) -> Result<()> {
        if let Some(bytes) = memory {
            self.write("memory", "memory.limit_in_bytes", &bytes.to_string())?;
            // Without a swap limit the tree could page out instead of being
            // stopped; the file is absent when swap accounting is off.
            if self.file("memory", "memory.memsw.limit_in_bytes").exists() {
                self.write("memory", "memory.memsw.limit_in_bytes", &bytes.to_string())?;
            }
        }
        if let Some(max) = pids {
            self.write("pids", "pids.max", &max.to_string())?;
        }
        if let Some(millis) = cpu_millis {
            let period = 100_000u64;
            self.write("cpu", "cpu.cfs_period_us", &period.to_string())?;
            self.write(
                "cpu",
                "cpu.cfs_quota_us",
                &(millis * period / 1000).max(1000).to_string(),
            )?;
        }
        Ok(())
    }

    /// Reads peak memory and whether a limit was hit; missing files read as zero.
    pub fn usage(&self) -> Usage {
        let read = |c: &str, f: &str| fs::read_to_string(self.file(c, f)).unwrap_or_default();
        let field = |text: &str, key: &str| -> u64 {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Usage {
            peak_memory_bytes: read("memory", "memory.max_usage_in_bytes")
                .trim()
                .parse()
                .unwrap_or(0),
            oom_killed: field(&read("memory", "memory.oom_control"), "oom_kill") > 0,
            pids_limit_hit: field(&read("pids", "pids.events"), "max") > 0,
        }
    }
}
