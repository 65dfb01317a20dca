//! Each confinement layer proven on its own: for each of Landlock, seccomp
//! and the user namespace's missing capabilities, an operation the other
//! layers allow and only this one stops. Each test lifts its layer alone
//! (Landlock and seccomp through the profile, capabilities through a user
//! namespace of the command's own, where it holds them all) and shows the
//! same operation succeed, so that making runs cheaper can never drop a
//! layer without a test failing.
//!
//! python3 from the host's system directories (host rootfs), as root (CI
//! runs as root).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use corral_runner::{Host, Outcome, Profile, Rootfs, RunnerConfig};

/// Runs `code` with python3 under `profile`; returns the outcome and
/// stdout, stderr.
fn python(profile: Profile, code: &str) -> (Outcome, String, String) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "missing /usr/bin/python3 (Debian python3)"
    );
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = tmp.path().join("out");
    let mut req = common::request(&input, &scratch, &out, "");
    req.rootfs = Rootfs::Host;
    req.args = vec!["python3".into(), "-c".into(), code.into()];
    req.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    req.profile = profile;
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let outcome = unsafe { corral_runner::isolate::run_forked(&host, &req) }.unwrap();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    (outcome, stdout, stderr)
}

fn default_profile() -> Profile {
    Profile::default_profile().unwrap()
}

/// Writing `/proc/self/oom_score_adj` (raising it needs no privilege): the
/// file's mode and owner allow it, `/proc` is mounted read-write, seccomp
/// has no rule about `write`; only Landlock, which lets the command write
/// beneath `/tmp`, `/dev` and its input root alone, refuses the open.
#[test]
fn only_landlock_stops_a_write_the_mounts_and_modes_allow() {
    let code = "import os, errno\n\
        p = '/proc/self/oom_score_adj'\n\
        st = os.stat(p)\n\
        print('mode', oct(st.st_mode & 0o777), 'own', st.st_uid == os.getuid())\n\
        opts = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/proc']\n\
        print('proc', opts[0].split(',')[0])\n\
        try:\n\
        \x20   open(p, 'w').write('500')\n\
        \x20   print('wrote', open(p).read().strip())\n\
        except OSError as e:\n\
        \x20   print('refused', errno.errorcode[e.errno])\n";
    let (outcome, stdout, stderr) = python(default_profile(), code);
    assert_eq!(outcome.exit_code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout, "mode 0o644 own True\nproc rw\nrefused EACCES\n",
        "{stderr}"
    );
    let mut without_landlock = default_profile();
    without_landlock.landlock = false;
    let (outcome, stdout, stderr) = python(without_landlock, code);
    assert_eq!(outcome.exit_code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout, "mode 0o644 own True\nproc rw\nwrote 500\n",
        "{stderr}"
    );
}

/// `personality(0xffffffff)` only asks for the current persona, and
/// `unshare(CLONE_NEWUSER)` needs no capability: neither file systems,
/// Landlock nor capabilities have a say. The default profile's seccomp
/// filter refuses both (the first by number, the second by its flag).
#[test]
fn only_seccomp_stops_a_call() {
    let code = format!(
        "import ctypes, errno\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         for name, nr, arg in (('personality', {}, 0xffffffff), ('unshare_newuser', {}, {})):\n\
         \x20   r = libc.syscall(nr, ctypes.c_ulong(arg))\n\
         \x20   print(name, 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()])\n",
        libc::SYS_personality,
        libc::SYS_unshare,
        libc::CLONE_NEWUSER
    );
    let (outcome, stdout, stderr) = python(default_profile(), &code);
    assert_eq!(outcome.exit_code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout, "personality EPERM\nunshare_newuser EPERM\n",
        "{stderr}"
    );
    let mut without_the_rules = default_profile();
    without_the_rules.deny.retain(|call| call != "personality");
    without_the_rules.deny_new_user_namespaces = false;
    // Everything else in the filter stays.
    assert!(without_the_rules.deny.iter().any(|c| c == "mount"));
    let (outcome, stdout, stderr) = python(without_the_rules, &code);
    assert_eq!(outcome.exit_code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "personality ok\nunshare_newuser ok\n", "{stderr}");
}

/// `unshare(CLONE_NEWNS)`: seccomp has no rule against it (only against
/// CLONE_NEWUSER, lifted here so that the proof below can make a user
/// namespace), Landlock does not restrict namespaces, and the file systems
/// have no say; the kernel wants CAP_SYS_ADMIN in the command's user
/// namespace, where it holds no capability. In a user namespace of its
/// own, where it holds them all, the same call succeeds.
#[test]
fn only_missing_capabilities_stop_an_operation() {
    let code = format!(
        "import ctypes, errno\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])\n\
         r = libc.unshare({newns})\n\
         print('newns', 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()])\n\
         r = libc.unshare({newuser} | {newns})\n\
         print('newuser+newns', 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()])\n",
        newns = libc::CLONE_NEWNS,
        newuser = libc::CLONE_NEWUSER
    );
    let mut profile = default_profile();
    profile.deny_new_user_namespaces = false;
    let (outcome, stdout, stderr) = python(profile, &code);
    assert_eq!(outcome.exit_code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        stdout, "0000000000000000\nnewns EPERM\nnewuser+newns ok\n",
        "{stderr}"
    );
}
