//! Starting a serving container's command as a child of PID 1, not of the
//! run's process that starts it.
//!
//! The run's process leaves as soon as the command has started. Were the
//! command its child, PID 1 could reap the command only once it had been
//! handed over at that exit, and an exit waits for the whole address space
//! to be torn down (a copy of the runner's: 0.3 ms at p50 and 1 ms at p95
//! under load, measured with `--phases`), which then lay on every trivial
//! action's way to its answer. With `CLONE_PARENT` the command is PID 1's
//! child from its first instruction, and the run's process exits beside
//! it.
//!
//! Like glibc's `posix_spawn`, the clone shares this process's memory and
//! suspends it until the exec (`CLONE_VM | CLONE_VFORK`): no page tables
//! are copied. The child runs on a stack of its own, with every signal
//! blocked until it has given each its default disposition (a handler of
//! this process must never run on the child's stack), and calls nothing
//! but system calls before the exec.

use std::ffi::CString;

use nix::errno::Errno;
use nix::unistd::Pid;

use super::default_signals;
use super::stack::{BlockedSignals, Stack};
use crate::control::CONTROL_FD;

/// The child's stack: room for glibc's `execvpe`, which copies the
/// argument vector onto the stack to run a script through `/bin/sh`, on
/// top of a fixed margin. Only the pages touched are ever backed.
const STACK_MARGIN: usize = 256 * 1024;

/// What the child reads and, on failure, writes (shared memory).
struct Exec {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    errno: libc::c_int,
}

/// Starts `program` (looked up along the environment's `PATH`, as
/// `execvpe` does) as a sibling of this process: a child of this
/// process's parent. Returns once it has been exec'd, or the reason it
/// could not be (the failed child is then a zombie of the parent's).
pub(super) fn spawn_sibling(
    program: &CString,
    argv: &[CString],
    env: &[CString],
) -> Result<Pid, Errno> {
    let args = null_terminated(argv);
    let envp = null_terminated(env);
    let mut exec = Exec {
        program: program.as_ptr(),
        argv: args.as_ptr(),
        envp: envp.as_ptr(),
        errno: 0,
    };
    let size = STACK_MARGIN + 16 * (argv.len() + env.len());
    let stack = Stack::new(size)?;
    let blocked = BlockedSignals::all()?;
    // SAFETY: `child` runs on `stack` (mapped, `size` bytes, top aligned to
    // 16) with `exec`, which outlives the call: CLONE_VFORK suspends this
    // process until the child has exec'd or exited, and the child calls
    // only async-signal-safe functions. CLONE_PARENT is refused only to a
    // namespace's PID 1, which the run's process is not.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT | libc::SIGCHLD,
            (&mut exec as *mut Exec).cast(),
        )
    };
    let clone_errno = Errno::last();
    drop(blocked);
    if pid < 0 {
        return Err(clone_errno);
    }
    // SAFETY: a plain read of our own field; volatile because the child
    // wrote it through a pointer.
    let errno = unsafe { std::ptr::read_volatile(&exec.errno) };
    if errno != 0 {
        return Err(Errno::from_raw(errno));
    }
    Ok(Pid::from_raw(pid))
}

/// The child: default signals, no control socket, the exec.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Exec`, alive and not touched by the
    // parent until this child has exec'd or exited (CLONE_VFORK).
    let exec = unsafe { &mut *arg.cast::<Exec>() };
    // Unblocks every signal, with every disposition the default first.
    default_signals();
    // SAFETY: closing this process's copy of the control socket: the
    // command must not be able to forge a report.
    unsafe { libc::close(CONTROL_FD) };
    // SAFETY: the three pointers are NUL-terminated strings and
    // NULL-terminated vectors of them, alive in the suspended parent.
    unsafe { libc::execvpe(exec.program, exec.argv, exec.envp) };
    exec.errno = Errno::last_raw();
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(127) }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}
