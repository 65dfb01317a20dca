//! The checks a request passes before any container is touched, so that
//! a mistake is reported naming the real problem: the command, the
//! working directory, the subtrees, the input root and lower directories.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host::Host;
use crate::request::{Rootfs, SandboxRequest};
use crate::spec::{self, Layout};

/// Checks everything a person could have got wrong, before any container
/// exists, so the error names the real problem.
pub(crate) fn check(host: &Host, req: &SandboxRequest, layout: &Layout) -> Result<()> {
    if req.args.is_empty() {
        return Err(Error::InvalidRequest("the command is empty".into()));
    }
    if req.network && !host.allow_network {
        return Err(Error::NetworkForbidden);
    }
    if !req.input_root.is_absolute() || !req.input_root.is_dir() {
        return Err(Error::MissingInputRoot(req.input_root.clone()));
    }
    if !req.scratch_dir.is_absolute() || !req.scratch_dir.is_dir() {
        return Err(Error::InvalidRequest(format!(
            "scratch directory {} must be an existing absolute directory",
            req.scratch_dir.display()
        )));
    }
    if let Rootfs::Lower(dirs) = &req.rootfs {
        if dirs.is_empty() {
            return Err(Error::InvalidRequest("no lower directories given".into()));
        }
        for d in dirs {
            if !d.is_dir() {
                return Err(Error::MissingRootfs(d.clone()));
            }
        }
    }
    let subtrees = (req
        .read_only_subtrees
        .iter()
        .map(|s| ("read-only subtree", s)))
    .chain(
        req.writable_subtrees
            .iter()
            .map(|s| ("writable subtree", s)),
    );
    for (what, sub) in subtrees {
        spec::check_relative(what, sub)?;
        // Every component must be a real directory: the mount's source is
        // resolved on the host, so a symlink could point anywhere.
        let mut path = req.input_root.clone();
        for component in sub.split('/').filter(|c| !c.is_empty() && *c != ".") {
            path.push(component);
            if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(Error::InvalidRequest(format!(
                    "{what} {sub:?} is not a directory of the input root (at {component:?})"
                )));
            }
        }
    }
    // The caller may have made a working directory the input root lacks in
    // the overlay's upper directory (REAPI: the worker creates it).
    let is_dir =
        |base: &Path| std::fs::symlink_metadata(base.join(&req.cwd)).is_ok_and(|m| m.is_dir());
    if !is_dir(&req.input_root) && !is_dir(&layout.upper) {
        return Err(Error::BadWorkingDirectory(req.cwd.clone()));
    }
    resolve_command(req, layout).map(|_| ())
}

/// Maps a path as the sandbox sees it to the host paths that may hold it,
/// top layer first.
fn host_candidates(req: &SandboxRequest, layout: &Layout, inside: &Path) -> Vec<PathBuf> {
    if let Ok(rel) = inside.strip_prefix(&layout.input_mount) {
        return vec![req.input_root.join(rel)];
    }
    match &req.rootfs {
        Rootfs::InputRoot => vec![],
        Rootfs::Host => {
            if req.profile.host_dirs.iter().any(|d| inside.starts_with(d)) {
                vec![inside.to_path_buf()]
            } else {
                vec![]
            }
        }
        Rootfs::Lower(dirs) => {
            let rel = inside.strip_prefix("/").unwrap_or(inside);
            dirs.iter().rev().map(|d| d.join(rel)).collect()
        }
    }
}

/// Finds the command the way execvp will inside: as a path if it has a
/// `/`, else along the request's PATH.
pub(crate) fn resolve_command(req: &SandboxRequest, layout: &Layout) -> Result<PathBuf> {
    let cmd = &req.args[0];
    let exists = |inside: &Path| {
        host_candidates(req, layout, inside)
            .iter()
            .any(|p| std::fs::symlink_metadata(p).is_ok())
    };
    let mut searched = Vec::new();
    if cmd.contains('/') {
        let inside = layout.cwd.join(cmd);
        if exists(&inside) {
            return Ok(inside);
        }
        searched.push(inside.display().to_string());
    } else {
        let path = req
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let inside = layout.cwd.join(dir).join(cmd);
            if exists(&inside) {
                return Ok(inside);
            }
            searched.push(inside.display().to_string());
        }
    }
    Err(Error::CommandNotFound {
        command: cmd.clone(),
        searched: if searched.is_empty() {
            "nothing: PATH is empty".into()
        } else {
            searched.join(", ")
        },
    })
}
