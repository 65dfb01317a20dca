//! A runner killed at any moment leaves no process behind. The runner
//! makes containers ahead of requests; a runner killed while one is half
//! made once left libcontainer's intermediate process (and sometimes the
//! container's init) orphaned, waiting forever for a parent that was gone
//! and holding the stdout and stderr the runner was started with, so a
//! worker's caller waiting for them hung. Each round kills a fresh runner
//! at another moment of its start and then waits for its pipes to close:
//! they close only when no process holds them.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let line = std::fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&line).replace('\0', " ");
            line.contains(needle)
                .then(|| format!("{} {line}", e.file_name().to_string_lossy()))
        })
        .collect()
}

fn wait_for(path: &Path, patience: Duration) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > patience {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Starts `corral runner --socket socket` with its stdout and stderr on
/// pipes, and waits until it serves. The receiver hears (the runner's
/// stderr) once no process holds either pipe any more.
fn start_runner(socket: &Path) -> anyhow::Result<(std::process::Child, mpsc::Receiver<String>)> {
    let mut runner = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["runner", "--socket"])
        .arg(socket)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = runner.stdout.take().context("piped stdout")?;
    let mut stderr = runner.stderr.take().context("piped stderr")?;
    let (closed, closing) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err);
        let _ = closed.send(String::from_utf8_lossy(&err).into_owned());
    });
    assert!(
        wait_for(socket, Duration::from_secs(30)),
        "the runner never served {}",
        socket.display()
    );
    Ok((runner, closing))
}

#[test]
fn a_runner_killed_while_making_containers_leaves_no_process_behind() -> anyhow::Result<()> {
    for delay_ms in [0u64, 1, 3, 6, 10, 15, 25, 40, 70, 120] {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("runner.sock");
        let (mut runner, closing) = start_runner(&socket)?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        runner.kill()?;
        runner.wait()?;
        let needle = socket.display().to_string();
        match closing.recv_timeout(Duration::from_secs(20)) {
            Ok(_) => {}
            Err(_) => panic!(
                "killed {delay_ms} ms after it served, the runner left processes holding its \
                 stdout and stderr:\n{}",
                processes_naming(&needle).join("\n")
            ),
        }
        let left = processes_naming(&needle);
        assert!(
            left.is_empty(),
            "killed {delay_ms} ms after it served, the runner left:\n{}",
            left.join("\n")
        );
    }
    Ok(())
}

/// The directories a run id's cgroup has on this host: one per v1
/// controller the runner uses, or one on cgroup v2; parent `corral`.
fn run_cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join("corral").join(id)];
    }
    ["memory", "pids", "cpu", "cpuacct"]
        .iter()
        .map(|c| root.join(c))
        .filter(|c| c.join("cgroup.procs").exists())
        .map(|c| c.join("corral").join(id))
        .collect()
}

fn make_run_cgroup(id: &str) -> anyhow::Result<()> {
    for dir in run_cgroup_dirs(id) {
        std::fs::create_dir_all(&dir)?;
    }
    Ok(())
}

/// A killed runner's warm containers leave their cgroups behind (their
/// processes are gone, the directories are not); the next runner to start
/// removes those, and only those: not a run whose process lives, not one
/// begun moments ago (it may belong to a runner in another PID namespace).
/// A run's id names its process and the second it began.
#[test]
fn a_starting_runner_removes_the_cgroups_of_runs_whose_process_is_gone() -> anyhow::Result<()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root): only root's runner makes cgroups"
    );
    // A process that has certainly exited: its pid names nothing now.
    let mut gone = Command::new("true").spawn()?;
    let dead = gone.id();
    gone.wait()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let stale = format!("corral-{dead}-{}-000000001", now - 120);
    let young = format!("corral-{dead}-{now}-000000002");
    let living = format!("corral-{}-{}-000000003", std::process::id(), now - 120);
    make_run_cgroup(&stale)?;
    make_run_cgroup(&young)?;
    make_run_cgroup(&living)?;
    assert!(
        !run_cgroup_dirs(&stale).is_empty(),
        "no cgroup controller found"
    );

    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("runner.sock");
    // The sweep is done before the runner serves.
    let (mut runner, _closing) = start_runner(&socket)?;
    runner.kill()?;
    runner.wait()?;

    let left = |id: &str| {
        run_cgroup_dirs(id)
            .into_iter()
            .filter(|d| d.exists())
            .count()
    };
    let (stale_left, young_left, living_left) = (left(&stale), left(&young), left(&living));
    for id in [&young, &living] {
        for dir in run_cgroup_dirs(id) {
            let _ = std::fs::remove_dir(dir);
        }
    }
    assert_eq!(stale_left, 0, "the stale run's cgroup is still there");
    assert_eq!(
        young_left,
        run_cgroup_dirs(&young).len(),
        "a young cgroup was removed"
    );
    assert_eq!(
        living_left,
        run_cgroup_dirs(&living).len(),
        "a living run's cgroup was removed"
    );
    Ok(())
}

/// Children of process `pid` (its main thread's).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The runner's warm children (its zygote's children): each makes one
/// container ahead of a request. One killed outright (the OOM killer, a
/// `kill -9`) at any moment of that work must take its container with it;
/// one was seen leaving the container's init waiting forever for
/// libcontainer's start signal. Kills warm children at a steady pace for
/// two seconds, then stops the runner and waits for its pipes to close.
#[test]
fn warm_children_killed_at_any_moment_leave_no_container_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("runner.sock");
    let (mut runner, closing) = start_runner(&socket)?;
    let mut killed = 0;
    let started = Instant::now();
    let mut pace = 1u64;
    while started.elapsed() < Duration::from_secs(2) {
        for zygote in children(runner.id()) {
            for warm in children(zygote) {
                let pid = nix::unistd::Pid::from_raw(warm as i32);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    killed += 1;
                }
            }
        }
        // 1 to 13 ms apart, so the kills land at every stage of the work.
        pace = pace * 7 % 13 + 1;
        std::thread::sleep(Duration::from_millis(pace));
    }
    assert!(killed > 0, "no warm child was found to kill");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    runner.wait()?;
    let needle = socket.display().to_string();
    assert!(
        closing.recv_timeout(Duration::from_secs(20)).is_ok(),
        "after {killed} warm children were killed, processes still hold the runner's \
         stdout and stderr:\n{}",
        processes_naming(&needle).join("\n")
    );
    let left = processes_naming(&needle);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    Ok(())
}
