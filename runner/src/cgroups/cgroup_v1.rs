//! cgroup v1: one hierarchy per controller under the cgroup root
//! (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/pids`, …), the layout of
//! legacy and hybrid hosts.
//!
//! A run's cgroup is `<controller>/<parent>/<run id>` in each controller
//! the runner uses (memory, pids, cpu, cpuacct). As root the parent is made
//! at start-up
//! ([`delegate_at`] with uid 0). An unprivileged runner needs a parent that
//! root delegated to it (`corral runner delegate`): cgroup v1 has no
//! delegation of its own.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::baseline::{Baseline, Baselines, Counters};
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
        let clone_children = dir.join("cgroup.clone_children");
        if dir.join("cpuset.cpus").exists()
            && files::read(&clone_children).is_none_or(|v| v.trim() != "1")
        {
            files::write(&clone_children, "1")?;
        }
        // Every runner start probes: change only what is not so already.
        let chown = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            if fs::metadata(p).is_ok_and(|m| (m.uid(), m.gid()) == (uid, gid)) {
                return Ok(());
            }
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

/// The controllers whose files the runner writes or reads.
const USED: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// Limits runs with the cgroup v1 controllers under `root`.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    /// The parent's directory in each used controller that is mounted.
    parents: Vec<(&'static str, PathBuf)>,
    /// The parent, for the spec's path.
    parent: String,
    /// Descriptors the directories above are reached through, once pinned
    /// (held, never read).
    _pins: Arc<Vec<OwnedFd>>,
    /// Counters noted at each run's restart.
    baselines: Baselines,
}

impl CgroupV1 {
    /// Runs go in `<root>/<controller>/<parent>/<run id>` for the
    /// controllers the runner uses (memory, pids, cpu, cpuacct) that are
    /// mounted; `root` is `/sys/fs/cgroup` outside tests.
    pub fn new(root: impl Into<PathBuf>, parent: impl Into<String>) -> CgroupV1 {
        let root = root.into();
        let parent = parent.into();
        let parents = USED
            .into_iter()
            .filter(|c| root.join(c).join("cgroup.procs").exists())
            .map(|c| (c, root.join(c).join(parent.trim_matches('/'))))
            .collect();
        CgroupV1 {
            parents,
            parent,
            _pins: Arc::default(),
            baselines: Baselines::default(),
        }
    }

    /// The same enforcer reaching its directories through descriptors
    /// opened now, so that it keeps working in a mount namespace where
    /// `/sys/fs/cgroup` is covered.
    pub fn pinned(&self) -> Result<CgroupV1> {
        let mut pins: Vec<(PathBuf, OwnedFd)> = Vec::new();
        let mut parents = Vec::new();
        for (controller, dir) in &self.parents {
            // Co-mounted controllers (`cpu,cpuacct`) share a directory.
            let real = fs::canonicalize(dir)
                .map_err(|e| Error::io(format!("resolve {}", dir.display()), e))?;
            let at = match pins.iter().find(|(p, _)| *p == real) {
                Some((_, fd)) => files::through(fd),
                None => {
                    let fd = files::pin(&real)?;
                    let at = files::through(&fd);
                    pins.push((real, fd));
                    at
                }
            };
            parents.push((*controller, at));
        }
        Ok(CgroupV1 {
            parents,
            parent: self.parent.clone(),
            _pins: Arc::new(pins.into_iter().map(|(_, fd)| fd).collect()),
            baselines: Baselines::default(),
        })
    }

    /// The run's directory in `controller`, if that controller is mounted.
    fn dir(&self, controller: &str, id: &str) -> Result<Option<PathBuf>> {
        let id = files::check_id(id)?;
        Ok(self
            .parents
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, p)| p.join(id)))
    }

    /// The run's directories, one per distinct controller directory.
    fn dirs(&self, id: &str) -> Result<Vec<PathBuf>> {
        let id = files::check_id(id)?;
        let mut out: Vec<PathBuf> = Vec::new();
        for (_, parent) in &self.parents {
            let dir = parent.join(id);
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        Ok(out)
    }

    fn write(&self, controller: &str, id: &str, file: &str, value: u64) -> Result<()> {
        match self.dir(controller, id)? {
            Some(dir) => files::write(&dir.join(file), &value.to_string()),
            None => Err(Error::Cgroup(format!(
                "the {controller} controller is not mounted, so its limit cannot be enforced"
            ))),
        }
    }

    /// A file of run `id`'s `controller` directory, empty if unreadable.
    fn read(&self, controller: &str, id: &str, file: &str) -> String {
        self.dir(controller, id)
            .ok()
            .flatten()
            .and_then(|d| files::read(&d.join(file)))
            .unwrap_or_default()
    }

    /// The kernel's figures for run `id`'s cgroup.
    fn counters(&self, id: &str) -> Counters {
        let read = |ctrl: &str, file: &str| self.read(ctrl, id, file);
        Counters {
            peak_memory_bytes: read("memory", "memory.max_usage_in_bytes")
                .trim()
                .parse()
                .unwrap_or(0),
            cpu: self.cpu(id),
            // The oom_kill counter of memory.oom_control (kernel 4.13 on)
            // counts processes the OOM killer killed in this cgroup.
            oom_kills: files::keyed(&read("memory", "memory.oom_control"), "oom_kill").unwrap_or(0),
            pids_refused: files::keyed(&read("pids", "pids.events"), "max").unwrap_or(0),
        }
    }

    fn cpu(&self, id: &str) -> Option<CpuTime> {
        let dir = self.dir("cpuacct", id).ok()??;
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

    fn create(&self, id: &str) -> Result<()> {
        for dir in self.dirs(id)? {
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    let _ = self.remove(id);
                    return Err(Error::io(format!("create {}", dir.display()), e));
                }
            }
        }
        Ok(())
    }

    fn attach(&self, id: &str, pid: i32) -> Result<()> {
        for dir in self.dirs(id)? {
            files::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, id: &str, limits: &Limits) -> Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            self.write("memory", id, "memory.limit_in_bytes", bytes)?;
            // Without a swap limit the tree could page out instead of being
            // stopped; the file is absent when swap accounting is off.
            if let Some(dir) = self.dir("memory", id)? {
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    self.write("memory", id, "memory.memsw.limit_in_bytes", bytes)?;
                }
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

    fn usage(&self, id: &str) -> Usage {
        self.baselines.usage(id, self.counters(id))
    }

    /// Lifts the limits, starts the peak and the CPU time again from here
    /// (both files take a 0 for that), and notes the counters as they are
    /// then (the two event counters only grow).
    fn restart(&self, id: &str) -> Result<bool> {
        if let Some(dir) = self.dir("memory", id)? {
            // The swap limit may not fall below the memory limit: it is
            // lifted first.
            if dir.join("memory.memsw.limit_in_bytes").exists() {
                files::write(&dir.join("memory.memsw.limit_in_bytes"), "-1")?;
            }
            files::write(&dir.join("memory.limit_in_bytes"), "-1")?;
            files::write(&dir.join("memory.max_usage_in_bytes"), "0")?;
        }
        if let Some(dir) = self.dir("pids", id)? {
            files::write(&dir.join("pids.max"), "max")?;
        }
        if let Some(dir) = self.dir("cpu", id)? {
            files::write(&dir.join("cpu.cfs_quota_us"), "-1")?;
        }
        if let Some(dir) = self.dir("cpuacct", id)? {
            files::write(&dir.join("cpuacct.usage"), "0")?;
        }
        self.baselines.set(id, Baseline::from(self.counters(id)));
        Ok(true)
    }

    fn run_dirs(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for (_, parent) in &self.parents {
            for id in files::subdirectories(parent) {
                let dir = parent.join(&id);
                // Co-mounted controllers (`cpu,cpuacct`) share a directory.
                if !out.iter().any(|(_, d)| *d == dir) {
                    out.push((id, dir));
                }
            }
        }
        out
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.baselines.forget(id);
        let mut first_error = None;
        for dir in self.dirs(id)? {
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
