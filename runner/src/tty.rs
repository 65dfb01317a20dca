//! `runner exec --shell`: a terminal made in the container's own devpts, so
//! that the shell can name it (`tty` prints `/dev/pts/0`, as `ssh`, `gpg`
//! and `script` expect), copied to and from this terminal, which is put in
//! raw mode meanwhile. libcontainer makes the pty inside the container and
//! sends its master to a unix socket this process listens on (its console
//! socket); the shell takes the pty as its controlling terminal, so job
//! control and `/dev/tty` work, and the host terminal is never reachable
//! from the sandbox.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use nix::pty::Winsize;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::{Error, Result};

/// How long the container may take to send its terminal.
const PATIENCE: Duration = Duration::from_secs(30);

/// The console socket libcontainer connects to, in a directory of ours.
pub(crate) struct ConsoleSocket {
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens at `path` (a new name).
    pub(crate) fn bind(path: &Path) -> Result<ConsoleSocket> {
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
        Ok(ConsoleSocket { listener })
    }

    /// The terminal's master, once libcontainer sends it; `None` if
    /// `abandon` (the run's answer pipe) becomes readable first: the run
    /// ended (failed) before its container had a terminal.
    pub(crate) fn receive(&self, abandon: &impl AsRawFd) -> Result<Option<OwnedFd>> {
        let mut fds = [self.listener.as_raw_fd(), abandon.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two valid pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, PATIENCE.as_millis() as i32) };
        if n <= 0 {
            return Err(Error::Container(
                "the container did not send its terminal".into(),
            ));
        }
        if fds[0].revents == 0 {
            return Ok(None);
        }
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| Error::io("accept on the console socket", e))?;
        let mut name = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::sys("receive the terminal", e))?;
        for cmsg in msg
            .cmsgs()
            .map_err(|e| Error::sys("receive the terminal", e))?
        {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                if let Some(fd) = raw.first() {
                    // SAFETY: the kernel just installed this descriptor in
                    // this process for us alone.
                    return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        Err(Error::Container(
            "the console socket carried no terminal".into(),
        ))
    }
}

/// This terminal's size (80x24 if it has none).
fn winsize() -> Winsize {
    let mut ws = Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into a valid pointer.
    unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    ws
}

/// The container's terminal attached to this one; this terminal's
/// settings are restored when it is dropped.
pub(crate) struct Terminal {
    master: OwnedFd,
    saved: Option<Termios>,
}

impl Terminal {
    /// Sizes the container's terminal like this one and puts this one
    /// (stdin) in raw mode.
    pub(crate) fn attach(master: OwnedFd) -> Result<Terminal> {
        let ws = winsize();
        // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .map_err(|e| Error::sys("raw mode", e))?;
        }
        Ok(Terminal { master, saved })
    }

    /// Copies this terminal to the container's and back until the
    /// container's side is closed, on threads of their own.
    pub(crate) fn start_copying(&self) -> Result<()> {
        let master = self
            .master
            .try_clone()
            .map_err(|e| Error::io("dup the terminal's master", e))?;
        let to_pty = master
            .try_clone()
            .map_err(|e| Error::io("dup the terminal's master", e))?;
        std::thread::Builder::new()
            .name("pty-in".into())
            .spawn(move || {
                let mut out = std::fs::File::from(to_pty);
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io("start the terminal thread", e))?;
        std::thread::Builder::new()
            .name("pty-out".into())
            .spawn(move || {
                let mut from = std::fs::File::from(master);
                let mut buf = [0u8; 4096];
                let mut stdout = std::io::stdout();
                // EIO once every copy of the slave is closed.
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let _ = stdout.flush();
                }
            })
            .map_err(|e| Error::io("start the terminal thread", e))?;
        Ok(())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}
