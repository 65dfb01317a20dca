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

#[test]
fn a_runner_killed_while_making_containers_leaves_no_process_behind() -> anyhow::Result<()> {
    for delay_ms in [0u64, 1, 3, 6, 10, 15, 25, 40, 70, 120] {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("runner.sock");
        let mut runner = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(["runner", "--socket"])
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = runner.stdout.take().expect("piped stdout");
        let mut stderr = runner.stderr.take().expect("piped stderr");
        let (closed, closing) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let mut err = Vec::new();
            let _ = stderr.read_to_end(&mut err);
            let _ = closed.send(String::from_utf8_lossy(&err).into_owned());
        });
        assert!(
            wait_for(&socket, Duration::from_secs(30)),
            "the runner never served {}",
            socket.display()
        );
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
