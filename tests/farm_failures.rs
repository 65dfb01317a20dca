//! Failures in the middle of an action, on real processes: the runner
//! killed (only that action fails, clearly; the next one runs) and a worker
//! killed (the scheduler gives the action to another worker). Nothing of a
//! killed sandbox keeps running, and results stay readable and verified.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_integration::farm::{descendants, CorralFarm};
use corral_integration::remote::{command, BusyboxRoot, RemoteExec};
use corral_integration::server::{corral_binary, CorralServer, ServerOptions};
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;

const APPLETS: &[&str] = &["sh", "sleep", "echo", "true", "cat"];

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Host processes whose command line contains `marker`.
fn running(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| cmdline(*pid).contains(marker))
        .collect()
}

fn wait_until(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {patience:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("kill");
}

/// A `sleep` argument of about `secs` seconds whose fractional digits are
/// unique, so the test can find exactly its own sandbox processes.
fn marker(secs: u32) -> String {
    format!("{secs}.{}{:03}", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1000)
        .unwrap_or(0)
}

fn stdout_of(client: &RemoteExec, rt: &tokio::runtime::Runtime, r: &reapi::ActionResult) -> String {
    rt.block_on(client.stdout(r)).expect("the result's stdout")
}

#[test]
fn a_killed_runner_fails_only_its_action_and_is_started_again() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&farm.url(), "buildstream"))?;
    let root = BusyboxRoot::with_applets(APPLETS)?;
    rt.block_on(client.upload(&root.blobs))?;
    let mark = marker(60);
    let long = rt.block_on(client.upload_action(
        root.root,
        command(["sh", "-c", &format!("sleep {mark}")], &[("PATH", "/bin")]),
        b"runner-killed".to_vec(),
        true,
        None,
    ))?;

    let farm_pid = farm.pid();
    let killer = std::thread::spawn(move || {
        wait_until("the action's sleep starts", Duration::from_secs(60), || {
            !running(&format!("sleep {mark}")).is_empty()
        });
        let runner = descendants(farm_pid)
            .into_iter()
            .find(|pid| {
                let line = cmdline(*pid);
                line.contains(" runner ") && line.contains(" --socket ")
            })
            .expect("the farm's runner process");
        kill(runner, nix::sys::signal::Signal::SIGKILL);
        mark
    });
    let response = rt.block_on(client.execute(long, true))?;
    let mark = killer.join().expect("killer thread");
    let status = response.status.clone().unwrap_or_default();
    assert_eq!(
        status.code,
        tonic::Code::Internal as i32,
        "the action whose runner died fails as INTERNAL: {response:?}"
    );
    assert!(status.message.contains("runner"), "{}", status.message);
    // Its sandbox does not outlive the runner.
    wait_until(
        "the killed run's processes exit",
        Duration::from_secs(15),
        || running(&format!("sleep {mark}")).is_empty(),
    );

    // The next action gets a fresh runner.
    let next = rt.block_on(client.upload_action(
        root.root,
        command(["sh", "-c", "echo after"], &[("PATH", "/bin")]),
        b"after-runner-killed".to_vec(),
        true,
        None,
    ))?;
    let response = rt.block_on(client.execute(next, true))?;
    let result = response.result.clone().expect("a result");
    assert_eq!(result.exit_code, 0, "{response:?}");
    assert_eq!(stdout_of(&client, &rt, &result), "after\n");
    drop(rt);
    let status = farm.stop()?;
    assert!(status.success());
    Ok(())
}

/// A temporary directory the sandbox's user may traverse (as a worker's
/// data directory must be).
fn work_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `corral worker --name NAME` against `scheduler`, data under `dir`.
fn start_worker(scheduler: &str, dir: &Path, name: &str) -> anyhow::Result<Child> {
    Ok(Command::new(corral_binary()?)
        .args([
            "worker",
            "--scheduler",
            scheduler,
            "--slots",
            "1",
            "--name",
            name,
        ])
        .arg("--data")
        .arg(dir)
        .stdin(Stdio::null())
        .spawn()?)
}

#[test]
fn a_killed_workers_action_runs_again_on_another_worker() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start()?;
    let work = work_dir()?;
    let mut a = start_worker(&server.worker_url(), &work.path().join("a"), "worker-a")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&server.url(), "buildstream"))?;
    let root = BusyboxRoot::with_applets(APPLETS)?;
    rt.block_on(client.upload(&root.blobs))?;
    let mark = marker(2);
    let action = rt.block_on(client.upload_action(
        root.root,
        command(
            ["sh", "-c", &format!("sleep {mark} & wait; echo finished")],
            &[("PATH", "/bin")],
        ),
        b"worker-killed".to_vec(),
        true,
        None,
    ))?;

    let url = server.worker_url();
    let b_dir = work.path().join("b");
    let a_pid = a.id();
    let mut b: Option<Child> = None;
    let mut killed = false;
    let response = rt.block_on(client.execute_observed(action, true, |stage| {
        if stage == Stage::Executing && !killed {
            killed = true;
            wait_until("worker-a's sandbox starts", Duration::from_secs(60), || {
                !running(&format!("sleep {mark}")).is_empty()
            });
            b = Some(start_worker(&url, &b_dir, "worker-b").expect("start worker-b"));
            kill(a_pid, nix::sys::signal::Signal::SIGKILL);
        }
    }))?;
    assert!(killed, "the action never reached EXECUTING");
    let _ = a.wait();
    let result = response.result.clone().expect("a result");
    assert_eq!(result.exit_code, 0, "{response:?}");
    let meta = result.execution_metadata.clone().expect("metadata");
    assert_eq!(meta.worker, "worker-b", "the retry ran on the other worker");
    assert_eq!(stdout_of(&client, &rt, &result), "finished\n");
    // worker-a's runner and sandbox died with it.
    wait_until("worker-a's processes exit", Duration::from_secs(15), || {
        running(&format!("sleep {mark}")).is_empty()
            && running(&work.path().join("a").display().to_string()).is_empty()
    });
    if let Some(mut b) = b {
        let _ = b.kill();
        let _ = b.wait();
    }
    Ok(())
}

/// The scheduler goes away (server restarted on the same port and data):
/// the worker reconnects by itself and runs the next action.
#[test]
fn a_worker_reconnects_after_the_server_restarts() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let work = work_dir()?;
    let server_data = work.path().join("server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let options = ServerOptions {
        data_dir: Some(server_data.clone()),
        listen: Some(port),
        ..Default::default()
    };
    let server = CorralServer::start_with(options.clone())?;
    let mut worker = start_worker(&server.worker_url(), &work.path().join("w"), "worker-r")?;
    let rt = tokio::runtime::Runtime::new()?;
    let root = BusyboxRoot::with_applets(APPLETS)?;
    let run = |salt: &str| -> anyhow::Result<String> {
        let client = rt.block_on(RemoteExec::connect(
            &format!("http://{port}"),
            "buildstream",
        ))?;
        rt.block_on(client.upload(&root.blobs))?;
        let action = rt.block_on(client.upload_action(
            root.root,
            command(["sh", "-c", &format!("echo {salt}")], &[("PATH", "/bin")]),
            salt.as_bytes().to_vec(),
            true,
            None,
        ))?;
        let response = rt.block_on(client.execute(action, true))?;
        let result = response
            .result
            .clone()
            .unwrap_or_else(|| panic!("{response:?}"));
        Ok(stdout_of(&client, &rt, &result))
    };
    assert_eq!(run("before")?, "before\n");
    server.stop()?;
    // The worker loses its stream and retries with backoff meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let _server = CorralServer::start_with(options)?;
    assert_eq!(run("after")?, "after\n");
    assert!(worker.try_wait()?.is_none(), "the worker must still run");
    kill(worker.id(), nix::sys::signal::Signal::SIGTERM);
    let status = worker.wait()?;
    assert!(status.success(), "worker exit on SIGTERM: {status}");
    Ok(())
}

/// SIGTERM while an action runs: the action finishes and reports, then the
/// worker leaves cleanly. Build directories go after each action, and
/// leftovers of a crash at start-up.
#[test]
fn sigterm_drains_and_build_directories_do_not_pile_up() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start()?;
    let work = work_dir()?;
    let data = work.path().join("w");
    let leftover = data.join("builds/leftover-of-a-crash/scratch");
    std::fs::create_dir_all(&leftover)?;
    let mut worker = start_worker(&server.worker_url(), &data, "worker-t")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&server.url(), "buildstream"))?;
    let root = BusyboxRoot::with_applets(APPLETS)?;
    rt.block_on(client.upload(&root.blobs))?;
    let action = rt.block_on(client.upload_action(
        root.root,
        command(["sh", "-c", "sleep 2; echo drained"], &[("PATH", "/bin")]),
        b"drain".to_vec(),
        true,
        None,
    ))?;
    let worker_pid = worker.id();
    let mut signalled = false;
    let response = rt.block_on(client.execute_observed(action, true, |stage| {
        if stage == Stage::Executing && !signalled {
            signalled = true;
            kill(worker_pid, nix::sys::signal::Signal::SIGTERM);
        }
    }))?;
    assert!(signalled, "the action never reached EXECUTING");
    let result = response
        .result
        .clone()
        .unwrap_or_else(|| panic!("{response:?}"));
    assert_eq!(result.exit_code, 0, "{response:?}");
    assert_eq!(stdout_of(&client, &rt, &result), "drained\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not leave after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "worker exit: {status}");
    let left: Vec<_> = std::fs::read_dir(data.join("builds"))?.collect();
    assert!(left.is_empty(), "build directories left behind: {left:?}");
    Ok(())
}

/// A data directory the sandbox's user cannot reach is refused at start-up,
/// naming the closed directory, instead of failing actions later.
#[test]
fn a_data_directory_closed_to_the_sandbox_is_refused() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start()?;
    let closed = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    let output = Command::new(corral_binary()?)
        .args([
            "worker",
            "--scheduler",
            &server.worker_url(),
            "--slots",
            "1",
        ])
        .arg("--data")
        .arg(closed.path().join("data"))
        .stdin(Stdio::null())
        .output()?;
    assert!(!output.status.success(), "the worker must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach") && stderr.contains(&closed.path().display().to_string()),
        "{stderr}"
    );
    Ok(())
}
