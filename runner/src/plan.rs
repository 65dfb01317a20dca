//! What the container's init does once the request is known: the run's
//! own root file system, hostname, rlimits, environment, identity and
//! confinement. The container itself (namespaces, id mapping, `/proc`,
//! `/dev`, no capabilities beyond those the init needs for this) was made
//! before, by libcontainer, from a spec that names nothing of the request
//! (see `spec`); the plan is what differs from one action to the next.
//!
//! Host paths in a plan are absolute paths as the runner sees them; inside,
//! the init resolves them beneath its view of the host file system, which
//! it drops before the command starts (see `inside::rootfs`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::request::{Limits, Rootfs, SandboxRequest, Stdio};
use crate::seccomp::Filters;
use crate::spec::Layout;

/// An overlay of host directories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Overlay {
    /// Read-only layers, top first (overlayfs order).
    pub lowers: Vec<PathBuf>,
    /// Where changes go.
    pub upper: PathBuf,
    /// overlayfs's work directory, beside `upper`.
    pub work: PathBuf,
}

/// What becomes `/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum NewRoot {
    /// The input root's overlay, writable.
    InputRoot(Overlay),
    /// An empty tmpfs holding these host directories (host path, path
    /// inside), each bound read-only; read-only itself.
    HostDirs(Vec<(PathBuf, PathBuf)>),
    /// An overlay of an image's layers, read-only.
    Layers(Overlay),
}

/// One `process.rlimits`-style limit: resource name and value (hard = soft).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rlimit {
    /// `RLIMIT_CORE`, `RLIMIT_FSIZE`, `RLIMIT_AS`, `RLIMIT_NPROC`, `RLIMIT_CPU`.
    pub kind: String,
    /// The limit.
    pub value: u64,
}

/// Everything the init needs at request time. The command's standard
/// streams travel beside it as descriptors (none with a terminal).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// The new root.
    pub root: NewRoot,
    /// With a host or image root: the input root's overlay and where it
    /// is mounted (the exec path).
    pub input: Option<(Overlay, PathBuf)>,
    /// Binds of the new root onto themselves, deepest first: (path inside,
    /// read-only). `SubtreeReadOnly` and its writable exceptions.
    pub subtrees: Vec<(PathBuf, bool)>,
    /// Mode of `/tmp` and `/dev/shm`.
    pub shared_mode: u32,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: u64,
    /// The sandbox's hostname.
    pub hostname: String,
    /// Limits of the command's processes.
    pub rlimits: Vec<Rlimit>,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Exactly the command's environment.
    pub env: Vec<(String, String)>,
    /// Working directory, inside.
    pub cwd: PathBuf,
    /// uid and gid the command runs as (see `identity`).
    pub identity: (u32, u32),
    /// Paths Landlock lets the command write beneath; `None` without
    /// Landlock.
    pub writable: Option<Vec<PathBuf>>,
    /// The compiled seccomp programs, installed in order.
    pub seccomp: Filters,
    /// The command's streams are the container's terminal (`runner exec
    /// --shell`): none travel with the plan.
    pub terminal: bool,
    /// The command takes stdin, a terminal, as its controlling terminal in
    /// a session of its own.
    pub controlling_tty: bool,
    /// Paths inside the new root that are covered (the runner's
    /// `hidden_paths` where a host directory binds them).
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// The init reports when each of its steps ended
    /// ([`crate::control::Report::Phases`]), for the runner's debug log.
    #[serde(default)]
    pub report_phases: bool,
}

impl Plan {
    /// The plan of `req`, whose checks have passed.
    pub(crate) fn new(
        host: &Host,
        req: &SandboxRequest,
        layout: &Layout,
        limits: &Limits,
        seccomp: Filters,
    ) -> Plan {
        let input = Overlay {
            lowers: vec![req.input_root.clone()],
            upper: layout.upper.clone(),
            work: layout.work.clone(),
        };
        let mut hidden = Vec::new();
        let (root, input) = match &req.rootfs {
            Rootfs::InputRoot => (NewRoot::InputRoot(input), None),
            Rootfs::Host => {
                let dirs = host_dirs(&req.profile.host_dirs);
                hidden = hidden_inside(&dirs, &host.hidden);
                (
                    NewRoot::HostDirs(dirs),
                    Some((input, layout.input_mount.clone())),
                )
            }
            Rootfs::Lower(dirs) => (
                NewRoot::Layers(Overlay {
                    // overlayfs lists the top layer first.
                    lowers: dirs.iter().rev().cloned().collect(),
                    upper: req.scratch_dir.join("sys-upper"),
                    work: req.scratch_dir.join("sys-work"),
                }),
                Some((input, layout.input_mount.clone())),
            ),
        };
        // BuildStream's local sandbox (bubblewrap) gives `/tmp` and
        // `/dev/shm` mode 0755; the input-root mode serves BuildStream, so
        // an action sees the same there as locally. Other modes keep the
        // usual sticky 1777.
        let shared_mode = match req.rootfs {
            Rootfs::InputRoot => 0o755,
            _ => 0o1777,
        };
        let mut rlimits = vec![Rlimit {
            kind: "RLIMIT_CORE".into(),
            value: 0,
        }];
        if let Some(bytes) = limits.max_written_bytes {
            rlimits.push(Rlimit {
                kind: "RLIMIT_FSIZE".into(),
                value: bytes,
            });
        }
        // Without a cgroup, memory, pids and CPU are bounded by rlimits.
        for r in host.limit_enforcer().rlimits(limits) {
            rlimits.push(Rlimit {
                kind: r.kind.into(),
                value: r.value,
            });
        }
        Plan {
            root,
            input,
            subtrees: subtrees(req, layout),
            shared_mode,
            tmp_bytes: limits.max_written_bytes.unwrap_or(1 << 30),
            hostname: req.hostname.clone(),
            rlimits,
            args: req.args.clone(),
            env: req.env.clone(),
            cwd: layout.cwd.clone(),
            identity: (req.uid, req.gid),
            writable: req.profile.landlock.then(|| layout.writable.clone()),
            seccomp,
            terminal: matches!(req.stdin, Stdio::Terminal(_)),
            controlling_tty: req.controlling_tty,
            hidden,
            report_phases: false,
        }
    }
}

/// Where each hidden host path appears in a root of `dirs` (host path,
/// path inside): beneath every bound directory that holds it.
fn hidden_inside(dirs: &[(PathBuf, PathBuf)], hidden: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in hidden {
        for (source, inside) in dirs {
            if let Ok(rest) = path.strip_prefix(source) {
                out.push(inside.join(rest));
            }
        }
    }
    out
}

/// The profile's host directories that exist, each as (its canonical host
/// path, its path inside): `/lib` on a merged-`/usr` host is bound from
/// `/usr/lib`.
fn host_dirs(dirs: &[PathBuf]) -> Vec<(PathBuf, PathBuf)> {
    dirs.iter()
        .filter_map(|dir| {
            let real = std::fs::canonicalize(dir).ok()?;
            real.is_dir().then(|| (real, dir.clone()))
        })
        .collect()
}

/// `SubtreeReadOnly` directories and the writable exceptions below them,
/// deepest first: a bind carries the mounts beneath it, and read-only
/// applies to its own top only, so an exception bound before its
/// read-only parent stays writable.
fn subtrees(req: &SandboxRequest, layout: &Layout) -> Vec<(PathBuf, bool)> {
    let mut out: Vec<(&String, bool)> = (req.read_only_subtrees.iter().map(|s| (s, true)))
        .chain(req.writable_subtrees.iter().map(|s| (s, false)))
        .collect();
    let depth = |s: &str| s.split('/').filter(|c| !c.is_empty() && *c != ".").count();
    out.sort_by_key(|(s, _)| std::cmp::Reverse(depth(s)));
    out.into_iter()
        .map(|(sub, ro)| (inside_join(&layout.input_mount, sub), ro))
        .collect()
}

/// `base` joined with a relative path whose `.` and empty components are
/// dropped (the checks refused `..` already).
fn inside_join(base: &Path, rel: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for c in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        out.push(c);
    }
    out
}
