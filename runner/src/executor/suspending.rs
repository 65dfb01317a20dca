//! Running a closure in a child that shares this process's memory while
//! this process waits (`CLONE_VM`, then `waitid` without reaping), as a
//! serving container's PID 1 starts each run's process.
//!
//! A fork copies the page tables of PID 1 (a clone of the runner, with
//! its heap) for every run, and the run's exit tears the copy down again:
//! together about 10 % of the machine's CPU at back-to-back trivial runs
//! (`perf`, docs/benchmarks.md). PID 1 has nothing to do while a run's
//! process lives (it waits for its note, which comes as the process
//! leaves), so it can lend its memory instead: it is suspended from the
//! clone until the child has exited.
//!
//! What the child may do follows from sharing, not owning, that memory:
//! it borrows what it is given and frees everything it allocates before
//! it returns (its allocations are made on PID 1's heap); it must not
//! drop anything of PID 1's. Everything else a run's process changes is
//! its own: namespaces, root, working directory, descriptors,
//! credentials, Landlock and seccomp belong to the task, not to the
//! memory, and PID 1 gets none of them back.
//!
//! PID 1 waits in `waitid`, not suspended by `CLONE_VFORK`: a vfork
//! parent sleeps uninterruptibly, which the kernel counts in the load
//! average, and a warm container's run process waits for its request
//! all the time the runner is idle, so each idle warm container added one
//! to the machine's load. Nothing of PID 1's runs meanwhile: the only
//! handlers it has (Rust's, for SIGSEGV and SIGBUS) answer faults of its
//! own, and it makes none while it waits.

use nix::errno::Errno;
use nix::unistd::Pid;

use super::stack::Stack;

/// The stack the child runs on: as much as a process's main thread gets.
pub(super) const STACK_SIZE: usize = 8 << 20;

/// The closure and where the child's exit code goes.
type Body<'a> = &'a mut dyn FnMut() -> i32;

/// Runs `body` in a child of this process on `stack`, with this process
/// waiting until the child has exited (with `body`'s value as its exit
/// status). Returns the child's PID, to be reaped.
///
/// # Safety
///
/// The caller must be single-threaded, and `body` must keep to the rules
/// of the module's comment: borrow, free what it allocates, drop nothing
/// of the caller's, and neither unwind nor `abort` out of the child (a
/// `raise` in the child signals this process: glibc names the thread by
/// the TID kept in memory both share).
pub(super) unsafe fn run_suspended(stack: &Stack, mut body: Body<'_>) -> Result<Pid, Errno> {
    // SAFETY: `child` runs on `stack`, which nothing else uses while this
    // process waits, with a pointer to `body`, which outlives the child:
    // this function returns only once it has exited.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::SIGCHLD,
            (&mut body as *mut Body<'_>).cast(),
        )
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    wait_for_exit(pid);
    Ok(Pid::from_raw(pid))
}

/// Returns once the child `pid` has exited, leaving it to be reaped,
/// touching nothing of the memory it shares meanwhile. A wait that fails
/// otherwise than by a signal (it cannot, for a child of this process)
/// ends this process rather than let it run on beside the child.
fn wait_for_exit(pid: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `info`, on this thread's stack.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if waited == 0 {
            return;
        }
        if Errno::last() != Errno::EINTR {
            // SAFETY: _exit runs nothing of this process's; its PID
            // namespace (the child with it) ends with it.
            unsafe { libc::_exit(125) }
        }
    }
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the `Body` in `run_suspended`'s frame, alive
    // and untouched while the parent is suspended.
    let body = unsafe { &mut *arg.cast::<Body<'_>>() };
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(125);
    // SAFETY: _exit leaves without running anything of the parent's.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::{waitpid, WaitStatus};

    use super::*;

    /// The child writes into memory the parent reads once it resumes, its
    /// value is its exit status, and what belongs to the task (here, the
    /// working directory) stays the child's.
    #[test]
    fn the_child_shares_memory_but_not_its_task() {
        let stack = Stack::new(STACK_SIZE).unwrap();
        let before = std::env::current_dir().unwrap();
        let mut seen = Vec::new();
        let mut body = || {
            let words: Vec<String> = ["made", "in", "the", "child"].map(String::from).into();
            seen.push(words.join(" "));
            // SAFETY: a NUL-terminated path.
            unsafe { libc::chdir(c"/".as_ptr()) };
            7
        };
        // SAFETY: the body borrows `seen` and frees what it allocates but
        // the one string it hands over, which the parent then owns.
        let pid = unsafe { run_suspended(&stack, &mut body) }.unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
        assert_eq!(seen, ["made in the child"]);
        assert_eq!(std::env::current_dir().unwrap(), before);
    }

    /// Dumpability belongs to the memory, so a child that makes it
    /// undumpable makes the parent's so too: what a serving container's
    /// run process does before its command starts protects PID 1.
    #[test]
    fn undumpable_memory_is_undumpable_for_both() {
        let stack = Stack::new(STACK_SIZE).unwrap();
        // SAFETY: prctl with PR_GET_DUMPABLE.
        let before = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
        let mut body = || {
            // SAFETY: prctl with PR_SET_DUMPABLE and an integer.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) }
        };
        // SAFETY: the body allocates nothing.
        let pid = unsafe { run_suspended(&stack, &mut body) }.unwrap();
        waitpid(pid, None).unwrap();
        // SAFETY: as above.
        let after = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) };
        // SAFETY: restores this test process's own setting.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, before) };
        assert_eq!((before, after), (1, 0));
    }
}
