//! Brings up `lo` in the sandbox's private network namespace, then drops
//! every capability for good.
//!
//! A new network namespace has its loopback interface down, and builds and
//! tests often talk to 127.0.0.1. Setting the interface up needs
//! CAP_NET_ADMIN in the namespace, so the spec leaves the container init with
//! just CAP_NET_ADMIN and CAP_SETPCAP (to empty the bounding set afterwards);
//! this module uses the first and then clears all five capability sets
//! before Landlock, seccomp and exec. The escape suite checks that every set
//! reads 0 from inside.

use crate::error::{Error, Result};

/// The capabilities the spec grants the init for this step.
pub const INIT_CAPS: [&str; 2] = ["CAP_NET_ADMIN", "CAP_SETPCAP"];

fn last_errno(context: &str) -> Error {
    Error::sys(context, nix::errno::Errno::last())
}

/// Sets IFF_UP on `lo`.
pub fn bring_up() -> Result<()> {
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_errno("socket for loopback"));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq through a
    // valid pointer on a valid socket.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(last_errno("SIOCGIFFLAGS lo"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(last_errno("SIOCSIFFLAGS lo"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

/// Empties the bounding, ambient, effective, permitted and inheritable sets.
pub fn drop_all_capabilities() -> Result<()> {
    // SAFETY: prctl calls with integer arguments only.
    unsafe {
        for cap in 0..=63 {
            // EINVAL past the last capability the kernel knows: stop there.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                if nix::errno::Errno::last() == nix::errno::Errno::EINVAL {
                    break;
                }
                return Err(last_errno("PR_CAPBSET_DROP"));
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset with a version-3 header and two data words, as the
    // kernel expects; both live for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if r < 0 {
        return Err(last_errno("capset"));
    }
    Ok(())
}
