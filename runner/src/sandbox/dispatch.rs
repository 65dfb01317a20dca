//! One request in a prepared container: its limits into the run's cgroup,
//! its scratch directories, its plan and standard streams to the waiting
//! init, and the watch until the command ends.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Instant, SystemTime};

use super::cleanup::Cleanup;
use super::ms;
use super::prepare::Prepared;
use super::watch::{watch, Watch, Watched};
use super::written::Written;
use crate::coarse_clock;
use crate::control;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::plan::Plan;
use crate::request::{Outcome, Rootfs, SandboxRequest, Stdio};
use crate::seccomp::Filters;
use crate::spec::Layout;

fn open_stdio(which: &Stdio, fd: i32) -> Result<OwnedFd> {
    match which {
        Stdio::Null => File::options()
            .read(fd == 0)
            .write(fd != 0)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| Error::io("open /dev/null", e)),
        Stdio::File(path) => File::create(path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(format!("create {}", path.display()), e)),
        Stdio::Terminal(_) => Err(Error::InvalidRequest(
            "a terminal is all three streams: give it as stdin".into(),
        )),
        Stdio::Passed(i) => Err(Error::InvalidRequest(format!(
            "stream {fd} is descriptor {i} of those sent with the request, \
             but none reached this process"
        ))),
        Stdio::Inherit | Stdio::Fd(_) => nix::unistd::dup(match which {
            Stdio::Fd(own) => *own,
            _ => fd,
        })
        // SAFETY: dup returned a new descriptor that nothing else owns.
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        .map_err(|e| Error::sys(format!("dup fd {fd}"), e)),
    }
}

fn make_dir(path: &Path, host: &Host) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let owner = (host.map_uid, host.map_gid);
    // The sandbox's root is host uid map_uid: it must own what the overlay
    // writes into. One it owns already is left untouched: a chown sets the
    // ctime by which the exec service tells a reusable upper directory.
    let owned = std::fs::symlink_metadata(path).is_ok_and(|m| (m.uid(), m.gid()) == owner);
    if host.is_root && !owned {
        nix::unistd::chown(path, Some(owner.0.into()), Some(owner.1.into()))
            .map_err(|e| Error::sys(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

/// Makes an overlay's work directory, or readies one a mount used before
/// (see [`clear_work`]).
fn make_work_dir(path: &Path, host: &Host) -> Result<()> {
    make_dir(path, host)?;
    clear_work(path).map_err(|e| Error::io(format!("clear {}", path.display()), e))
}

/// Removes what an overlay mount left in its work directory `work`: its
/// `work/work`, where a volatile mount (`inside::mounts::mount_overlay`)
/// leaves a marker that makes the next mount on it fail. The overlay
/// would remove the rest itself, but at mount time, on the run's clock.
/// A fresh work directory costs one failed lookup.
pub(crate) fn clear_work(work: &Path) -> std::io::Result<()> {
    corral_proto::scratch::remove_tree(&work.join("work"))
}

/// Runs `req` (checked) in `prepared`; returns when the command has ended,
/// leaving the clean-up to the caller. `filters` are `req`'s compiled
/// seccomp programs when the caller has them already.
pub(crate) fn run_prepared(
    prepared: Prepared,
    host: &Host,
    req: &SandboxRequest,
    filters: Option<Filters>,
) -> Result<(Outcome, Cleanup)> {
    let t0 = Instant::now();
    let (init, control) = (prepared.init, prepared.control.as_raw_fd());
    let mut cleanup = Cleanup::of(prepared);
    let result = (|| {
        let layout = Layout::new(host, req)?;
        let limits = host.with_defaults(&req.limits);
        cleanup.enforcer.apply(&cleanup.id, &limits)?;
        make_dir(&layout.upper, host)?;
        make_work_dir(&layout.work, host)?;
        if let Rootfs::Lower(_) = req.rootfs {
            make_dir(&req.scratch_dir.join("sys-upper"), host)?;
            make_work_dir(&req.scratch_dir.join("sys-work"), host)?;
        }
        let filters = match filters {
            Some(f) => f,
            None => Filters::build(&req.profile)?,
        };
        let mut plan = Plan::new(host, req, &layout, &limits, filters);
        plan.report_phases = super::watch::phases_wanted();
        let streams = if plan.terminal {
            Vec::new()
        } else {
            vec![
                open_stdio(&req.stdin, 0)?,
                open_stdio(&req.stdout, 1)?,
                open_stdio(&req.stderr, 2)?,
            ]
        };
        tracing::debug!(ms = ms(t0), "request prepared");
        let settled = req
            .upper_holds_only_directories
            .then(|| coarse_clock::settled_before(SystemTime::now()));
        let started = Instant::now();
        let plan_sent = control::monotonic_ns();
        let raw: Vec<i32> = streams.iter().map(|f| f.as_raw_fd()).collect();
        control::send(control, &plan, &raw)?;
        drop(streams);
        let pidfd = match &cleanup.init {
            Some((_, fd)) => fd,
            None => return Err(Error::Container("the container's init is gone".into())),
        };
        let outcome = watch(Watched {
            init,
            pidfd,
            control,
            written: Written::new(&layout.upper, settled, req.upper_watch.as_ref()),
            limits: &limits,
            enforcer: (cleanup.enforcer.as_ref(), &cleanup.id),
            started,
            plan_sent,
        });
        tracing::debug!(ms = ms(started), "run and wait");
        outcome
    })();
    match result {
        Ok(Watch {
            outcome,
            init_reaped,
            held,
        }) => {
            cleanup.held = held;
            if init_reaped {
                // Its pid may belong to another process from now on.
                cleanup.init = None;
            }
            Ok((outcome, cleanup))
        }
        Err(e) => {
            cleanup.finish();
            Err(e)
        }
    }
}
