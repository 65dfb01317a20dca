// The escape suite's attempts, included by `sandbox_escape.rs` (each in a
// container of its own) and `sandbox_escape_reused.rs` (each as the second
// run of a container that serves several), which set `SECOND_RUN`.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_integration::bench::sandbox::busybox_root;
use corral_runner::{
    Host, LimitHit, Limits, Outcome, Profile, Rootfs, RunnerConfig, SandboxRequest, Stdio,
};

struct Run {
    outcome: Outcome,
    stdout: String,
    stderr: String,
    scratch: PathBuf,
}

struct World {
    tmp: tempfile::TempDir,
    root: PathBuf,
    host: Host,
    n: std::cell::Cell<u32>,
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the escape suite runs as root (as CI does): it checks cgroup limits and host state"
    );
}

impl World {
    fn new() -> World {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = tmp.path().join("root");
        busybox_root(&root).unwrap();
        let host = Host::probe(&RunnerConfig::default()).unwrap();
        assert!(
            host.cgroup_parent.is_some(),
            "root runner without cgroups: {:?}",
            host
        );
        World {
            tmp,
            root,
            host,
            n: std::cell::Cell::new(0),
        }
    }

    fn request(&self, rootfs: Rootfs, input: &Path, args: Vec<String>) -> SandboxRequest {
        self.n.set(self.n.get() + 1);
        let scratch = self.tmp.path().join(format!("scratch{}", self.n.get()));
        std::fs::create_dir(&scratch).unwrap();
        SandboxRequest {
            rootfs,
            input_root: input.to_path_buf(),
            scratch_dir: scratch.clone(),
            args,
            env: vec![("PATH".into(), "/bin:/usr/bin".into())],
            cwd: String::new(),
            stdin: Stdio::Null,
            stdout: Stdio::File(scratch.with_extension("out")),
            stderr: Stdio::File(scratch.with_extension("err")),
            profile: Profile::default_profile().unwrap(),
            network: false,
            limits: Limits {
                timeout: Some(Duration::from_secs(30)),
                ..Limits::default()
            },
            uid: 0,
            gid: 0,
            read_only_subtrees: vec![],
            writable_subtrees: vec![],
            controlling_tty: false,
            hostname: "corral".into(),
            upper_holds_only_directories: false,
            upper_watch: None,
        }
    }

    fn sh(&self, script: &str) -> SandboxRequest {
        self.request(
            Rootfs::InputRoot,
            &self.root,
            vec!["sh".into(), "-c".into(), script.into()],
        )
    }

    /// python3 from the host's read-only system directories (host rootfs).
    fn python(&self, code: &str) -> SandboxRequest {
        assert!(
            Path::new("/usr/bin/python3").exists(),
            "missing /usr/bin/python3 (Debian python3)"
        );
        let input = self.tmp.path().join("empty-input");
        std::fs::create_dir_all(&input).unwrap();
        self.request(
            Rootfs::Host,
            &input,
            vec!["python3".into(), "-c".into(), code.into()],
        )
    }

    fn run(&self, req: &SandboxRequest) -> Run {
        // Both calls fork: not guaranteed sound under libtest's threaded
        // harness (other test threads may exist at the fork); the tests
        // accept that risk: the child only runs the sandbox, and nextest runs
        // each test in its own process.
        let outcome = if SECOND_RUN {
            // A container's second run: its first does nothing.
            let first = self.sh("true");
            // SAFETY: as above.
            unsafe { corral_runner::isolate::run_forked_second(&self.host, &first, req) }
        } else {
            // SAFETY: as above.
            unsafe { corral_runner::isolate::run_forked(&self.host, req) }
        }
        .unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        Run {
            outcome,
            stdout: read(req.scratch_dir.with_extension("out")),
            stderr: read(req.scratch_dir.with_extension("err")),
            scratch: req.scratch_dir.clone(),
        }
    }
}

/// Host processes whose command line is exactly `words`.
fn host_processes(words: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = words.iter().flat_map(|w| w.bytes().chain([0])).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut cmdline = Vec::new();
        if let Ok(mut f) = std::fs::File::open(entry.path().join("cmdline")) {
            let _ = f.read_to_end(&mut cmdline);
        }
        if cmdline == want {
            found.push(pid);
        }
    }
    found
}

fn marker() -> String {
    // Distinct per test process so parallel tests do not see each other.
    format!("{}", 100_000 + std::process::id() % 800_000)
}

#[test]
fn status_inside_shows_seccomp_no_new_privs_and_no_capabilities() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let r = w.run(&w.sh("grep -E '^(Seccomp|NoNewPrivs|Cap[A-Za-z]+):' /proc/self/status"));
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    for line in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
    ] {
        assert!(
            r.stdout.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            r.stdout
        );
    }
}

#[test]
fn staged_input_stays_intact() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    // A "cached" blob, hardlinked into the input root as the worker does.
    let cas = w.tmp.path().join("cas");
    std::fs::create_dir(&cas).unwrap();
    let blob = cas.join("blob");
    std::fs::write(&blob, "cached\n").unwrap();
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::create_dir_all(w.root.join("data")).unwrap();
    std::fs::hard_link(&blob, w.root.join("data/cached.txt")).unwrap();
    std::fs::write(w.root.join("data/other.txt"), "other\n").unwrap();
    std::fs::create_dir_all(w.root.join("ro")).unwrap();
    std::fs::write(w.root.join("ro/file"), "ro\n").unwrap();
    // The worker's contract (docs/sandbox.md): input-root directories are
    // owned by the sandbox's host uid, staged files stay as the CAS has them.
    for dir in ["data", "ro"] {
        let p = w.root.join(dir);
        nix::unistd::chown(&p, Some(w.host.map_uid.into()), Some(w.host.map_gid.into())).unwrap();
    }
    let mut req = w.sh(
        "if echo evil > /data/cached.txt; then echo IN-PLACE; else echo in-place-refused; fi; \
         chmod 777 /data/cached.txt 2>/dev/null && echo CHMODDED; \
         rm -f /data/cached.txt && echo evil > /data/cached.txt; \
         rm /data/other.txt; echo new > /data/new.txt; \
         if touch /ro/new; then echo RO-WRITABLE; else echo ro-refused; fi",
    );
    req.read_only_subtrees = vec!["ro".into()];
    let r = w.run(&req);
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, "in-place-refused\nro-refused\n", "{}", r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    // The cached inode: same content, mode and link count.
    let meta = std::fs::metadata(&blob).unwrap();
    assert_eq!(std::fs::read_to_string(&blob).unwrap(), "cached\n");
    assert_eq!(meta.mode() & 0o777, 0o444);
    assert_eq!(meta.nlink(), 2);
    assert_eq!(
        std::fs::read_to_string(w.root.join("data/other.txt")).unwrap(),
        "other\n"
    );
    assert_eq!(
        std::fs::read_to_string(w.root.join("ro/file")).unwrap(),
        "ro\n"
    );
    assert!(!w.root.join("data/new.txt").exists());
    // The changes are in the upper directory, deletions as whiteouts.
    let upper = r.scratch.join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("data/cached.txt")).unwrap(),
        "evil\n"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("data/new.txt")).unwrap(),
        "new\n"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("data/other.txt")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "{whiteout:?}"
    );
}

#[test]
fn host_paths_are_out_of_reach() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let secret = w.tmp.path().join("secret");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let probe = format!("/etc/corral-escape-{}", marker());
    // busybox root: the host's files do not exist there.
    let r = w.run(&w.sh(&format!(
        "cat {} /etc/shadow; ls /proc/1/root/etc; true",
        secret.display()
    )));
    assert!(
        !r.stdout.contains("s3cr3t") && !r.stdout.contains("root:"),
        "{}",
        r.stdout
    );
    // host rootfs: system directories are read-only, /tmp is private.
    let code = format!(
        "import os\n\
         for p in ['{probe}', '/usr/corral-escape', '/bin/corral-escape']:\n\
         \x20   try:\n\
         \x20       open(p, 'w').write('x'); print('WROTE', p)\n\
         \x20   except OSError as e: print('refused', p, e.errno)\n\
         try:\n\
         \x20   print('READ', open('{}').read())\n\
         except OSError as e: print('unreadable', e.errno)\n",
        secret.display()
    );
    let r = w.run(&w.python(&code));
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    assert!(
        !r.stdout.contains("WROTE") && !r.stdout.contains("READ"),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.matches("refused").count(), 3, "{}", r.stdout);
    assert!(!Path::new(&probe).exists() && !Path::new("/usr/corral-escape").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cr3t\n");
}

#[test]
fn host_loopback_port_is_unreachable() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = w.run(&w.sh(&format!(
        "if echo hi | nc -w 2 127.0.0.1 {port}; then echo CONNECTED; else echo refused; fi; \
         nc -l -p {port} -e /bin/sh -c 'cat > /tmp/got' & \
         i=0; while [ $i -lt 100 ]; do \
           echo inside | nc -w 2 127.0.0.1 {port} 2>/dev/null && break; i=$((i+1)); sleep 0.1; \
         done; wait; echo \"got $(cat /tmp/got)\"; cat /proc/net/dev"
    )));
    // The host's port is unreachable, the sandbox's own loopback works.
    // (The listener hands the connection to `cat`: busybox's `nc -l` with
    // its stdin at end of file may close before it has read what came.)
    assert!(
        r.stdout.starts_with("refused\ngot inside\n"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // Only the loopback interface exists in the sandbox's namespace.
    let ifaces: Vec<&str> = r
        .stdout
        .lines()
        .skip(4)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{}", r.stdout);
    assert!(
        listener.accept().is_err(),
        "the sandbox reached the host's port"
    );
}

#[test]
fn host_processes_are_invisible_and_unsignalable() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let code = format!(
        "import os, ctypes, errno\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), 'self', os.getpid())\n\
         for sig in (9, 15):\n\
         \x20   try:\n\
         \x20       os.kill({pid}, sig); print('SIGNALLED')\n\
         \x20   except OSError as e: print('kill', errno.errorcode[e.errno])\n\
         r = libc.ptrace(16, {pid}, 0, 0)\n\
         print('ptrace', r, errno.errorcode.get(ctypes.get_errno()))\n"
    );
    let r = w.run(&w.python(&code));
    assert_eq!(r.outcome.exit_code, Some(0), "{}", r.stderr);
    assert!(!r.stdout.contains("SIGNALLED"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("kill ESRCH").count(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("ptrace -1 ESRCH"), "{}", r.stdout);
    // PID 1 (the reaper) and python itself: nothing of the host. (In a
    // container's second run, python is not PID 2.)
    let first = r.stdout.lines().next().unwrap_or_default();
    let own = first.rsplit(' ').next().unwrap_or_default();
    assert_eq!(first, format!("pids [1, {own}] self {own}"), "{}", r.stdout);
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process died"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn dangerous_system_calls_are_refused() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let calls = [
        ("mount", libc::SYS_mount, "0, 0, 0, 0, 0"),
        ("umount2", libc::SYS_umount2, "0, 0"),
        ("init_module", libc::SYS_init_module, "0, 0, 0"),
        ("finit_module", libc::SYS_finit_module, "0, 0, 0"),
        ("delete_module", libc::SYS_delete_module, "0, 0"),
        ("kexec_load", libc::SYS_kexec_load, "0, 0, 0, 0"),
        ("bpf", libc::SYS_bpf, "0, 0, 0"),
        ("keyctl", libc::SYS_keyctl, "0, 0, 0"),
        ("add_key", libc::SYS_add_key, "0, 0, 0, 0, 0"),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            "0, 0, 0, 0, 0",
        ),
        ("userfaultfd", libc::SYS_userfaultfd, "0"),
        ("setns", libc::SYS_setns, "0, 0"),
        ("unshare_newuser", libc::SYS_unshare, "0x10000000"),
        ("clone_newuser", libc::SYS_clone, "0x10000011, 0, 0, 0, 0"),
        ("open_by_handle_at", libc::SYS_open_by_handle_at, "0, 0, 0"),
        ("pivot_root", libc::SYS_pivot_root, "0, 0"),
    ];
    let mut code = String::from(
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\n",
    );
    for (name, nr, args) in calls {
        code.push_str(&format!(
            "r = libc.syscall({nr}, {args})\nprint('{name}', r, errno.errorcode.get(ctypes.get_errno()) if r == -1 else 'ALLOWED')\n"
        ));
    }
    // clone3 answers ENOSYS so that libc falls back to clone(), whose flags
    // the filter can see.
    code.push_str(&format!(
        "r = libc.syscall({}, 0, 0)\nprint('clone3', r, errno.errorcode.get(ctypes.get_errno()))\n",
        libc::SYS_clone3
    ));
    let r = w.run(&w.python(&code));
    assert_eq!(r.outcome.exit_code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for (name, _, _) in calls {
        assert!(
            r.stdout.lines().any(|l| l == format!("{name} -1 EPERM")),
            "{name} not refused:\n{}",
            r.stdout
        );
    }
    assert!(r.stdout.contains("clone3 -1 ENOSYS"), "{}", r.stdout);
    // The same from the shell's tools.
    let r = w.run(&w.sh(
        "mount -t tmpfs none /tmp 2>&1 && echo MOUNTED; unshare -U -r true 2>&1 && echo USERNS; \
         mount -o remount,rw / 2>&1 && echo REMOUNTED; echo end",
    ));
    assert!(
        !r.stdout.contains("MOUNTED") && !r.stdout.contains("USERNS"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("end\n"), "{}", r.stdout);
}

#[test]
fn daemonized_children_do_not_outlive_the_action_or_the_timeout() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let m = marker();
    // The command exits at once, leaving a detached grandchild behind.
    let r = w.run(&w.sh(&format!("(setsid sleep {m} > /dev/null 2>&1 &); echo left")));
    assert_eq!(r.outcome.exit_code, Some(0));
    assert!(
        host_processes(&["sleep", &m]).is_empty(),
        "a daemonized child survived the action"
    );
    // The command never exits: the timeout kills the whole tree.
    let mut req = w.sh(&format!("(setsid sleep {m} &); sleep {m}"));
    req.limits.timeout = Some(Duration::from_millis(700));
    let started = Instant::now();
    let r = w.run(&req);
    assert!(r.outcome.timed_out, "{:?}", r.outcome);
    assert_eq!(r.outcome.limit_hit, Some(LimitHit::Timeout));
    assert_eq!(r.outcome.signal, Some(libc::SIGKILL));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        host_processes(&["sleep", &m]).is_empty(),
        "a process outlived the timeout"
    );
}

#[test]
fn fork_bomb_hits_the_pids_limit() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let mut req = w.sh("bomb() { bomb | bomb & }; bomb; sleep 2; echo survived");
    req.limits.max_pids = Some(64);
    let r = w.run(&req);
    assert_eq!(
        r.outcome.limit_hit,
        Some(LimitHit::Pids),
        "{:?}\n{}",
        r.outcome,
        r.stderr
    );
    assert!(
        r.stderr.contains("can't fork") || r.stderr.contains("Resource temporarily unavailable"),
        "{}",
        r.stderr
    );
}

#[test]
fn memory_exhaustion_is_stopped_by_the_memory_limit() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    // `tail` of an endless line buffers it all.
    let mut req = w.sh("exec tail /dev/zero");
    req.limits.memory_bytes = Some(64 << 20);
    let r = w.run(&req);
    assert_eq!(
        r.outcome.limit_hit,
        Some(LimitHit::Memory),
        "{:?}",
        r.outcome
    );
    assert_eq!(r.outcome.signal, Some(libc::SIGKILL));
    assert!(r.outcome.peak_memory_bytes >= 60 << 20, "{:?}", r.outcome);
}

#[test]
fn filling_the_disk_is_stopped_by_the_written_bytes_bound() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let w = World::new();
    let max = 8u64 << 20;
    // One big file: RLIMIT_FSIZE stops it.
    let mut req = w.sh("exec dd if=/dev/zero of=/big bs=1M count=64");
    req.limits.max_written_bytes = Some(max);
    let r = w.run(&req);
    assert_eq!(
        r.outcome.limit_hit,
        Some(LimitHit::WrittenBytes),
        "{:?}",
        r.outcome
    );
    assert!(
        std::fs::metadata(r.scratch.join("upper/big"))
            .unwrap()
            .len()
            <= max
    );
    // Many files: the runner's watch on the upper directory stops it.
    let mut req = w.sh("i=0; while [ $i -lt 400 ]; do dd if=/dev/zero of=/f$i bs=64k count=4 2>/dev/null; i=$((i+1)); sleep 0.01; done; echo finished");
    req.limits.max_written_bytes = Some(max);
    let r = w.run(&req);
    assert_eq!(
        r.outcome.limit_hit,
        Some(LimitHit::WrittenBytes),
        "{:?}",
        r.outcome
    );
    assert!(!r.stdout.contains("finished"));
    // /tmp is bounded too.
    let mut req = w.sh("for i in 1 2 3 4 5 6 7 8 9 10 11 12; do dd if=/dev/zero of=/tmp/f$i bs=1M count=1 2>&1; done; echo done");
    req.limits.max_written_bytes = Some(max);
    let r = w.run(&req);
    assert!(r.stdout.contains("No space left on device"), "{}", r.stdout);
}
