//! Compiles a profile's system call rules into seccomp BPF programs with
//! seccompiler. libcontainer is built without libseccomp and would ignore a
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

/// The programs to install, in order. Two programs because seccompiler gives
/// one action per filter: one answers EPERM, the other ENOSYS.
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

impl Filters {
    /// Builds the programs for `profile`.
    pub fn build(profile: &Profile) -> Result<Filters> {
        let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in &profile.deny {
            deny.insert(lookup(name)?, Vec::new());
        }
        if profile.deny_new_user_namespaces {
            // clone(flags, ...) and unshare(flags): argument 0 on every
            // architecture we support. A rule matches when the
            // CLONE_NEWUSER bit is set.
            let newuser = libc::CLONE_NEWUSER as u64;
            let rule = || -> Result<SeccompRule> {
                let cond = SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(newuser),
                    newuser,
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
        Ok(Filters { programs })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_to_two_programs() {
        let f = Filters::build(&Profile::default_profile().unwrap()).unwrap();
        assert_eq!(f.programs.len(), 2);
        assert!(f.programs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn programs_survive_the_trip_into_the_container() {
        let f = Filters::build(&Profile::default_profile().unwrap()).unwrap();
        let json = serde_json::to_string(&f).unwrap();
        let back: Filters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }
}
