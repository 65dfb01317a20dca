//! The channel between a run's process (outside) and its container's init
//! (inside): a `SOCK_STREAM` socketpair whose inside end is file descriptor
//! [`CONTROL_FD`] in the container. Outside sends the request-time plan
//! (with the command's standard streams as `SCM_RIGHTS` descriptors) once
//! the request is known; inside answers with one [`Report`] when the
//! command has ended or the plan could not be applied.
//!
//! Each message is a little-endian `u32` length and that many bytes of
//! JSON. Descriptors ride on the first byte's `sendmsg`.

use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// File descriptor of the control socket in the container (preserved by
/// libcontainer: the first above standard error).
pub(crate) const CONTROL_FD: RawFd = 3;

/// Largest message accepted (a plan carries argv and environment).
const MAX_MESSAGE: usize = 64 << 20;

/// Most descriptors one message carries (the three standard streams).
pub(crate) const MAX_FDS: usize = 3;

/// How the container's init ended the run, as it tells the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The command exited with this code.
    Exited(i32),
    /// A signal ended the command.
    Signaled(i32),
    /// The plan could not be applied; the command never started.
    Failed(String),
    /// Not an end: a descriptor whose last release unmounts something
    /// rides with this message (the detached copy of the host's mounts of
    /// a container serving one run, the mount namespace of a run in a
    /// container serving several), for the run's process to hold until
    /// its clean-up, after the answer (see `inside::rootfs`).
    Hold,
    /// Not an end: when the init's steps ended, sent before the end when
    /// the plan asks for it.
    Phases(InitPhases),
    /// Not an end: in a container serving several runs, the next run's
    /// process has made its namespaces and `/dev` and waits for its plan.
    Waiting,
}

/// What the outside sends the init of a container serving several runs
/// once it has answered a run's caller: make the next run's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NextRun;

/// When each of the init's steps ended, in nanoseconds of
/// `CLOCK_MONOTONIC` (one clock for every process of the machine, so the
/// outside can set them against its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InitPhases {
    /// The plan was read.
    pub plan: u64,
    /// The request's root is `/`.
    pub root: u64,
    /// Hostname, rlimits, streams, environment, working directory and
    /// identity set.
    pub settings: u64,
    /// Every capability dropped.
    pub capabilities: u64,
    /// Landlock in force.
    pub landlock: u64,
    /// Seccomp in force.
    pub seccomp: u64,
    /// The command was started.
    pub spawned: u64,
    /// The command and everything it left were reaped.
    pub reaped: u64,
}

/// Now, in nanoseconds of `CLOCK_MONOTONIC`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A new control socketpair: (outside, inside), both close-on-exec.
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("control socketpair", e))
}

/// Sends `message` and `fds` on `sock`.
pub(crate) fn send<T: Serialize>(sock: RawFd, message: &T, fds: &[RawFd]) -> Result<()> {
    let body = serde_json::to_vec(message)
        .map_err(|e| Error::InvalidRequest(format!("encode a control message: {e}")))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_MESSAGE)
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "the request is {} bytes, more than the {MAX_MESSAGE} allowed",
                body.len()
            ))
        })?;
    let header = len.to_le_bytes();
    let iov = [IoSlice::new(&header)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(sock, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| Error::sys("send on the control socket", e))?;
    if sent != header.len() {
        return Err(Error::Container("short write on the control socket".into()));
    }
    let mut rest = &body[..];
    while !rest.is_empty() {
        match nix::sys::socket::send(sock, rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("send on the control socket", e)),
        }
    }
    Ok(())
}

/// Receives one message and the descriptors sent with it. `Ok(None)` when
/// the other end closed without sending anything.
pub(crate) fn recv<T: DeserializeOwned>(sock: RawFd) -> Result<Option<(T, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let fds = crate::packet::descriptors(&msg)
                    .map_err(|e| Error::sys("control message", e))?;
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("receive on the control socket", e)),
        }
    };
    if got == 0 {
        return Ok(None);
    }
    let mut file = borrowed(sock);
    if got < header.len() {
        file.read_exact(&mut header[got..])
            .map_err(|e| Error::io("receive on the control socket", e))?;
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_MESSAGE {
        return Err(Error::Container(format!(
            "control message of {len} bytes, more than the {MAX_MESSAGE} allowed"
        )));
    }
    let mut body = vec![0u8; len];
    file.read_exact(&mut body)
        .map_err(|e| Error::io("receive on the control socket", e))?;
    let message = serde_json::from_slice(&body)
        .map_err(|e| Error::Container(format!("undecodable control message: {e}")))?;
    Ok(Some((message, fds)))
}

/// `sock` as a `File` for `Read`/`Write`, without taking ownership.
pub(crate) fn borrowed(sock: RawFd) -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: the caller owns `sock` for the duration of the call; the
    // ManuallyDrop never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(sock) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send(
            a.as_raw_fd(),
            &Report::Failed("x".repeat(100_000)),
            &[file.as_raw_fd()],
        )
        .unwrap();
        let (report, fds): (Report, _) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!(report, Report::Failed("x".repeat(100_000)));
        assert_eq!(fds.len(), 1);
        send(a.as_raw_fd(), &Report::Exited(3), &[]).unwrap();
        drop(a);
        let (report, fds): (Report, _) = recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((report, fds.len()), (Report::Exited(3), 0));
        assert!(recv::<Report>(b.as_raw_fd()).unwrap().is_none());
    }
}
