//! Running the command as the uid/gid an action asked for (BuildStream's
//! `unixUID`/`unixGID`).
//!
//! The container's user namespace maps one id, 0, to the sandbox's host
//! user: libcontainer needs uid and gid 0 inside while it sets the
//! container up, and an unprivileged runner can write only one mapping.
//! When other ids are wanted, the container's init, just before it confines
//! itself, makes a nested user namespace in which its own id (0 outside) is
//! the requested one. Files the sandbox user owns then appear owned by the
//! requested user, as in BuildStream's own bubblewrap sandbox. The kernel
//! lets a process map the parent's uid 0 only if it held CAP_SETFCAP there
//! when it made the namespace, so the spec leaves [`INIT_CAPS`] to the init
//! until then. Every capability is dropped right after, and seccomp,
//! installed next, forbids any further user namespace.

use std::fs;

use crate::error::{Error, Result};

/// What the container init additionally holds until the namespace is made.
pub const INIT_CAPS: [&str; 1] = ["CAP_SETFCAP"];

/// Becomes `uid`/`gid` through a nested user namespace; nothing to do for
/// 0/0.
pub fn become_ids(uid: u32, gid: u32) -> Result<()> {
    if (uid, gid) == (0, 0) {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| Error::sys("unshare a user namespace for the requested uid/gid", e))?;
    // libcontainer made this process non-dumpable, which gives its /proc
    // files to the initial namespace's root and so out of reach here; the
    // command's exec makes its own process dumpable in any case.
    set_dumpable(true)?;
    let write = |file: &str, text: String| {
        fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| Error::io(format!("writing /proc/self/{file}"), e))
    };
    // Without CAP_SETGID outside, the gid map may be written only once
    // setgroups is denied; the command may not change its groups anyway.
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} 0 1\n"))?;
    write("gid_map", format!("{gid} 0 1\n"))?;
    set_dumpable(false)
}

fn set_dumpable(on: bool) -> Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE and 0 or 1.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(Error::sys(
            "prctl PR_SET_DUMPABLE",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}
