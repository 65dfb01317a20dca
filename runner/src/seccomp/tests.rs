//! The programs run on a classic-BPF interpreter written for these tests,
//! with the kernel's rule for several filters, so that the search-tree
//! program can be compared with seccompiler's pair for every call number
//! and argument that matters.

use super::*;
use crate::syscalls;
use seccompiler::sock_filter;

/// The fields of `struct seccomp_data` a program may read.
struct Call {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Call {
    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr,
            4 => self.arch,
            8 | 12 => 0,
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let arg = self.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("load from offset {o}"),
        }
    }
}

/// Runs one program as the kernel would; panics on an instruction these
/// tests did not expect, or on falling off the end.
fn run(program: &[sock_filter], call: &Call) -> u32 {
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = &program[pc];
        pc += 1;
        let k = i.k;
        let branch = |taken: bool| if taken { i.jt as usize } else { i.jf as usize };
        match i.code {
            0x20 => a = call.word(k),
            0x54 => a &= k,
            0x05 => pc += k as usize,
            0x15 => pc += branch(a == k),
            0x25 => pc += branch(a > k),
            0x35 => pc += branch(a >= k),
            0x45 => pc += branch(a & k != 0),
            0x06 => return k,
            code => panic!("instruction {code:#x} at {}", pc - 1),
        }
    }
}

/// The kernel's answer with `programs` installed in order: the most
/// recently installed runs first, and the lowest action (as a signed
/// number) wins, the first seen among equals.
fn answer(programs: &[BpfProgram], call: &Call) -> u32 {
    let action = |r: u32| (r & 0xffff_0000) as i32;
    let mut best: Option<u32> = None;
    for program in programs.iter().rev() {
        let r = run(program, call);
        if best.is_none_or(|b| action(r) < action(b)) {
            best = Some(r);
        }
    }
    best.unwrap_or(0x7fff_0000)
}

fn arch() -> u32 {
    match std::env::consts::ARCH {
        "x86_64" => 62 | 0xc000_0000,
        "aarch64" => 183 | 0xc000_0000,
        other => panic!("no test architecture for {other}"),
    }
}

/// First arguments that tell the CLONE_NEWUSER rule's cases apart.
const ARG0S: [u64; 6] = [
    0,
    libc::CLONE_NEWUSER as u64,
    (libc::CLONE_NEWUSER | libc::CLONE_NEWNS) as u64,
    libc::CLONE_NEWNS as u64,
    u64::MAX,
    1 << 60,
];

/// Checks that `profile`'s one program answers as seccompiler's pair for
/// every call number below 1024 and every first argument of [`ARG0S`].
fn assert_equivalent(profile: &Profile) {
    let tree = Filters::build(profile).unwrap();
    assert_eq!(tree.programs.len(), 1, "{}: no search tree", profile.source);
    let pair = seccompiler_programs(profile).unwrap();
    for nr in 0..1024 {
        for arg0 in ARG0S {
            let call = Call {
                nr,
                arch: arch(),
                args: [arg0, 7, 7, 7, 7, 7],
            };
            assert_eq!(
                answer(&tree.programs, &call),
                answer(&pair, &call),
                "{}: call {nr} with argument {arg0:#x}",
                profile.source
            );
        }
    }
}

fn profile(source: &str, deny: &[&str], enosys: &[&str], new_users: bool) -> Profile {
    Profile {
        source: source.into(),
        deny_new_user_namespaces: new_users,
        deny: deny.iter().map(|s| s.to_string()).collect(),
        enosys: enosys.iter().map(|s| s.to_string()).collect(),
        ..Profile::default_profile().unwrap()
    }
}

#[test]
fn the_default_profile_compiles_to_one_program_that_answers_as_seccompilers_pair() {
    let default = Profile::default_profile().unwrap();
    assert!(default.deny.len() > 20);
    assert_equivalent(&default);
    // The rule it exists for: a new user namespace is refused, other
    // clones are not.
    let filters = Filters::build(&default).unwrap();
    let clone = |flags: u64| Call {
        nr: libc::SYS_clone as u32,
        arch: arch(),
        args: [flags, 0, 0, 0, 0, 0],
    };
    let eperm = 0x0005_0000 | libc::EPERM as u32;
    assert_eq!(
        answer(&filters.programs, &clone(libc::CLONE_NEWUSER as u64)),
        eperm
    );
    assert_eq!(
        answer(&filters.programs, &clone(libc::SIGCHLD as u64)),
        0x7fff_0000
    );
}

#[test]
fn edge_profiles_answer_as_seccompilers_pair() {
    let all: Vec<&str> = syscalls::names().collect();
    let half: Vec<&str> = all.iter().step_by(2).copied().collect();
    for p in [
        profile("nothing listed", &[], &[], false),
        profile("only the user-namespace rule", &[], &[], true),
        profile("one call", &["mount"], &[], false),
        profile("clone denied outright", &["clone", "mount"], &[], true),
        profile(
            "clone in both lists",
            &["clone"],
            &["clone", "unshare"],
            true,
        ),
        profile("only enosys", &[], &["keyctl", "bpf"], false),
        profile("every other call known", &half, &["keyctl"], true),
        profile("every call known", &all, &[], true),
    ] {
        assert_equivalent(&p);
    }
}

#[test]
fn another_architecture_is_killed() {
    let filters = Filters::build(&Profile::default_profile().unwrap()).unwrap();
    let call = Call {
        nr: libc::SYS_getpid as u32,
        arch: 3 | 0x4000_0000, // i386
        args: [0; 6],
    };
    assert_eq!(answer(&filters.programs, &call), 0x8000_0000);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_numbers_are_refused() {
    let filters = Filters::build(&Profile::default_profile().unwrap()).unwrap();
    let call = Call {
        nr: 0x4000_0000 | libc::SYS_mount as u32,
        arch: arch(),
        args: [0; 6],
    };
    assert_eq!(
        answer(&filters.programs, &call),
        0x0005_0000 | libc::ENOSYS as u32
    );
}

#[test]
fn an_allowed_call_is_answered_in_a_few_instructions() {
    // What the kernel's cache preparation pays per call number.
    let filters = Filters::build(&Profile::default_profile().unwrap()).unwrap();
    let program = &filters.programs[0];
    let mut steps = 0;
    let (mut a, mut pc) = (0u32, 0usize);
    let call = Call {
        nr: libc::SYS_read as u32,
        arch: arch(),
        args: [0; 6],
    };
    while program[pc].code != 0x06 {
        let i = &program[pc];
        pc += 1;
        steps += 1;
        match i.code {
            0x20 => a = call.word(i.k),
            0x15 => pc += if a == i.k { i.jt } else { i.jf } as usize,
            0x35 => pc += if a >= i.k { i.jt } else { i.jf } as usize,
            code => panic!("instruction {code:#x}"),
        }
    }
    assert!(steps <= 14, "{steps} instructions before the answer");
}

#[test]
fn a_list_too_long_for_bpf_jumps_gets_no_search_tree() {
    let calls: Vec<(u32, search_tree::Verdict)> = (0..400)
        .map(|nr| (nr, search_tree::Verdict::Errno(libc::EPERM as u32)))
        .collect();
    assert!(search_tree::build(&calls).is_none());
    assert!(search_tree::build(&calls[..40]).is_some());
}

#[test]
fn programs_survive_the_trip_into_the_container() {
    let f = Filters::build(&Profile::default_profile().unwrap()).unwrap();
    let json = serde_json::to_string(&f).unwrap();
    let back: Filters = serde_json::from_str(&json).unwrap();
    assert_eq!(back, f);
}
