//! The inotify calls that watch a scratch directory's twins, with watch
//! descriptors kept as the kernel's numbers: they cross to another process
//! with the instance's descriptor, and nix keeps them opaque.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a twin's watch asks for: every change to its entries and to its
/// own attributes, and the watch's own loss. Not reads, opens or writes to
/// the files in it: a file written is a file made there first.
pub(crate) const TWIN_EVENTS: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Events that say a watch no longer follows its directory at its path:
/// the directory removed or moved, its file system unmounted, the watch
/// gone.
pub(crate) const LOST: u32 =
    libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT;

/// The size of an event without its name.
const HEADER: usize = std::mem::size_of::<libc::inotify_event>();

/// A new instance, non-blocking and close-on-exec.
pub(crate) fn instance() -> std::io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags only; a non-negative result is a
    // new descriptor that nothing else owns.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches the directory `path` (not following a symlink) for `mask`;
/// its watch descriptor.
pub(crate) fn add_watch(inotify: BorrowedFd<'_>, path: &Path, mask: u32) -> std::io::Result<i32> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mask = mask | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
    // SAFETY: `c_path` is NUL-terminated and outlives the call.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c_path.as_ptr(), mask) };
    if wd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(wd)
}

/// One event: the watch it is about and what happened (the name of the
/// entry, if any, is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub wd: i32,
    pub mask: u32,
}

/// Reads every event queued on the non-blocking instance `inotify`,
/// calling `each` for each, until none is left.
pub(crate) fn read_events(inotify: RawFd, mut each: impl FnMut(Event)) -> std::io::Result<()> {
    // Room for hundreds of events a read; one with the longest name fits.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: `buf` is writable for its whole length during the call.
        let n = unsafe { libc::read(inotify, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Ok(());
        }
        parse(&buf[..n as usize], &mut each)?;
    }
}

/// The events in `bytes`, as one read returned them.
pub(crate) fn parse(mut bytes: &[u8], each: &mut impl FnMut(Event)) -> std::io::Result<()> {
    let word = |b: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        w
    };
    while !bytes.is_empty() {
        if bytes.len() < HEADER {
            return Err(std::io::Error::other("a partial inotify event"));
        }
        // struct inotify_event: wd, mask, cookie, len, then len bytes of
        // name.
        let wd = i32::from_ne_bytes(word(bytes, 0));
        let mask = u32::from_ne_bytes(word(bytes, 4));
        let len = u32::from_ne_bytes(word(bytes, 12)) as usize;
        let Some(rest) = bytes.get(HEADER + len..) else {
            return Err(std::io::Error::other(
                "an inotify event longer than the read",
            ));
        };
        each(Event { wd, mask });
        bytes = rest;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn changes_to_entries_and_attributes_are_read_with_their_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("a/b"));
        std::fs::create_dir_all(&b).unwrap();
        let inotify = instance().unwrap();
        let wa = add_watch(inotify.as_fd(), &a, TWIN_EVENTS).unwrap();
        let wb = add_watch(inotify.as_fd(), &b, TWIN_EVENTS).unwrap();
        let read = || {
            let mut got = Vec::new();
            read_events(inotify.as_raw_fd(), |e| got.push(e)).unwrap();
            got
        };
        assert_eq!(read(), []);
        std::fs::write(a.join("f"), "x").unwrap();
        std::fs::write(a.join("f"), "more").unwrap();
        let got = read();
        assert_eq!(
            got,
            [Event {
                wd: wa,
                mask: libc::IN_CREATE
            }],
            "{got:?}"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o700)).unwrap();
        let got = read();
        assert!(got
            .iter()
            .any(|e| e.wd == wb && e.mask & libc::IN_ATTRIB != 0));
        std::fs::remove_dir(&b).unwrap();
        let got = read();
        assert!(
            got.iter().any(|e| e.wd == wb && e.mask & LOST != 0),
            "{got:?}"
        );
        assert!(got
            .iter()
            .any(|e| e.wd == wa && e.mask & libc::IN_DELETE != 0));
        assert!(add_watch(inotify.as_fd(), &a.join("f"), TWIN_EVENTS).is_err());
    }

    #[test]
    fn a_torn_read_is_an_error_not_an_event() {
        let mut whole = Vec::new();
        for v in [7u32, libc::IN_CREATE, 0, 4] {
            whole.extend_from_slice(&v.to_ne_bytes());
        }
        whole.extend_from_slice(b"ab\0\0");
        let mut got = Vec::new();
        parse(&whole, &mut |e| got.push(e)).unwrap();
        assert_eq!(
            got,
            [Event {
                wd: 7,
                mask: libc::IN_CREATE
            }]
        );
        assert!(parse(&whole[..18], &mut |_| {}).is_err());
        assert!(parse(&whole[..10], &mut |_| {}).is_err());
    }
}
