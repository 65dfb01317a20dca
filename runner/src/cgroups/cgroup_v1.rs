//! cgroup v1: one hierarchy per controller under the cgroup root
//! (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/pids`, …), the layout of
//! legacy and hybrid hosts.
//!
//! A run's cgroup is `<controller>/<parent>/<run id>` in every mounted
//! controller, the same directories libcontainer's v1 manager derives from
//! `linux.cgroupsPath`. As root the parent is made at start-up
//! ([`delegate_at`] with uid 0). An unprivileged runner needs a parent that
//! root delegated to it (`corral runner delegate`): cgroup v1 has no
//! delegation of its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files;
use super::limit_enforcer::{CpuTime, Enforcement, LimitEnforcer, Usage};
use crate::error::{Error, Result};
use crate::request::Limits;

/// CFS period used with `cpu.cfs_quota_us`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// The v1 controller directories under `root` (named hierarchies such as
/// `systemd` and the hybrid `unified` mount excluded). Empty when `root`
/// holds no v1 controller, as on a cgroup v2 host.
pub fn controllers(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if super::mechanism::is_cgroup2(root) {
        // Every child cgroup of a v2 root has a cgroup.procs too.
        return out;
    }
    let Ok(entries) = fs::read_dir(root) else {
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

/// Makes `parent` exist under every controller of `root`, owned by
/// `uid`/`gid`, with cpuset values copied from the controller's root so
/// that its children can hold tasks. Returns the directories.
pub fn delegate_at(root: &Path, parent: &str, uid: u32, gid: u32) -> Result<Vec<PathBuf>> {
    let controllers = controllers(root);
    if controllers.is_empty() {
        return Err(Error::Cgroup(format!(
            "no cgroup v1 controllers are mounted under {}",
            root.display()
        )));
    }
    let mut made = Vec::new();
    for ctrl in controllers {
        let dir = ctrl.join(parent.trim_start_matches('/'));
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let (from, to) = (ctrl.join(file), dir.join(file));
            if files::read(&to).is_some_and(|s| s.trim().is_empty()) {
                let value = fs::read_to_string(&from)
                    .map_err(|e| Error::io(format!("read {}", from.display()), e))?;
                files::write(&to, value.trim())?;
            }
        }
        // cgroup.clone_children makes new cpuset children inherit cpus/mems.
        if dir.join("cpuset.cpus").exists() {
            files::write(&dir.join("cgroup.clone_children"), "1")?;
        }
        let chown = |p: &Path| {
            nix::unistd::chown(p, Some(uid.into()), Some(gid.into()))
                .map_err(|e| Error::sys(format!("chown {}", p.display()), e))
        };
        chown(&dir)?;
        for file in ["cgroup.procs", "tasks"] {
            let path = dir.join(file);
            if path.exists() {
                chown(&path)?;
            }
        }
        made.push(dir);
    }
    Ok(made)
}

/// Whether this process may create child cgroups under `parent` in every
/// controller of `root` (what libcontainer will need).
pub fn usable_at(root: &Path, parent: &str) -> bool {
    let controllers = controllers(root);
    !controllers.is_empty()
        && controllers.iter().all(|c| {
            let dir = c.join(parent.trim_start_matches('/'));
            nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok()
        })
}

/// Limits runs with the cgroup v1 controllers under `root`.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    root: PathBuf,
    parent: String,
}

impl CgroupV1 {
    /// Runs go in `<root>/<controller>/<parent>/<run id>`; `root` is
    /// `/sys/fs/cgroup` outside tests.
    pub fn new(root: impl Into<PathBuf>, parent: impl Into<String>) -> CgroupV1 {
        CgroupV1 {
            root: root.into(),
            parent: parent.into(),
        }
    }

    /// The run's directory in `controller`.
    fn dir(&self, controller: &str, id: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join(controller)
            .join(files::run_relative(&self.parent, id)?))
    }

    fn write(&self, controller: &str, id: &str, file: &str, value: u64) -> Result<()> {
        files::write(&self.dir(controller, id)?.join(file), &value.to_string())
    }

    fn write_limits(&self, id: &str, limits: &Limits) -> Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            self.write("memory", id, "memory.limit_in_bytes", bytes)?;
            // Without a swap limit the tree could page out instead of being
            // stopped; the file is absent when swap accounting is off.
            if self
                .dir("memory", id)?
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                self.write("memory", id, "memory.memsw.limit_in_bytes", bytes)?;
            }
        }
        if let Some(max) = limits.max_pids {
            self.write("pids", id, "pids.max", max)?;
        }
        if let Some(millis) = limits.cpu_millis {
            self.write("cpu", id, "cpu.cfs_period_us", CPU_PERIOD_US)?;
            let quota = (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
            self.write("cpu", id, "cpu.cfs_quota_us", quota)?;
        }
        Ok(())
    }

    fn cpu(&self, id: &str) -> Option<CpuTime> {
        let dir = self.dir("cpuacct", id).ok()?;
        let ns = |file: &str| files::read_u64(&dir.join(file)).map(Duration::from_nanos);
        Some(CpuTime {
            total: ns("cpuacct.usage")?,
            user: ns("cpuacct.usage_user")?,
            system: ns("cpuacct.usage_sys")?,
        })
    }
}

impl LimitEnforcer for CgroupV1 {
    fn enforcement(&self) -> Enforcement {
        Enforcement {
            name: "cgroup v1",
            memory: "memory.limit_in_bytes and memory.memsw.limit_in_bytes (whole tree)",
            pids: "pids.max (whole tree)",
            cpu: "cpu.cfs_quota_us",
        }
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.parent.trim_matches('/'))
    }

    fn create(&self, id: &str, limits: &Limits) -> Result<()> {
        let relative = files::run_relative(&self.parent, id)?;
        for ctrl in controllers(&self.root) {
            let dir = ctrl.join(&relative);
            if let Err(e) = fs::create_dir_all(&dir) {
                let _ = self.remove(id);
                return Err(Error::io(format!("create {}", dir.display()), e));
            }
        }
        self.write_limits(id, limits).inspect_err(|_| {
            let _ = self.remove(id);
        })
    }

    fn usage(&self, id: &str) -> Usage {
        let read = |ctrl: &str, file: &str| {
            self.dir(ctrl, id)
                .ok()
                .and_then(|d| files::read(&d.join(file)))
                .unwrap_or_default()
        };
        Usage {
            peak_memory_bytes: read("memory", "memory.max_usage_in_bytes")
                .trim()
                .parse()
                .unwrap_or(0),
            cpu: self.cpu(id),
            // The oom_kill counter of memory.oom_control (kernel 4.13 on)
            // counts processes the OOM killer killed in this cgroup.
            oom_killed: files::keyed(&read("memory", "memory.oom_control"), "oom_kill")
                .is_some_and(|n| n > 0),
            pids_limit_hit: files::keyed(&read("pids", "pids.events"), "max")
                .is_some_and(|n| n > 0),
        }
    }

    fn remove(&self, id: &str) -> Result<()> {
        let relative = files::run_relative(&self.parent, id)?;
        let mut first_error = None;
        for ctrl in controllers(&self.root) {
            let dir = ctrl.join(&relative);
            if !dir.exists() {
                continue;
            }
            files::kill_listed(&dir.join("cgroup.procs"));
            if let Err(e) = files::remove_dir(&dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
