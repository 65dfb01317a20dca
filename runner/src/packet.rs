//! One message per `SOCK_SEQPACKET` record, with descriptors riding on it
//! as `SCM_RIGHTS`: the zygote's channels and `runner exec`'s resident
//! service pass a command's standard streams this way, so a stream reaches
//! the command as the very file the caller holds (a terminal, a pipe, a
//! socket, a file at its current offset), not a reopened path.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, RecvMsg};

/// The most descriptors one message carries (a command's three streams,
/// with room to spare).
pub(crate) const MAX_FDS: usize = 8;

/// Sends `bytes` as one record on `sock`, with `fds` attached.
pub(crate) fn send(sock: RawFd, bytes: &[u8], fds: &[RawFd], flags: MsgFlags) -> nix::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let flags = flags | MsgFlags::MSG_NOSIGNAL;
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, flags, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(n) if n == bytes.len() => return Ok(()),
            // A record is sent whole or not at all.
            Ok(_) => return Err(Errno::EMSGSIZE),
        }
    }
}

/// Receives one record into `buf`: its length (0 when the other end
/// closed) and the descriptors that came with it, close-on-exec. A record
/// longer than `buf`, or carrying more than [`MAX_FDS`] descriptors, is an
/// error (`EMSGSIZE`), its descriptors closed.
pub(crate) fn recv(
    sock: RawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> nix::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            sock,
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(msg) => msg,
        };
        let fds = descriptors(&msg)?;
        let truncated = msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        if truncated {
            return Err(Errno::EMSGSIZE);
        }
        return Ok((msg.bytes, fds));
    }
}

/// The descriptors that came with `msg` (`SCM_RIGHTS`), owned: the
/// kernel installed them in this process for this message alone.
pub(crate) fn descriptors(msg: &RecvMsg<'_, '_, ()>) -> nix::Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this
            // process for this message alone; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(fds)
}

/// The length of the next record on `sock` without taking it (0 when the
/// other end closed), or `EAGAIN` when none has come yet.
pub(crate) fn pending_len(sock: RawFd) -> nix::Result<usize> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: recv writes at most one byte into `byte`, which is that
        // long; with MSG_TRUNC it returns the record's whole length.
        let n = unsafe {
            libc::recv(
                sock,
                byte.as_mut_ptr().cast(),
                byte.len(),
                libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        match Errno::result(n) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(n) => return Ok(n as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_record_and_its_descriptors_cross_as_sent() {
        let (a, b) = pair();
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        send(
            a.as_raw_fd(),
            b"hello",
            &[pipe_w.as_raw_fd()],
            MsgFlags::empty(),
        )
        .unwrap();
        drop(pipe_w);
        let mut buf = [0u8; 64];
        let (n, fds) = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mut w = std::fs::File::from(fds.into_iter().next().unwrap());
        w.write_all(b"through").unwrap();
        drop(w);
        let mut got = String::new();
        std::fs::File::from(pipe_r)
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(got, "through");
    }

    #[test]
    fn a_record_longer_than_the_buffer_is_refused_not_cut() {
        let (a, b) = pair();
        send(a.as_raw_fd(), &[7u8; 100], &[], MsgFlags::empty()).unwrap();
        let mut buf = [0u8; 10];
        let err = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap_err();
        assert_eq!(err, Errno::EMSGSIZE);
    }

    #[test]
    fn the_pending_length_is_the_whole_record_and_leaves_it() {
        let (a, b) = pair();
        assert_eq!(pending_len(b.as_raw_fd()), Err(Errno::EAGAIN));
        send(a.as_raw_fd(), &[1u8; 5000], &[], MsgFlags::empty()).unwrap();
        assert_eq!(pending_len(b.as_raw_fd()), Ok(5000));
        let mut buf = vec![0u8; 5000];
        assert_eq!(
            recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap().0,
            5000
        );
        drop(a);
        assert_eq!(pending_len(b.as_raw_fd()), Ok(0));
    }

    #[test]
    fn a_closed_end_reads_as_an_empty_record() {
        let (a, b) = pair();
        drop(a);
        let mut buf = [0u8; 10];
        let (n, fds) = recv(b.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert_eq!((n, fds.len()), (0, 0));
    }
}
