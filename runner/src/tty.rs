//! `runner exec --shell`: a new pseudo-terminal for the sandbox, copied
//! to and from this terminal, which is put in raw mode meanwhile. The shell
//! gets the pty as its controlling terminal, so job control and `/dev/tty`
//! work, and the host terminal never becomes reachable from the sandbox.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::{Error, Result};

/// A pty pair sized like this terminal, and this terminal's saved settings.
pub struct Pty {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    saved: Option<Termios>,
}

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

impl Pty {
    /// Opens the pty and puts this terminal (stdin) in raw mode.
    pub fn open() -> Result<Pty> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        let pair = openpty(&winsize(), saved.as_ref()).map_err(|e| Error::sys("openpty", e))?;
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .map_err(|e| Error::sys("raw mode", e))?;
        }
        Ok(Pty {
            master: pair.master,
            slave: Some(pair.slave),
            saved,
        })
    }

    /// Copies this terminal to the pty and back until the sandbox side is
    /// closed, on a thread of its own.
    pub fn start_copying(&self) -> Result<()> {
        let master = self
            .master
            .try_clone()
            .map_err(|e| Error::io("dup pty master", e))?;
        let to_pty = master
            .try_clone()
            .map_err(|e| Error::io("dup pty master", e))?;
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
            .map_err(|e| Error::io("start the pty thread", e))?;
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
            .map_err(|e| Error::io("start the pty thread", e))?;
        Ok(())
    }

    /// The sandbox's end. The caller closes its copy once the sandbox has
    /// it, so that the copying ends when the sandbox does.
    pub fn take_slave(&mut self) -> Option<OwnedFd> {
        self.slave.take()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}
