//! A stack of its own for a child that shares this process's memory
//! (`CLONE_VM`) until it execs or exits.

use nix::errno::Errno;

/// An anonymous mapping with a guard page at its low end (stacks grow
/// down: an overflow faults there instead of writing over whatever lies
/// below), unmapped on drop. Only the pages touched are ever backed.
pub(super) struct Stack {
    base: *mut libc::c_void,
    size: usize,
}

/// The guard, below the usable part.
const GUARD: usize = 4096;

impl Stack {
    /// `size` usable bytes.
    pub(super) fn new(size: usize) -> Result<Stack, Errno> {
        let size = size + GUARD;
        // SAFETY: a new private anonymous mapping; no existing memory is
        // touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = Stack { base, size };
        // SAFETY: the lowest page of the mapping just made, which nothing
        // uses yet.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The highest address, aligned down to 16 bytes.
    pub(super) fn top(&self) -> *mut libc::c_void {
        let top = self.base as usize + self.size;
        (top & !15) as *mut libc::c_void
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`, which no
        // child uses any more (each has exec'd or exited before the clone
        // that started it returned).
        unsafe { libc::munmap(self.base, self.size) };
    }
}

/// Every signal blocked in this process until drop, which restores the
/// mask it had.
pub(super) struct BlockedSignals(libc::sigset_t);

impl BlockedSignals {
    pub(super) fn all() -> Result<BlockedSignals, Errno> {
        // SAFETY: both sets are initialised before use; sigprocmask writes
        // the old mask into `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old) != 0 {
                return Err(Errno::last());
            }
            Ok(BlockedSignals(old))
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restoring a mask read by sigprocmask.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}
