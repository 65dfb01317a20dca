//! System call names that profiles may mention, and their numbers on the
//! architecture the runner was built for. The list is ours on purpose: a
//! profile naming a call we do not know is an error, never a silent no-op.

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Calls present on every architecture we build for.
const COMMON: &[(&str, i64)] = table![
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_chroot,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_userfaultfd,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_setns,
    SYS_unshare,
    SYS_clone,
    SYS_clone3,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_kcmp,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_swapon,
    SYS_swapoff,
    SYS_reboot,
    SYS_acct,
    SYS_quotactl,
    SYS_syslog,
    SYS_vhangup,
    SYS_personality,
    SYS_lookup_dcookie,
    SYS_ptrace,
    SYS_socket,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_pidfd_getfd,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_fanotify_init,
    SYS_process_madvise,
    SYS_mbind,
    SYS_migrate_pages,
    SYS_move_pages,
    SYS_set_mempolicy,
    SYS_get_mempolicy,
    SYS_nfsservctl,
    SYS_vmsplice,
];

/// Calls that exist on x86_64 only.
#[cfg(target_arch = "x86_64")]
const ARCH: &[(&str, i64)] = table![SYS_iopl, SYS_ioperm, SYS_uselib, SYS_modify_ldt];
#[cfg(not(target_arch = "x86_64"))]
const ARCH: &[(&str, i64)] = &[];

/// The number of system call `name` ("mount", not "SYS_mount"), if known.
pub fn number(name: &str) -> Option<i64> {
    COMMON
        .iter()
        .chain(ARCH)
        .find(|(n, _)| n.strip_prefix("SYS_") == Some(name))
        .map(|(_, nr)| *nr)
}

/// Every call name a profile may mention.
#[cfg(test)]
pub fn names() -> impl Iterator<Item = &'static str> {
    COMMON
        .iter()
        .chain(ARCH)
        .filter_map(|(n, _)| n.strip_prefix("SYS_"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn knows_mount_and_rejects_nonsense() {
        assert_eq!(super::number("mount"), Some(libc::SYS_mount));
        assert_eq!(super::number("clone3"), Some(libc::SYS_clone3));
        assert_eq!(super::number("SYS_mount"), None);
        assert_eq!(super::number("frobnicate"), None);
    }
}
