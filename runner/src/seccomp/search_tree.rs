//! One seccomp program for a whole profile, testing the system call number
//! by binary search.
//!
//! Why not seccompiler's programs alone: seccompiler makes one program per
//! action (so two here, EPERM and ENOSYS) and tests the listed calls one
//! after another. When a program is attached, the kernel prepares a cache
//! of the calls it always allows by running the program once for every
//! system call number; with a linear program each of those runs walks the
//! whole list, which cost 0.2 ms of every run's clock (docs/benchmarks.md,
//! issue 16's third round). A search tree answers in a handful of tests,
//! for the kernel's preparation and for every call the command makes that
//! the cache cannot answer.
//!
//! The program is equivalent to seccompiler's pair, installed in order,
//! for every call number and argument (the unit tests run both on a BPF
//! interpreter); a call in both lists gets ENOSYS, as it does from the
//! pair (the kernel keeps the most recently installed filter's answer
//! among equal actions). It also refuses the x32 system call numbers on
//! x86-64 with ENOSYS, where seccompiler's programs would allow them.
//! Where a jump would not fit BPF's 8-bit offsets (a profile listing
//! hundreds of calls), [`build`] gives `None` and the caller keeps
//! seccompiler's programs.

use seccompiler::{sock_filter, BpfProgram};

/// What a listed call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Refused with this errno, whatever its arguments.
    Errno(u32),
    /// Refused with this errno when any of these bits is set in the low 32
    /// bits of its first argument (`CLONE_NEWUSER` in `clone`'s flags);
    /// allowed otherwise.
    ErrnoIfArg0Bits { errno: u32, bits: u32 },
}

const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// `struct seccomp_data` offsets: nr, arch, then (after the instruction
/// pointer) the arguments, low word first on a little-endian machine.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// x86-64's x32 ABI numbers carry this bit.
const X32_BIT: u32 = 0x4000_0000;

/// At most this many calls are tested one after another at a leaf.
const LEAF: usize = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Option<sock_filter> {
    Some(sock_filter {
        code,
        jt: u8::try_from(jt).ok()?,
        jf: u8::try_from(jf).ok()?,
        k,
    })
}

/// The `AUDIT_ARCH_*` value of the architecture the runner was built for.
fn audit_arch() -> Option<u32> {
    const LE64: u32 = 0x8000_0000 | 0x4000_0000;
    match std::env::consts::ARCH {
        "x86_64" => Some(62 | LE64),
        "aarch64" => Some(183 | LE64),
        "riscv64" => Some(243 | LE64),
        _ => None,
    }
}

/// The instructions that answer for one listed call; A holds its number.
fn answer(verdict: Verdict) -> Option<Vec<sock_filter>> {
    Some(match verdict {
        Verdict::Errno(errno) => vec![stmt(RET_K, RET_ERRNO | errno)],
        Verdict::ErrnoIfArg0Bits { errno, bits } => vec![
            stmt(LD_W_ABS, ARG0_LOW),
            jump(JMP_JSET_K, bits, 0, 1)?,
            stmt(RET_K, RET_ERRNO | errno),
            stmt(RET_K, RET_ALLOW),
        ],
    })
}

/// Code for `calls` (sorted by number, distinct); every path ends in a
/// return, a number not listed being allowed.
fn subtree(calls: &[(u32, Verdict)]) -> Option<Vec<sock_filter>> {
    if calls.len() <= LEAF {
        let mut code = Vec::new();
        for (nr, verdict) in calls {
            let body = answer(*verdict)?;
            code.push(jump(JMP_JEQ_K, *nr, 0, body.len())?);
            code.extend(body);
        }
        code.push(stmt(RET_K, RET_ALLOW));
        return Some(code);
    }
    let (low, high) = calls.split_at(calls.len() / 2);
    let below = subtree(low)?;
    let above = subtree(high)?;
    // Numbers from the first of `high` on jump over the code for `low`.
    let mut code = vec![jump(JMP_JGE_K, high[0].0, below.len(), 0)?];
    code.extend(below);
    code.extend(above);
    Some(code)
}

/// The program answering `calls` (number, verdict; any order, distinct
/// numbers); `None` where it cannot be built (see the module's doc).
pub(crate) fn build(calls: &[(u32, Verdict)]) -> Option<BpfProgram> {
    let arch = audit_arch()?;
    let mut sorted = calls.to_vec();
    sorted.sort_by_key(|(nr, _)| *nr);
    if sorted.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut program = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JMP_JEQ_K, arch, 1, 0)?,
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
    ];
    if std::env::consts::ARCH == "x86_64" {
        program.push(jump(JMP_JGE_K, X32_BIT, 0, 1)?);
        program.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    }
    program.extend(subtree(&sorted)?);
    // BPF allows no more than this many instructions.
    if program.len() > 4096 {
        return None;
    }
    Some(program)
}
