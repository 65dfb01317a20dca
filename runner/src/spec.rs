//! Builds the OCI runtime spec (`config.json`) of one run: namespaces, the
//! id mapping, the mount table of each rootfs mode, rlimits and the cgroup
//! path (both from the host's `LimitEnforcer`). seccomp and Landlock are
//! not in it: the executor installs them.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::request::{Limits, Rootfs, SandboxRequest};

/// Where things are, inside and outside, for one run.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Host: the directory libcontainer pivots into.
    pub rootfs: PathBuf,
    /// Host: overlay upper and work directories of the input root.
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Inside: where the input root is mounted ("/" or the exec path).
    pub input_mount: PathBuf,
    /// Inside: the working directory.
    pub cwd: PathBuf,
    /// Inside: the paths the action may write under (Landlock).
    pub writable: Vec<PathBuf>,
}

/// Checks a path relative to the input root: no `..`, no leading `/`, no NUL.
pub fn check_relative(what: &str, rel: &str) -> Result<()> {
    if rel.starts_with('/') || rel.contains('\0') || rel.split('/').any(|c| c == "..") {
        return Err(Error::InvalidRequest(format!(
            "{what} {rel:?} must be relative to the input root without '..'"
        )));
    }
    Ok(())
}

impl Layout {
    pub fn new(host: &Host, req: &SandboxRequest) -> Result<Layout> {
        check_relative("working directory", &req.cwd)?;
        let input_mount = match req.rootfs {
            Rootfs::InputRoot => PathBuf::from("/"),
            _ => host.exec_path.clone(),
        };
        let cwd = input_mount.join(req.cwd.trim_end_matches('/'));
        let mut writable = vec![PathBuf::from("/tmp"), PathBuf::from("/dev")];
        writable.push(input_mount.clone());
        writable.extend(req.profile.extra_writable.iter().cloned());
        Ok(Layout {
            rootfs: req.scratch_dir.join("rootfs"),
            upper: req.scratch_dir.join("upper"),
            work: req.scratch_dir.join("work"),
            input_mount,
            cwd,
            writable,
        })
    }
}

fn overlay(dest: &Path, lowers: &[PathBuf], upper: &Path, work: &Path) -> Value {
    let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    json!({
        "destination": dest,
        "type": "overlay",
        "source": "overlay",
        "options": [
            format!("lowerdir={}", lower.join(":")),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
            "userxattr",
        ],
    })
}

fn bind_ro(src: &Path, dest: &Path) -> Value {
    json!({
        "destination": dest,
        "type": "bind",
        "source": src,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    })
}

/// `SubtreeReadOnly` directories and the writable exceptions below them,
/// each bound onto itself from the input root's overlay (never from the
/// cached lower layer), deepest first: a bind carries the mounts beneath
/// it, and `ro` applies to its own top only, so an exception mounted before
/// its read-only parent stays writable.
fn subtree_mounts(req: &SandboxRequest, layout: &Layout) -> Vec<Value> {
    let inside = layout
        .input_mount
        .strip_prefix("/")
        .unwrap_or(&layout.input_mount);
    let overlay_root = layout.rootfs.join(inside);
    let mut subtrees: Vec<(&String, bool)> = (req.read_only_subtrees.iter().map(|s| (s, true)))
        .chain(req.writable_subtrees.iter().map(|s| (s, false)))
        .collect();
    let depth = |s: &str| s.split('/').filter(|c| !c.is_empty() && *c != ".").count();
    subtrees.sort_by_key(|(s, _)| std::cmp::Reverse(depth(s)));
    subtrees
        .into_iter()
        .map(|(sub, read_only)| {
            let mut options = vec!["rbind", "nosuid", "nodev"];
            if read_only {
                options.push("ro");
            }
            json!({
                "destination": layout.input_mount.join(sub),
                "type": "bind",
                "source": overlay_root.join(sub),
                "options": options,
            })
        })
        .collect()
}

fn tmpfs(dest: &str, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options })
}

/// The mount table: the root's own mounts first, then the input root, the
/// kernel filesystems, and the read-only subtrees.
fn mounts(host: &Host, req: &SandboxRequest, layout: &Layout, limits: &Limits) -> Vec<Value> {
    let mut out = Vec::new();
    match &req.rootfs {
        Rootfs::InputRoot => {}
        Rootfs::Host => {
            for dir in &req.profile.host_dirs {
                if let Ok(real) = std::fs::canonicalize(dir) {
                    if real.is_dir() {
                        out.push(bind_ro(&real, dir));
                    }
                }
            }
        }
        Rootfs::Lower(dirs) => {
            // overlayfs lists the top layer first.
            let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
            out.push(overlay(
                Path::new("/"),
                &lowers,
                &req.scratch_dir.join("sys-upper"),
                &req.scratch_dir.join("sys-work"),
            ));
        }
    }
    out.push(overlay(
        &layout.input_mount,
        std::slice::from_ref(&req.input_root),
        &layout.upper,
        &layout.work,
    ));
    let _ = host;
    out.push(json!({
        "destination": "/proc", "type": "proc", "source": "proc",
        "options": ["nosuid", "noexec", "nodev"],
    }));
    out.push(tmpfs(
        "/dev",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ));
    out.push(json!({
        "destination": "/dev/pts", "type": "devpts", "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
    }));
    // BuildStream's local sandbox (bubblewrap) gives `/tmp` and `/dev/shm`
    // mode 0755; the input-root mode serves BuildStream, so an action sees
    // the same there as locally. Other modes keep the usual sticky 1777.
    let shared = match req.rootfs {
        Rootfs::InputRoot => "mode=755",
        _ => "mode=1777",
    };
    out.push(tmpfs(
        "/dev/shm",
        &["nosuid", "noexec", "nodev", shared, "size=65536k"],
    ));
    let tmp_size = format!("size={}", limits.max_written_bytes.unwrap_or(1 << 30));
    out.push(tmpfs("/tmp", &["nosuid", "nodev", shared, &tmp_size]));
    // Last: a read-only `/` (input root as root) must carry the kernel
    // filesystems above along with it, writable as they are.
    out.extend(subtree_mounts(req, layout));
    out
}

fn rlimit(kind: &str, value: u64) -> Value {
    json!({ "type": kind, "hard": value, "soft": value })
}

/// The whole `config.json`.
pub fn build(
    host: &Host,
    req: &SandboxRequest,
    layout: &Layout,
    limits: &Limits,
    cgroups_path: &str,
) -> Value {
    let mut namespaces = vec![
        json!({"type": "user"}),
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "cgroup"}),
    ];
    if !req.network {
        namespaces.push(json!({"type": "network"}));
    }
    let mut rlimits = vec![rlimit("RLIMIT_CORE", 0)];
    if let Some(bytes) = limits.max_written_bytes {
        rlimits.push(rlimit("RLIMIT_FSIZE", bytes));
    }
    // Without a cgroup, memory, pids and CPU are bounded by rlimits.
    for r in host.limit_enforcer().rlimits(limits) {
        rlimits.push(rlimit(r.kind, r.value));
    }
    let env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let no_caps: Vec<String> = Vec::new();
    // Only for bringing up lo and for mapping the command's own user
    // namespace; the executor drops them all before exec.
    let mut init_caps: Vec<String> = Vec::new();
    if !req.network {
        init_caps.extend(crate::loopback::INIT_CAPS.iter().map(|c| c.to_string()));
    }
    if (req.uid, req.gid) != (0, 0) {
        init_caps.extend(crate::identity::INIT_CAPS.iter().map(|c| c.to_string()));
    }
    json!({
        "ociVersion": "1.0.2",
        "root": { "path": layout.rootfs, "readonly": !matches!(req.rootfs, Rootfs::InputRoot) },
        "hostname": req.hostname,
        "process": {
            "terminal": false,
            // libcontainer sets up the container as uid/gid 0; the executor
            // then becomes the requested ids in a nested user namespace
            // (see `crate::identity`).
            "user": { "uid": 0, "gid": 0 },
            "args": req.args,
            "env": env,
            "cwd": layout.cwd,
            "capabilities": {
                "bounding": init_caps, "effective": init_caps, "inheritable": no_caps,
                "permitted": init_caps, "ambient": no_caps,
            },
            "rlimits": rlimits,
            "noNewPrivileges": true,
        },
        "mounts": mounts(host, req, layout, limits),
        "linux": {
            "namespaces": namespaces,
            "uidMappings": [{ "containerID": 0, "hostID": host.map_uid, "size": 1 }],
            "gidMappings": [{ "containerID": 0, "hostID": host.map_gid, "size": 1 }],
            "cgroupsPath": cgroups_path,
            "maskedPaths": [
                "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    })
}
