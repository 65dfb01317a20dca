//! The OCI runtime spec (`config.json`) libcontainer creates a container
//! from, and where a run's files are ([`Layout`]).
//!
//! The spec names nothing of the request, so the container can be made
//! before the request exists: namespaces, the id mapping, `/proc` with the
//! usual masked and read-only paths, `/dev`, `/dev/pts`, `/dev/shm`, and a
//! recursive bind of the host's `/` at [`HOST_VIEW`] from which the init
//! mounts the request's root (see `plan` and `inside::rootfs`). The init
//! keeps just the capabilities that work needs ([`INIT_CAPS`] and those of
//! `loopback` and `identity`) and drops them all before the command starts.
//! seccomp and Landlock are not in the spec either: the executor installs
//! them.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::request::{Rootfs, SandboxRequest};

/// Inside the container until the request's root replaces it: the host's
/// file system, as the run's process sees it.
pub(crate) const HOST_VIEW: &str = "/.corral-host";
/// Inside the container: where the init assembles the request's root.
pub(crate) const NEW_ROOT: &str = "/.corral-root";
/// Inside a container that serves several runs: where each run's own
/// `/dev` is made ahead of its request (see `inside::dev`).
pub(crate) const FRESH_DEV: &str = "/.corral-dev";

/// What the init needs beyond `loopback` and `identity`: mounting the
/// request's root, setting the hostname (`CAP_SYS_ADMIN`); entering the
/// request's root (`CAP_SYS_CHROOT`, see `inside::rootfs`); overlayfs's
/// work directory, whose `work/` it makes mode 000 (`CAP_DAC_OVERRIDE`,
/// over the sandbox user's own files only).
pub(crate) const INIT_CAPS: [&str; 3] = ["CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_DAC_OVERRIDE"];

/// The parts of a container that must be known when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Share the host network (no network namespace).
    pub network: bool,
    /// The command's streams are a terminal made in the container's
    /// devpts (libcontainer's console socket).
    pub terminal: bool,
}

/// Where things are, inside and outside, for one run.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Host: overlay upper directory of the input root.
    pub upper: PathBuf,
    /// Host: overlayfs's work directory beside it.
    pub work: PathBuf,
    /// Inside: where the input root is mounted ("/" or the exec path).
    pub input_mount: PathBuf,
    /// Inside: the working directory.
    pub cwd: PathBuf,
    /// Inside: the paths the action may write under (Landlock).
    pub writable: Vec<PathBuf>,
}

/// Checks a path relative to the input root: no `..`, no leading `/`, no NUL.
pub(crate) fn check_relative(what: &str, rel: &str) -> Result<()> {
    if rel.starts_with('/') || rel.contains('\0') || rel.split('/').any(|c| c == "..") {
        return Err(Error::InvalidRequest(format!(
            "{what} {rel:?} must be relative to the input root without '..'"
        )));
    }
    Ok(())
}

impl Layout {
    /// The layout of `req` on `host`.
    pub(crate) fn new(host: &Host, req: &SandboxRequest) -> Result<Layout> {
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
            upper: req.scratch_dir.join("upper"),
            work: req.scratch_dir.join("work"),
            input_mount,
            cwd,
            writable,
        })
    }
}

fn tmpfs(dest: &str, options: &[&str]) -> Value {
    json!({ "destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options })
}

/// The mount table: kernel file systems and the view of the host.
fn mounts() -> Vec<Value> {
    vec![
        json!({
            "destination": "/proc", "type": "proc", "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        }),
        tmpfs(
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        json!({
            "destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        }),
        tmpfs(
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        // Recursive: the host's mounts come along, locked to this view.
        json!({
            "destination": HOST_VIEW, "type": "bind", "source": "/",
            "options": ["rbind"],
        }),
    ]
}

/// The whole `config.json` of a container of `shape`, with `root` (an
/// empty directory holding the mount points) as its first root and
/// `cgroups_path` as its (never used, never empty) cgroup.
pub(crate) fn build(host: &Host, shape: Shape, root: &Path, cgroups_path: &str) -> Value {
    let mut namespaces = vec![
        json!({"type": "user"}),
        json!({"type": "pid"}),
        json!({"type": "mount"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "cgroup"}),
    ];
    if !shape.network {
        namespaces.push(json!({"type": "network"}));
    }
    let no_caps: Vec<String> = Vec::new();
    // The init's work before the command: the request's root and hostname,
    // bringing up lo, mapping the command's own user namespace. The
    // executor drops them all before it forks the command.
    let init_caps: Vec<String> = INIT_CAPS
        .iter()
        .chain(crate::loopback::INIT_CAPS.iter())
        .chain(crate::identity::INIT_CAPS.iter())
        .map(|c| c.to_string())
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "root": { "path": root, "readonly": false },
        "hostname": corral_proto::hostname::DEFAULT,
        "process": {
            "terminal": shape.terminal,
            // libcontainer sets up the container as uid/gid 0; the executor
            // then becomes the requested ids in a nested user namespace
            // (see `crate::identity`).
            "user": { "uid": 0, "gid": 0 },
            // The executor runs the request's command, never this.
            "args": ["/corral-placeholder"],
            "env": [],
            "cwd": "/",
            "capabilities": {
                "bounding": init_caps, "effective": init_caps, "inheritable": no_caps,
                "permitted": init_caps, "ambient": no_caps,
            },
            "rlimits": [{ "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }],
            "noNewPrivileges": true,
        },
        "mounts": mounts(),
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
