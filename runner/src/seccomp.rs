//! Compiles a profile's system call rules into one seccomp BPF program
//! that tests the call number by binary search (`search_tree`), or where
//! that cannot be built, into seccompiler's programs; seccompiler installs
//! them. libcontainer is built without libseccomp and would ignore a
//! filter in the OCI spec, so the runner installs these programs itself, in
//! the executor hook, just before exec. The programs are compiled outside
//! the container and travel in the run's plan, packed one instruction per
//! `u64`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::Profile;
use crate::syscalls;

mod search_tree;
#[cfg(test)]
mod tests;

/// The programs to install, in order: one search-tree program
/// ([`search_tree`]), or seccompiler's two (one action per filter: one
/// answers EPERM, the other ENOSYS) where that cannot be built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "Vec<Vec<u64>>", from = "Vec<Vec<u64>>")]
pub(crate) struct Filters {
    /// The compiled programs.
    pub programs: Vec<BpfProgram>,
}

/// One BPF instruction as `code << 48 | jt << 40 | jf << 32 | k`.
fn pack(i: &seccompiler::sock_filter) -> u64 {
    (u64::from(i.code) << 48) | (u64::from(i.jt) << 40) | (u64::from(i.jf) << 32) | u64::from(i.k)
}

fn unpack(v: u64) -> seccompiler::sock_filter {
    seccompiler::sock_filter {
        code: (v >> 48) as u16,
        jt: (v >> 40) as u8,
        jf: (v >> 32) as u8,
        k: v as u32,
    }
}

impl From<Filters> for Vec<Vec<u64>> {
    fn from(f: Filters) -> Self {
        f.programs
            .iter()
            .map(|p| p.iter().map(pack).collect())
            .collect()
    }
}

impl From<Vec<Vec<u64>>> for Filters {
    fn from(packed: Vec<Vec<u64>>) -> Self {
        Filters {
            programs: packed
                .into_iter()
                .map(|p| p.into_iter().map(unpack).collect())
                .collect(),
        }
    }
}

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| Error::Seccomp(e.to_string()))
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(|e| Error::Seccomp(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))
}

fn lookup(name: &str) -> Result<i64> {
    syscalls::number(name).ok_or_else(|| Error::Seccomp(format!("unknown system call {name:?}")))
}

/// What each listed call of `profile` gets, for [`search_tree::build`]. A
/// call in both lists gets ENOSYS, as from seccompiler's pair.
fn verdicts(profile: &Profile) -> Result<Vec<(u32, search_tree::Verdict)>> {
    use search_tree::Verdict;
    let number = |name: &str| -> Result<u32> {
        u32::try_from(lookup(name)?)
            .map_err(|_| Error::Seccomp(format!("system call {name:?} has no 32-bit number")))
    };
    let mut out: BTreeMap<u32, Verdict> = BTreeMap::new();
    for name in &profile.deny {
        out.insert(number(name)?, Verdict::Errno(libc::EPERM as u32));
    }
    if profile.deny_new_user_namespaces {
        for call in [libc::SYS_clone, libc::SYS_unshare] {
            out.entry(call as u32).or_insert(Verdict::ErrnoIfArg0Bits {
                errno: libc::EPERM as u32,
                bits: CLONE_NEWUSER as u32,
            });
        }
    }
    for name in &profile.enosys {
        out.insert(number(name)?, Verdict::Errno(libc::ENOSYS as u32));
    }
    Ok(out.into_iter().collect())
}

/// seccompiler's programs for `profile`: one answering EPERM, then (if the
/// profile lists any) one answering ENOSYS, installed in that order.
fn seccompiler_programs(profile: &Profile) -> Result<Vec<BpfProgram>> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in &profile.deny {
        deny.insert(lookup(name)?, Vec::new());
    }
    if profile.deny_new_user_namespaces {
        // A rule matches when the CLONE_NEWUSER bit is set.
        let rule = || -> Result<SeccompRule> {
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(CLONE_NEWUSER),
                CLONE_NEWUSER,
            )
            .map_err(|e| Error::Seccomp(e.to_string()))?;
            SeccompRule::new(vec![cond]).map_err(|e| Error::Seccomp(e.to_string()))
        };
        for call in [libc::SYS_clone, libc::SYS_unshare] {
            // A call denied outright stays denied outright.
            if let Some(existing) = deny.get_mut(&call) {
                if !existing.is_empty() {
                    existing.push(rule()?);
                }
            } else {
                deny.insert(call, vec![rule()?]);
            }
        }
    }
    let mut programs = vec![compile(deny, libc::EPERM)?];
    if !profile.enosys.is_empty() {
        let mut enosys = BTreeMap::new();
        for name in &profile.enosys {
            enosys.insert(lookup(name)?, Vec::new());
        }
        programs.push(compile(enosys, libc::ENOSYS)?);
    }
    Ok(programs)
}

/// `clone(flags, …)` and `unshare(flags)` are refused with this bit set
/// in argument 0 (on every architecture we support) when the profile
/// denies new user namespaces.
const CLONE_NEWUSER: u64 = libc::CLONE_NEWUSER as u64;

impl Filters {
    /// Builds the programs for `profile`: one search-tree program, or
    /// where that cannot be built, seccompiler's two.
    pub fn build(profile: &Profile) -> Result<Filters> {
        if let Some(program) = search_tree::build(&verdicts(profile)?) {
            return Ok(Filters {
                programs: vec![program],
            });
        }
        seccompiler_programs(profile).map(|programs| Filters { programs })
    }

    /// Installs the programs on the calling thread. Requires no_new_privs
    /// (or CAP_SYS_ADMIN), which the sandbox always sets.
    pub fn install(&self) -> Result<()> {
        for program in &self.programs {
            seccompiler::apply_filter(program).map_err(|e| Error::Seccomp(e.to_string()))?;
        }
        Ok(())
    }
}
