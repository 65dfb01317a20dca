//! cgroup v2: the unified hierarchy mounted at the cgroup root, as on
//! current systemd distributions.
//!
//! A run's cgroup is `<root>/<parent>/<run id>`. A controller
//! only appears in a child once its parent lists it in
//! `cgroup.subtree_control`, so the runner enables `cpu`, `memory` and
//! `pids` down to the parent: from the root at start-up when it runs as
//! root ([`CgroupV2::prepare`]), in the parent itself for each run.
//!
//! The root is a parameter so that tests can point the manager at a
//! directory laid out like cgroupfs; outside tests it is `/sys/fs/cgroup`.

use std::collections::HashMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::baseline::{Baseline, Baselines, Counters};
use super::files;
use super::limit_enforcer::{CpuTime, Enforcement, LimitEnforcer, Usage};
use crate::error::{Error, Result};
use crate::request::Limits;

/// Controllers a run's cgroup gets when the parent offers them.
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];
/// Controllers without which the runner does not use cgroup v2 at all:
/// the default limits are memory and pids.
const REQUIRED: [&str; 2] = ["memory", "pids"];
/// Period written to `cpu.max`, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// Limits runs with the cgroup v2 hierarchy mounted at `root`.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
    parent: String,
    /// Once pinned: the parent's directory reached through a descriptor.
    pinned: Option<(PathBuf, Arc<OwnedFd>)>,
    /// Counters noted at each run's restart.
    baselines: Baselines,
    /// `memory.peak` of each restarted run, opened and reset at the
    /// restart: read through the same descriptor, it gives the peak since
    /// (Linux 6.12).
    peaks: Arc<Mutex<HashMap<String, fs::File>>>,
}

/// The words of a space-separated interface file, such as
/// `cgroup.controllers`; none if it cannot be read.
fn words(path: &Path) -> Vec<String> {
    files::read(path)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Controllers that `dir`'s children may use.
fn available(dir: &Path) -> Vec<String> {
    words(&dir.join("cgroup.controllers"))
}

/// The [`WANTED`] controllers that `dir` offers its children.
fn offered_wanted(dir: &Path) -> Vec<&'static str> {
    let offered = available(dir);
    WANTED
        .into_iter()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect()
}

/// Enables in `dir`'s `cgroup.subtree_control` those `wanted` controllers
/// that are not enabled yet. One write for all of them; if the kernel
/// refuses it, one write each, so that a controller it will not enable here
/// (`cpu` with a realtime process, for one) does not cost the others. Only
/// a required controller's failure is an error.
fn enable(dir: &Path, wanted: &[&str]) -> Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = words(&control);
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    if files::write(&control, &all.join(" ")).is_ok() {
        return Ok(());
    }
    let mut first_error = None;
    for c in missing {
        if let Err(e) = files::write(&control, &format!("+{c}")) {
            if REQUIRED.contains(&c) {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Fails with [`Error::CgroupController`] unless `dir` offers every one of
/// `controllers` to its children.
fn require(dir: &Path, controllers: &[&str]) -> Result<()> {
    let offered = available(dir);
    match controllers
        .iter()
        .find(|c| !offered.iter().any(|o| o == *c))
    {
        Some(c) => Err(Error::CgroupController {
            controller: c.to_string(),
            dir: dir.to_path_buf(),
        }),
        None => Ok(()),
    }
}

impl CgroupV2 {
    /// Runs go in `<root>/<parent>/<run id>`; `root` is `/sys/fs/cgroup`
    /// outside tests.
    pub fn new(root: impl Into<PathBuf>, parent: impl Into<String>) -> CgroupV2 {
        CgroupV2 {
            root: root.into(),
            parent: parent.into(),
            pinned: None,
            baselines: Baselines::default(),
            peaks: Arc::default(),
        }
    }

    /// The same enforcer reaching the parent through a descriptor opened
    /// now, so that it keeps working in a mount namespace where
    /// `/sys/fs/cgroup` is covered.
    pub fn pinned(&self) -> Result<CgroupV2> {
        files::check_parent(&self.parent)?;
        let fd = files::pin(&self.root.join(self.parent.trim_matches('/')))?;
        Ok(CgroupV2 {
            pinned: Some((files::through(&fd), Arc::new(fd))),
            baselines: Baselines::default(),
            peaks: Arc::default(),
            ..self.clone()
        })
    }

    fn parent_dir(&self) -> PathBuf {
        match &self.pinned {
            Some((at, _)) => at.clone(),
            None => self.root.join(self.parent.trim_matches('/')),
        }
    }

    fn run_dir(&self, id: &str) -> Result<PathBuf> {
        match &self.pinned {
            Some((at, _)) => Ok(at.join(files::check_id(id)?)),
            None => Ok(self.root.join(files::run_relative(&self.parent, id)?)),
        }
    }

    /// As root, at start-up: makes the parent and enables `cpu`, `memory`
    /// and `pids` (those offered) at every level above it, so that the
    /// parent can offer them to its children. Fails if the root does not
    /// offer `memory` and `pids`.
    pub fn prepare(&self) -> Result<()> {
        files::check_parent(&self.parent)?;
        require(&self.root, &REQUIRED)?;
        let mut level = self.root.clone();
        for part in Path::new(self.parent.trim_matches('/')).components() {
            enable(&level, &offered_wanted(&level))?;
            level.push(part);
            if !level.is_dir() {
                fs::create_dir(&level)
                    .map_err(|e| Error::io(format!("create {}", level.display()), e))?;
            }
        }
        Ok(())
    }

    /// For an unprivileged runner: whether the parent was delegated to this
    /// process. It must be writable, offer `memory` and `pids`, and hold the
    /// runner's own cgroup (`own`, from `/proc/self/cgroup`) strictly below
    /// it: the kernel only lets a process move another into a cgroup when it
    /// may write `cgroup.procs` of both cgroups' common ancestor.
    pub fn check_delegated(&self, own: Option<&str>) -> Result<()> {
        let parent = self.parent_dir();
        for path in [
            parent.clone(),
            parent.join("cgroup.procs"),
            parent.join("cgroup.subtree_control"),
        ] {
            nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK)
                .map_err(|e| Error::sys(format!("write access to {}", path.display()), e))?;
        }
        require(&parent, &REQUIRED)?;
        let below = format!("/{}/", self.parent.trim_matches('/'));
        match own {
            Some(own) if own.starts_with(&below) => Ok(()),
            _ => Err(Error::Cgroup(format!(
                "the runner's own cgroup {own:?} is not below {below}: it could not move \
                 containers into {}",
                parent.display()
            ))),
        }
    }

    fn write_limits(&self, dir: &Path, limits: &Limits) -> Result<()> {
        if let Some(bytes) = limits.memory_bytes {
            files::write(&dir.join("memory.max"), &bytes.to_string())?;
            // Like memsw on v1: at the limit the tree is stopped, not paged
            // out. Absent without swap accounting.
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                files::write(&swap, "0")?;
            }
        }
        if let Some(max) = limits.max_pids {
            files::write(&dir.join("pids.max"), &max.to_string())?;
        }
        if let Some(millis) = limits.cpu_millis {
            let quota = (millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000);
            files::write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        Ok(())
    }
}

impl CgroupV2 {
    /// The kernel's figures for run `id`, whose cgroup is `dir`.
    fn counters(&self, id: &str, dir: &Path) -> Counters {
        let text = |file: &str| files::read(&dir.join(file)).unwrap_or_default();
        // memory.peak came with Linux 5.19; before it only the charge at
        // the end is known, a lower bound.
        let peak = self
            .peak_since_restart(id)
            .or_else(|| files::read_u64(&dir.join("memory.peak")))
            .or_else(|| files::read_u64(&dir.join("memory.current")))
            .unwrap_or(0);
        Counters {
            peak_memory_bytes: peak,
            cpu: cpu_time(&text("cpu.stat")),
            oom_kills: files::keyed(&text("memory.events"), "oom_kill").unwrap_or(0),
            pids_refused: files::keyed(&text("pids.events"), "max").unwrap_or(0),
        }
    }

    /// The peak since run `id`'s restart, read through the descriptor
    /// that reset it.
    fn peak_since_restart(&self, id: &str) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let peaks = self.peaks.lock().ok()?;
        let file = peaks.get(id)?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
}

/// The CPU time of a `cpu.stat`.
fn cpu_time(stat: &str) -> Option<CpuTime> {
    let usec = |key: &str| files::keyed(stat, key).map(Duration::from_micros);
    Some(CpuTime {
        total: usec("usage_usec")?,
        user: usec("user_usec")?,
        system: usec("system_usec")?,
    })
}

impl LimitEnforcer for CgroupV2 {
    fn enforcement(&self) -> Enforcement {
        Enforcement {
            name: "cgroup v2",
            memory: "memory.max, memory.swap.max 0 (whole tree)",
            pids: "pids.max (whole tree)",
            cpu: "cpu.max",
        }
    }

    fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.parent.trim_matches('/'))
    }

    fn create(&self, id: &str) -> Result<()> {
        let dir = self.run_dir(id)?;
        let parent = self.parent_dir();
        enable(&parent, &offered_wanted(&parent))?;
        match fs::create_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(format!("create {}", dir.display()), e)),
        }
    }

    fn attach(&self, id: &str, pid: i32) -> Result<()> {
        files::write(&self.run_dir(id)?.join("cgroup.procs"), &pid.to_string())
    }

    fn apply(&self, id: &str, limits: &Limits) -> Result<()> {
        let needed: Vec<&str> = [
            (limits.memory_bytes, "memory"),
            (limits.max_pids, "pids"),
            (limits.cpu_millis, "cpu"),
        ]
        .into_iter()
        .filter_map(|(limit, c)| limit.map(|_| c))
        .collect();
        require(&self.parent_dir(), &needed)?;
        self.write_limits(&self.run_dir(id)?, limits)
    }

    fn usage(&self, id: &str) -> Usage {
        let Ok(dir) = self.run_dir(id) else {
            return Usage::default();
        };
        self.baselines.usage(id, self.counters(id, &dir))
    }

    /// Lifts the limits, resets the peak through a descriptor kept for
    /// the next reading, and notes the counters, which only grow. A kernel
    /// whose `memory.peak` cannot be reset (before 6.12) answers `false`.
    fn restart(&self, id: &str) -> Result<bool> {
        let dir = self.run_dir(id)?;
        for (file, value) in [
            ("memory.swap.max", "max"),
            ("memory.max", "max"),
            ("pids.max", "max"),
            ("cpu.max", "max"),
        ] {
            let path = dir.join(file);
            if path.exists() {
                files::write(&path, value)?;
            }
        }
        let counters = self.counters(id, &dir);
        let Ok(mut peak) = fs::File::options()
            .read(true)
            .write(true)
            .open(dir.join("memory.peak"))
        else {
            return Ok(false);
        };
        use std::io::Write;
        if peak.write_all(b"reset\n").is_err() {
            return Ok(false);
        }
        if let Ok(mut peaks) = self.peaks.lock() {
            peaks.insert(id.to_string(), peak);
        }
        self.baselines.set(id, Baseline::from(counters));
        Ok(true)
    }

    fn run_dirs(&self) -> Vec<(String, PathBuf)> {
        let parent = self.parent_dir();
        files::subdirectories(&parent)
            .into_iter()
            .map(|id| {
                let dir = parent.join(&id);
                (id, dir)
            })
            .collect()
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.baselines.forget(id);
        if let Ok(mut peaks) = self.peaks.lock() {
            peaks.remove(id);
        }
        let dir = self.run_dir(id)?;
        if !dir.is_dir() {
            return Ok(());
        }
        // cgroup.kill (Linux 5.14) kills the whole tree at once, including
        // processes forking while the list is being read.
        let kill = dir.join("cgroup.kill");
        if !(kill.exists() && files::write(&kill, "1").is_ok()) {
            files::kill_listed(&dir.join("cgroup.procs"));
        }
        files::remove_dir(&dir)
    }
}
