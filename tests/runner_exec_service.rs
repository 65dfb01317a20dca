//! `corral runner exec` hands its command to a resident service that the
//! first `runner exec` starts (docs/sandbox.md, "runner exec's service"):
//! later calls are served by it; the command gets the caller's very
//! streams, which close when it ends although the service lives on; a
//! caller that goes away cancels its run; a service killed outright is
//! replaced; two first callers start one service; another user is refused; an idle service leaves; an unusable
//! service directory costs only the speed.
//!
//! Each test gives `runner exec` a runtime directory of its own
//! (`XDG_RUNTIME_DIR`), whose removal at the end makes its service leave.
//! Runs as root (as CI does) with Debian's busybox-static; cargo builds the
//! `corral` it runs.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_integration::bench::sandbox::busybox_root;
use corral_integration::process::output_within;
use corral_integration::server::corral_binary;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A person's desk: a runtime directory of its own and a busybox root.
struct Desk {
    tmp: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(tmp.path().join("run")).unwrap();
        fs::set_permissions(tmp.path().join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        busybox_root(&tmp.path().join("root")).unwrap();
        Desk { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// The directory of this desk's exec services.
    fn services(&self) -> PathBuf {
        self.tmp.path().join("run/corral-exec")
    }

    /// `corral runner exec --root ROOT EXTRA… -- ARGS…`.
    fn exec(&self, extra: &[&str], args: &[&str]) -> Command {
        self.exec_in(&self.root(), extra, args)
    }

    /// The same with `root` as the root.
    fn exec_in(&self, root: &std::path::Path, extra: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new(corral_binary().unwrap());
        cmd.args(["runner", "exec", "--root"])
            .arg(root)
            .args(extra)
            .arg("--")
            .args(args)
            .env("XDG_RUNTIME_DIR", self.tmp.path().join("run"))
            .env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, extra: &[&str], args: &[&str]) -> Output {
        output_within(&mut self.exec(extra, args), RUN_TIMEOUT).unwrap()
    }

    /// Runs `script` with at most a megabyte to write, a scratch
    /// directory's twins a few clock ticks old (spares are trusted only
    /// some ticks after they are made), and checks that the written-bytes
    /// limit stopped it.
    fn assert_over_a_megabyte(&self, script: &str, what: &str) {
        std::thread::sleep(Duration::from_millis(30));
        let out = self.run(&["--max-written", "1000000"], &["/bin/sh", "-c", script]);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("stopped by a limit: WrittenBytes"),
            "{what}: {stderr}"
        );
    }

    /// The sockets in the service directory.
    fn sockets(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.services()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect()
    }

    /// The pids of the services of this desk: of the processes with their
    /// command line, the ones with threads (their zygotes, warm children
    /// and containers are single-threaded forks, and may outlive a killed
    /// service for a moment).
    fn service_pids(&self) -> Vec<u32> {
        let dir = self.services().display().to_string();
        processes_whose_command_has(&["resident", &dir])
            .into_iter()
            .filter(|pid| threads(*pid) > 1)
            .collect()
    }
}

/// Pids of processes whose command line has every one of `words` in it.
fn processes_whose_command_has(words: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if words.iter().all(|w| cmdline.contains(w)) {
            pids.push(pid);
        }
    }
    pids
}

/// Pids of processes whose command line is `line` (words joined by
/// spaces).
fn processes_whose_command_is(line: &str) -> Vec<u32> {
    processes_whose_command_has(&[line])
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim_end() == line)
        })
        .collect()
}

/// The number of threads of process `pid` (0 if it is gone).
fn threads(pid: u32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Waits up to `limit` for `done`.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_first_exec_starts_the_service_and_the_next_ones_are_served_by_it() {
    let desk = Desk::new();
    let first = desk.run(&[], &["/bin/echo", "one"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), "one\n");
    let sockets = desk.sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let service = desk.service_pids();
    assert_eq!(service.len(), 1, "{service:?}");
    for i in 0..5 {
        let out = desk.run(&[], &["/bin/sh", "-c", "echo two; echo to-err >&2; exit 7"]);
        assert_eq!(out.status.code(), Some(7), "run {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "two\n");
        assert_eq!(text(&out.stderr), "to-err\n");
    }
    assert_eq!(
        desk.service_pids(),
        service,
        "the same service served every run"
    );
    assert_eq!(desk.sockets(), sockets);
    // What the command wrote stays in its overlay; the root is untouched.
    let out = desk.run(&[], &["/bin/sh", "-c", "echo x > /etc/f && cat /etc/f"]);
    assert_eq!(text(&out.stdout), "x\n", "{}", text(&out.stderr));
    assert!(!desk.root().join("etc/f").exists());
    // A mistake is reported as a cold exec reports it, naming the command.
    let out = desk.run(&[], &["/no/such/command"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("/no/such/command"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_command_writes_to_the_callers_own_streams_which_close_when_it_ends() {
    let desk = Desk::new();
    // A file opened for appending, already holding a line: the command's
    // output follows it (a reopened path would overwrite it).
    let log = desk.tmp.path().join("log");
    fs::write(&log, "before\n").unwrap();
    let append = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let status = desk
        .exec(&[], &["/bin/echo", "after"])
        .stdin(Stdio::null())
        .stdout(append)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fs::read_to_string(&log).unwrap(), "before\nafter\n");

    // A pipe in and out; the command leaves a process behind, which its
    // end kills, so the caller's pipe closes although the service and its
    // containers live on.
    let mut child = desk
        .exec(&[], &["/bin/sh", "-c", "sleep 100 & cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"through\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the caller's pipes did not close when the command ended")
        .unwrap();
    assert_eq!(text(&out.stdout), "through\n", "{}", text(&out.stderr));
    assert_eq!(desk.service_pids().len(), 1);
}

#[test]
fn scratch_directories_made_ahead_are_each_runs_own() {
    let desk = Desk::new();
    // The service makes each run's scratch directory, with the root's
    // directories given to the sandbox's user, ahead of the call after
    // the first: a write lands in that run's directory alone.
    for i in 0..4 {
        let out = desk.run(
            &[],
            &[
                "/bin/sh",
                "-c",
                "ls /etc; echo x > /etc/new-$$ && stat -c '%u %a' /etc",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "0 755\n",
            "run {i}: nothing of an earlier run"
        );
    }
    assert!(!desk.root().join("etc").read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("new-")));
    // Kept, through the service and in a container of its own: the
    // directory printed holds `upper/` with what the command wrote.
    for extra in [&["--keep"][..], &["--keep", "--own-container"][..]] {
        let out = desk.run(extra, &["/bin/sh", "-c", "echo y > /etc/kept"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}");
        let kept = stderr
            .lines()
            .find_map(|l| l.strip_prefix("corral: scratch directory kept at "))
            .unwrap_or_else(|| panic!("{extra:?}: nothing kept in {stderr:?}"));
        let kept = PathBuf::from(kept);
        assert_eq!(
            fs::read_to_string(kept.join("upper/etc/kept")).unwrap(),
            "y\n",
            "{extra:?}"
        );
        corral_proto::scratch::remove_tree(&kept).unwrap();
    }
}

#[test]
fn a_reused_scratch_directory_holds_nothing_of_its_last_run() {
    let desk = Desk::new();
    for dir in ["usr/lib", "usr/share", "var"] {
        fs::create_dir_all(desk.root().join(dir)).unwrap();
    }
    fs::write(desk.root().join("usr/lib/keep"), "").unwrap();
    // Each run finds the root as it is, then writes a file, makes a
    // directory, changes a mode, and removes a directory and makes it
    // again (overlayfs marks the new one opaque: the next run must not
    // inherit it and lose the root's `keep`); the service reuses a
    // scratch directory once what the run changed is made anew.
    let script = "test ! -e /etc/leak && test ! -e /usr/share/new && test -e /usr/lib/keep \
                  && stat -c %a /var && echo x > /etc/leak && mkdir /usr/share/new \
                  && chmod 700 /var && rm -rf /usr/lib && mkdir /usr/lib && chmod 755 /usr/lib";
    let mut used = std::collections::HashSet::new();
    let mut reused = 0;
    for i in 0..8 {
        // Spares are trusted only some clock ticks after they are made.
        std::thread::sleep(Duration::from_millis(30));
        let out = desk.run(&["--stats"], &["/bin/sh", "-c", script]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {i}: {stderr}");
        assert_eq!(text(&out.stdout), "755\n", "run {i}: {stderr}");
        let outcome: serde_json::Value = stderr
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("run {i}: no outcome in {stderr:?}"));
        let upper = PathBuf::from(outcome["upper_dir"].as_str().unwrap());
        if !used.insert(upper.parent().unwrap().to_path_buf()) {
            reused += 1;
        }
    }
    assert!(
        reused >= 4,
        "{reused} of 8 runs reused a directory: {used:?}"
    );
}

#[test]
fn bytes_written_across_reused_twins_are_all_counted() {
    let desk = Desk::new();
    for dir in ["srv/a", "srv/b", "srv/c"] {
        fs::create_dir_all(desk.root().join(dir)).unwrap();
    }
    // Two files of 600 kB in two directories the root's twins give, each
    // under the bound per file, together over it: only the measurement of
    // the upper directory after the run can tell. The service reuses its
    // scratch directories, whose twins are older than the run and whose
    // empty ones it does not read.
    let script = "dd if=/dev/zero of=/srv/a/f bs=1000 count=600 2>/dev/null \
                  && dd if=/dev/zero of=/srv/b/f bs=1000 count=600 2>/dev/null";
    for i in 0..4 {
        desk.assert_over_a_megabyte(script, &format!("run {i}"));
    }
    let out = desk.run(
        &["--max-written", "1000000"],
        &["/bin/sh", "-c", "echo x > /srv/c/f"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The service watches its spares' twins and the run measures only the
/// twins whose events say they changed: runs that try to write where the
/// events would not say so. Each writes two files of 600 kB, together
/// over the bound, after moving a twin into another, after removing a
/// twin and making it again, and after more new entries than the kernel
/// queues events for (16,384 by default); each twice, the second time in
/// a scratch directory made ready again after the first.
#[test]
fn bytes_written_past_the_twins_events_are_all_counted() {
    let desk = Desk::new();
    for dir in ["srv/a/deep", "srv/b", "srv/c", "opt/d"] {
        fs::create_dir_all(desk.root().join(dir)).unwrap();
    }
    let queued = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events").unwrap();
    let queued: u64 = queued.trim().parse().unwrap();
    let dd = |to: &str| format!("dd if=/dev/zero of={to} bs=1000 count=600 2>/dev/null");
    let scripts = [
        format!(
            "mv /srv/a /srv/b/a && {} && {}",
            dd("/srv/b/a/deep/f"),
            dd("/srv/a.f")
        ),
        format!(
            "rmdir /srv/c && mkdir /srv/c && {} && {}",
            dd("/srv/c/f"),
            dd("/opt/d/f")
        ),
        format!(
            "i=0; while [ $i -le {queued} ]; do : > /srv/b/$i; i=$((i+1)); done; {} && {}",
            dd("/srv/a/deep/f"),
            dd("/opt/d/f")
        ),
    ];
    for script in &scripts {
        for i in 0..2 {
            desk.assert_over_a_megabyte(script, &format!("{script:.40} run {i}"));
        }
    }
}

/// What the watch saves: a run that writes in one twin reads that twin
/// and its parent (overlayfs marks the twin it wrote in), not every one;
/// the service's log says so at debug level. A spare's first run reads a
/// few more, where overlayfs records on each twin it looks up the
/// directory it stands for.
#[test]
fn a_run_measures_only_the_twins_it_changed() {
    let desk = Desk::new();
    for dir in ["srv/a", "srv/b", "opt/c/d", "var/e"] {
        fs::create_dir_all(desk.root().join(dir)).unwrap();
    }
    let script = "echo x > /srv/a/f";
    for i in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        let mut cmd = desk.exec(&["--max-written", "1000000"], &["/bin/sh", "-c", script]);
        let out = output_within(cmd.env("RUST_LOG", "corral_runner=debug"), RUN_TIMEOUT).unwrap();
        assert_eq!(out.status.code(), Some(0), "run {i}: {}", text(&out.stderr));
    }
    let logs: String = fs::read_dir(desk.services())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    let field = |line: &str, name: &str| -> usize {
        let at = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let measured: Vec<(usize, usize, usize)> = logs
        .lines()
        .filter(|l| l.contains("twins measured"))
        .map(|l| (field(l, "read"), field(l, "of"), field(l, "bytes")))
        .collect();
    assert_eq!(measured.len(), 4, "{logs}");
    // The upper directory and the twins of the busybox root's directories
    // (bin, dev, proc, tmp…), and of srv, srv/a, srv/b, opt, opt/c,
    // opt/c/d, var, var/e.
    assert!(
        measured.iter().all(|m| m.1 >= 13 && m.2 == 2),
        "{measured:?}"
    );
    assert!(measured.iter().any(|m| m.0 <= 2), "{measured:?}");
}

/// The state letter of process `pid` (`R`, `S`, `D`…), if it is there.
fn state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

#[test]
fn an_idle_services_warm_containers_add_nothing_to_the_load_average() {
    let desk = Desk::new();
    let out = desk.run(&[], &["/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The service, its zygote and its warm containers share the command
    // line; a warm container's PID 1 and its run's process wait for the
    // next request. The load average counts every process in state D.
    let dir = desk.services().display().to_string();
    let family = || processes_whose_command_has(&["resident", &dir]);
    assert!(
        eventually(Duration::from_secs(10), || family().len() >= 6),
        "no warm containers: {:?}",
        family()
    );
    // A process may pass through state D for a moment (a disk write, a
    // container being made): the fault is staying there while idle.
    let mut times_seen = std::collections::HashMap::<u32, usize>::new();
    let samples = 10;
    for _ in 0..samples {
        for pid in family() {
            if state(pid) == Some('D') {
                *times_seen.entry(pid).or_default() += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stuck: Vec<u32> = times_seen
        .into_iter()
        .filter(|(_, n)| *n == samples)
        .map(|(pid, _)| pid)
        .collect();
    assert!(
        stuck.is_empty(),
        "uninterruptible all the while idle: {stuck:?}"
    );
}

#[test]
fn a_caller_that_goes_away_cancels_its_run() {
    let desk = Desk::new();
    // The service is started by a first call, so that the second is its.
    assert!(desk.run(&[], &["/bin/true"]).status.success());
    let mut child = desk
        .exec(&[], &["/bin/sh", "-c", "echo started; exec sleep 31.7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    // The shell execs the sleep just after its echo.
    assert!(eventually(Duration::from_secs(10), || {
        processes_whose_command_is("sleep 31.7").len() == 1
    }));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || {
            processes_whose_command_is("sleep 31.7").is_empty()
        }),
        "the command outlived its caller"
    );
    assert_eq!(desk.service_pids().len(), 1, "the service lives on");
    assert!(desk.run(&[], &["/bin/true"]).status.success());
}

/// A caller that comes as the service dies: the dying service's threads
/// still hold its socket for a moment, so the call is accepted and then
/// dropped unread. The caller, told so by the kernel's reset, sends it
/// again, to the next service (before, it failed with ECONNRESET nearly
/// every time this way).
#[test]
fn a_call_as_the_service_dies_is_sent_again_to_the_next_one() {
    let desk = Desk::new();
    for i in 0..5 {
        assert!(desk.run(&[], &["/bin/true"]).status.success());
        for pid in desk.service_pids() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        let out = desk.run(&[], &["/bin/echo", "again"]);
        let stderr = text(&out.stderr);
        assert_eq!(text(&out.stdout), "again\n", "call {i}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "call {i}: {stderr}");
        assert!(!stderr.contains("unavailable"), "call {i}: {stderr}");
    }
}

#[test]
fn a_service_killed_outright_is_replaced_by_the_next_call() {
    let desk = Desk::new();
    assert!(desk.run(&[], &["/bin/true"]).status.success());
    let killed = desk.service_pids();
    assert_eq!(killed.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || !alive(killed[0])));
    // Its socket file is left behind, answering no one.
    assert_eq!(desk.sockets().len(), 1);
    let out = desk.run(&[], &["/bin/echo", "again"]);
    assert_eq!(text(&out.stdout), "again\n", "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("unavailable"),
        "{}",
        text(&out.stderr)
    );
    let now = desk.service_pids();
    assert_eq!(now.len(), 1);
    assert_ne!(now, killed);
}

#[test]
fn two_first_callers_at_once_start_one_service() {
    let desk = Desk::new();
    let children: Vec<_> = (0..2)
        .map(|i| {
            desk.exec(&[], &["/bin/echo", &format!("caller {i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("caller {i}\n"));
    }
    assert_eq!(desk.sockets().len(), 1);
    assert_eq!(desk.service_pids().len(), 1);
}

#[test]
fn a_caller_of_another_user_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    let desk = Desk::new();
    // A service on a socket that user 65534 can reach (`runner exec` puts
    // its own where no one else may enter).
    let open = desk.tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open.join("s.sock");
    let mut service = Command::new(corral_binary().unwrap())
        .args(["runner", "resident", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(30), || socket.exists()));
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
                  s.connect(sys.argv[1])\n\
                  s.send(b'{}')\n\
                  sys.stdout.write(s.recv(65536).decode())\n";
    let out = output_within(
        Command::new("python3")
            .args(["-c", script])
            .arg(&socket)
            .uid(65534)
            .gid(65534),
        RUN_TIMEOUT,
    )
    .unwrap();
    let answer = text(&out.stdout);
    assert!(
        answer.contains("serves uid 0 only") && answer.contains("uid 65534"),
        "{answer} {}",
        text(&out.stderr)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(service.wait().unwrap().success());
    assert!(
        !socket.exists(),
        "the service removes its socket as it leaves"
    );

    // A file that is not a socket is never replaced.
    let precious = open.join("precious");
    fs::write(&precious, "keep me").unwrap();
    let out = output_within(
        Command::new(corral_binary().unwrap())
            .args(["runner", "resident", "--socket"])
            .arg(&precious),
        RUN_TIMEOUT,
    )
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a socket"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
}

#[test]
fn an_idle_service_leaves() {
    let desk = Desk::new();
    let config = desk.tmp.path().join("runner.toml");
    fs::write(&config, "exec_service_idle_secs = 1\n").unwrap();
    let config = config.display().to_string();
    let out = desk.run(&["--config", &config], &["/bin/true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(desk.service_pids().len(), 1);
    assert!(
        eventually(Duration::from_secs(20), || desk.service_pids().is_empty()
            && desk.sockets().is_empty()),
        "the service stayed: {:?}",
        desk.service_pids()
    );
}

#[test]
fn an_unusable_service_directory_costs_only_the_speed() {
    let desk = Desk::new();
    fs::create_dir(desk.services()).unwrap();
    fs::set_permissions(desk.services(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = desk.run(&[], &["/bin/echo", "still"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "still\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("has mode 755") && stderr.contains("container of this process's own"),
        "{stderr}"
    );
    assert!(desk.service_pids().is_empty());

    let desk = Desk::new();
    let out = desk.run(&["--own-container"], &["/bin/echo", "own"]);
    assert_eq!(text(&out.stdout), "own\n", "{}", text(&out.stderr));
    assert!(desk.service_pids().is_empty() && desk.sockets().is_empty());
}

/// The desk's runtime directory goes with it, and its service with that.
impl Drop for Desk {
    fn drop(&mut self) {
        let pids = self.service_pids();
        let _ = fs::remove_dir_all(self.services());
        let gone = eventually(Duration::from_secs(10), || pids.iter().all(|p| !alive(*p)));
        if !gone && !std::thread::panicking() {
            panic!("the service {pids:?} outlived its socket");
        }
    }
}

/// Where `/tmp` is a tmpfs (Debian 13, Fedora, Arch), the service's
/// scratch directories are on a file system mounted below `/`; so is a
/// root kept there. Both are mounted, served and in a container of the
/// call's own (`/dev/shm` stands in for such a `/tmp`).
#[test]
fn scratch_and_root_on_a_tmpfs_are_mounted() {
    use std::os::unix::fs::MetadataExt;
    let desk = Desk::new();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    fs::set_permissions(shm.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(
        fs::metadata(shm.path()).unwrap().dev(),
        fs::metadata(desk.tmp.path()).unwrap().dev(),
        "/dev/shm is not a file system of its own"
    );
    let root = shm.path().join("root");
    busybox_root(&root).unwrap();
    for extra in [&[][..], &["--own-container"][..]] {
        for i in 0..2 {
            let mut cmd = desk.exec_in(&root, extra, &["/bin/sh", "-c", "echo in > /f && cat /f"]);
            cmd.env("TMPDIR", shm.path());
            let out = output_within(&mut cmd, RUN_TIMEOUT).unwrap();
            assert_eq!(
                (out.status.code(), text(&out.stdout)),
                (Some(0), "in\n".to_string()),
                "{extra:?} run {i}: {}",
                text(&out.stderr)
            );
        }
    }
    assert!(!root.join("f").exists());
    // A call with another temporary directory reaches another service:
    // a service makes its scratch directories in the one it started with.
    let plain = desk.run(&[], &["/bin/true"]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain.stderr));
    assert_eq!(desk.sockets().len(), 2, "{:?}", desk.sockets());
}
