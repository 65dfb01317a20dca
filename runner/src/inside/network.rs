//! The network namespace of a serving container's runs, handed from one
//! run to the next while no run has used it.
//!
//! A new network namespace is the dearest part of readying a run: the
//! kernel registers its per-namespace sysctl tables when it is made and
//! tears it down in a kernel worker when it goes, together about 1 ms of
//! CPU per run on a 2-core machine (`perf`, docs/benchmarks.md), and most
//! actions never touch the network. So the namespace a run had goes to the
//! next run's process, which keeps it only if everything a process can
//! read of it is as it was when it was made: every interface's counters,
//! the IP, ICMP, TCP and UDP statistics of both IP versions, and the
//! sockets in use or in TIME_WAIT. A packet sent, a connection refused, a
//! route looked up, a socket left in any state: the run's process makes a
//! new namespace instead. Nothing else of a namespace can be changed by a
//! run: every capability is gone before its command starts (so no address,
//! route, filter or interface state), and `/proc/sys` is read-only.

use std::os::fd::OwnedFd;

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The files of `/proc/self/net` that are the namespace's own figures,
/// compared whole.
const COUNTERS: [&str; 4] = ["dev", "snmp", "snmp6", "netstat"];

/// The socket summaries, of which only some figures belong to the
/// namespace (the memory figures and the orphan count are the machine's).
const SOCKETS: [&str; 2] = ["sockstat", "sockstat6"];

/// The per-namespace figures of [`SOCKETS`]: sockets in use, in TIME_WAIT.
const SOCKET_FIGURES: [&str; 2] = ["inuse", "tw"];

/// What the next run of a container needs of a network namespace: a
/// handle that keeps it, and what could be read of it when it was new.
#[derive(Debug)]
pub(crate) struct Network {
    /// `/proc/self/ns/net` of a process that was in it.
    pub handle: OwnedFd,
    /// [`Fingerprint`] of the namespace when it was made.
    pub fresh: Fingerprint,
}

/// Everything a process can read of a network namespace's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint(String);

impl Fingerprint {
    /// The calling process's network namespace as `/proc/self/net` shows it.
    pub(crate) fn read() -> Result<Fingerprint> {
        let mut all = String::new();
        for name in COUNTERS {
            all.push_str(&read_net(name)?);
        }
        for name in SOCKETS {
            all.push_str(&own_figures(&read_net(name)?));
        }
        Ok(Fingerprint(all))
    }
}

fn read_net(name: &str) -> Result<String> {
    let path = format!("/proc/self/net/{name}");
    std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))
}

/// Of a `sockstat` file, the label of each line and the figures that
/// follow a name in [`SOCKET_FIGURES`].
fn own_figures(sockstat: &str) -> String {
    let mut kept = String::new();
    for line in sockstat.lines() {
        let mut words = line.split_whitespace();
        if let Some(label) = words.next() {
            kept.push_str(label);
        }
        while let Some(word) = words.next() {
            if SOCKET_FIGURES.contains(&word) {
                kept.push(' ');
                kept.push_str(word);
                kept.push(' ');
                kept.push_str(words.next().unwrap_or(""));
            }
        }
        kept.push('\n');
    }
    kept
}

/// How the calling process came by its network namespace.
pub(crate) enum Entered {
    /// The last run's, unused.
    Kept,
    /// A new one, to be handed on.
    Made(Network),
}

/// Puts the calling process (with CAP_SYS_ADMIN in the container's user
/// namespace) in `last` if it is as it was new, else in a new namespace
/// with `lo` up when `loopback_up`.
pub(crate) fn enter(last: Option<&Network>, loopback_up: bool) -> Result<Entered> {
    if let Some(last) = last {
        let entered = nix::sched::setns(&last.handle, CloneFlags::CLONE_NEWNET);
        if entered.is_ok() && Fingerprint::read()? == last.fresh {
            return Ok(Entered::Kept);
        }
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("unshare the run's network namespace", e))?;
    if loopback_up {
        crate::loopback::bring_up()?;
    }
    let fresh = Fingerprint::read()?;
    let handle = std::fs::File::open("/proc/self/ns/net")
        .map_err(|e| Error::io("open the run's network namespace", e))?;
    Ok(Entered::Made(Network {
        handle: handle.into(),
        fresh,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_namespaces_own_socket_figures_count() {
        let a = "sockets: used 2\nTCP: inuse 0 orphan 0 tw 0 alloc 1 mem 0\nUDP: inuse 0 mem 256\n";
        let b = "sockets: used 5\nTCP: inuse 0 orphan 7 tw 0 alloc 9 mem 3\nUDP: inuse 0 mem 512\n";
        assert_eq!(own_figures(a), own_figures(b));
        assert_eq!(
            own_figures(a),
            "sockets:\nTCP: inuse 0 tw 0\nUDP: inuse 0\n"
        );
        let tw = "sockets: used 2\nTCP: inuse 0 orphan 0 tw 1 alloc 1 mem 0\n";
        assert_ne!(own_figures(a), own_figures(tw));
    }
}
