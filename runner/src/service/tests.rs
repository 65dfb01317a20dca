//! The runner service end to end: zygote forked first, gRPC on a unix
//! socket, two runs at once, readiness, and errors naming the bad field.

use std::time::{Duration, Instant};

use crate::testkit as common;
use crate::zygote::Zygote;
use crate::{Host, RunnerConfig};
use corral_proto::runner::v1 as pb;

pub(crate) fn run_request(
    root: &std::path::Path,
    scratch: &std::path::Path,
    out: &std::path::Path,
    script: &str,
) -> pb::RunRequest {
    pb::RunRequest {
        input_root: root.display().to_string(),
        scratch_dir: scratch.display().to_string(),
        rootfs: Some(pb::run_request::Rootfs::InputRootAsRoot(
            pb::InputRootAsRoot {},
        )),
        arguments: vec!["sh".into(), "-c".into(), script.into()],
        environment: vec![pb::EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        stdout_path: out.display().to_string(),
        ..Default::default()
    }
}

pub(super) type Served = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<crate::Result<()>>,
    corral_proto::runner::v1::runner_client::RunnerClient<tonic::transport::Channel>,
);

/// Serves the runner protocol on `socket` until the returned sender fires;
/// returns a connected client.
pub(super) async fn serve(host: Host, zygote: Zygote, socket: &std::path::Path) -> Served {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let socket = socket.to_path_buf();
        async move {
            super::serve(host, zygote, &socket, async {
                let _ = stop_rx.await;
            })
            .await
        }
    });
    let client = loop {
        match crate::client::connect(socket).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    (stop_tx, server, client)
}

/// What each test starts from: a busybox root in a temporary directory,
/// the runner's host for `config`, its zygote, and a runtime to serve on.
struct Started {
    tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    host: Host,
    zygote: Zygote,
    rt: tokio::runtime::Runtime,
}

fn start(config: &RunnerConfig) -> Started {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::busybox_root(&root);
    let host = Host::probe(config).unwrap();
    // Forked before the runtime exists: the zygote is single-threaded.
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let zygote = unsafe { Zygote::spawn(host.clone()) }.unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    Started {
        tmp,
        root,
        host,
        zygote,
        rt,
    }
}

#[test]
fn serves_concurrent_runs_over_a_unix_socket() {
    let Started {
        tmp,
        root,
        host,
        zygote,
        rt,
    } = start(&RunnerConfig::default());
    let socket = tmp.path().join("runner.sock");
    rt.block_on(async {
        let (stop_tx, server, mut client) = serve(host, zygote, &socket).await;
        let ready = client
            .ready(pb::ReadyRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(ready.ready);
        assert_eq!((ready.sandbox_uid, ready.sandbox_gid), (65534, 65534));
        assert!(ready
            .enforced_limits
            .iter()
            .any(|l| l.starts_with("memory:")));

        // Two runs that each sleep 1 s finish in well under 2 s together.
        let mut calls = Vec::new();
        let started = Instant::now();
        for i in 0..2 {
            let scratch = tmp.path().join(format!("scratch{i}"));
            std::fs::create_dir(&scratch).unwrap();
            let out = tmp.path().join(format!("out{i}"));
            let req = run_request(
                &root,
                &scratch,
                &out,
                &format!("sleep 1; echo run{i} > /result; echo done{i}; exit {i}"),
            );
            let mut c = client.clone();
            calls.push(tokio::spawn(
                async move { (c.run(req).await, out, scratch) },
            ));
        }
        for (i, call) in calls.into_iter().enumerate() {
            let (resp, out, scratch) = call.await.unwrap();
            let resp = resp.unwrap().into_inner();
            assert_eq!(resp.exit_code, i as i32);
            assert_eq!(resp.signal, 0);
            assert!(!resp.timed_out);
            assert!(resp.wall_time_us >= 1_000_000, "{resp:?}");
            assert_eq!(std::fs::read_to_string(out).unwrap(), format!("done{i}\n"));
            // The file the action wrote is in the upper directory, not the root.
            assert_eq!(resp.upper_dir, scratch.join("upper").display().to_string());
            assert_eq!(
                std::fs::read_to_string(scratch.join("upper/result")).unwrap(),
                format!("run{i}\n")
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(1900),
            "runs were not concurrent: {:?}",
            started.elapsed()
        );
        assert!(!root.join("result").exists());

        // Mistakes come back as INVALID_ARGUMENT naming what was wrong.
        let scratch = tmp.path().join("scratch-bad");
        std::fs::create_dir(&scratch).unwrap();
        let mut req = run_request(&root, &scratch, &tmp.path().join("o"), "true");
        req.arguments = vec!["no-such-tool".into()];
        let err = client.run(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("no-such-tool"), "{}", err.message());
        req.input_root = "/nonexistent/input".into();
        let err = client.run(req.clone()).await.unwrap_err();
        assert!(
            err.message().contains("/nonexistent/input"),
            "{}",
            err.message()
        );
        req.input_root = root.display().to_string();
        req.profile = "/nonexistent/profile.toml".into();
        let err = client.run(req.clone()).await.unwrap_err();
        assert!(
            err.message().contains("/nonexistent/profile.toml"),
            "{}",
            err.message()
        );
        req.profile = String::new();
        req.rootfs = None;
        let err = client.run(req).await.unwrap_err();
        assert!(err.message().contains("rootfs"), "{}", err.message());

        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}

/// Host processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(marker) {
                found.push(text);
            }
        }
    }
    found
}

/// A caller that drops its `Run` call (the worker cancelled the action)
/// gets the container killed: nothing of it is left running.
#[test]
fn a_dropped_call_kills_its_container() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::busybox_root(&root);
    let host = Host::probe(&RunnerConfig::default()).unwrap();
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let zygote = unsafe { Zygote::spawn(host.clone()) }.unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = tmp.path().join("runner.sock");
    let marker = format!("4{}.5", std::process::id());
    rt.block_on(async {
        let (stop_tx, server, mut client) = serve(host, zygote, &socket).await;
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        // A child that would outlive a plain kill of the shell.
        let req = run_request(
            &root,
            &scratch,
            &tmp.path().join("out"),
            &format!("sleep {marker} & sleep {marker}"),
        );
        // Boxed, so that `drop` below really drops the call.
        let mut call = Box::pin(client.run(req));
        let started = Instant::now();
        // Keep the call open until the command runs, then drop it.
        loop {
            tokio::select! {
                ended = &mut call => panic!("the run ended on its own: {ended:?}"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if !processes_with(&format!("sleep {marker}")).is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the command never started"
            );
        }
        drop(call);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_with(&format!("sleep {marker}"));
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after the call was dropped: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}

/// Runs `count` requests one after the other on a runner keeping `warm`
/// containers made ahead (and allowing the host network): each ends as its
/// script says and sees the hostname it asked for, the network ones in the
/// host's network namespace, the others in one holding only `lo`.
fn run_in_turn(warm: usize, count: usize) {
    let config: RunnerConfig =
        toml::from_str(&format!("warm_sandboxes = {warm}\nallow_network = true")).unwrap();
    let Started {
        tmp,
        root,
        host,
        zygote,
        rt,
    } = start(&config);
    assert_eq!(host.warm_sandboxes, warm);
    let socket = tmp.path().join("runner.sock");
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .count();
    rt.block_on(async {
        let (stop_tx, server, mut client) = serve(host, zygote, &socket).await;
        for i in 0..count {
            let scratch = tmp.path().join(format!("scratch{i}"));
            std::fs::create_dir(&scratch).unwrap();
            let out = tmp.path().join(format!("out{i}"));
            let mut req = run_request(
                &root,
                &scratch,
                &out,
                &format!("hostname; wc -l < /proc/net/dev; exit {i}"),
            );
            req.hostname = format!("run{i}");
            req.network = i % 3 == 2;
            let resp = client.run(req).await.unwrap().into_inner();
            assert_eq!(resp.exit_code, i as i32);
            let lines = std::fs::read_to_string(&out).unwrap();
            let ifaces: usize = lines.lines().nth(1).unwrap().trim().parse().unwrap();
            assert_eq!(lines.lines().next(), Some(format!("run{i}").as_str()));
            if i % 3 == 2 {
                assert_eq!(ifaces, host_ifaces, "host network expected: {lines}");
            } else {
                // Two header lines and lo.
                assert_eq!(ifaces, 3, "private network expected: {lines}");
            }
        }
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}

/// More requests than containers made ahead: each gets a fresh one (the
/// zygote replaces every container it hands out), and those that need the
/// host network, which no waiting container has, get one made for them.
#[test]
fn warm_containers_are_replaced_and_network_runs_get_their_own() {
    run_in_turn(2, 7);
}

/// Without containers made ahead, every request makes its own.
#[test]
fn without_warm_containers_each_request_makes_one() {
    run_in_turn(0, 3);
}

/// The overlay is volatile (no sync of the scratch directory's file system
/// at its unmount), and a scratch directory a run has used serves another:
/// the marker a volatile mount leaves in the work directory, which would
/// make the next mount fail, is cleared before it.
#[test]
fn a_used_scratch_directory_is_mounted_again() {
    let Started {
        tmp,
        root,
        host,
        zygote,
        rt,
    } = start(&RunnerConfig::default());
    let socket = tmp.path().join("runner.sock");
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    rt.block_on(async {
        let (stop_tx, server, mut client) = serve(host, zygote, &socket).await;
        let first = tmp.path().join("first");
        let req = run_request(
            &root,
            &scratch,
            &first,
            "grep ' / ' /proc/mounts; echo 1 > /a",
        );
        let resp = client.run(req).await.unwrap().into_inner();
        assert_eq!(resp.exit_code, 0);
        let mounts = std::fs::read_to_string(&first).unwrap();
        assert!(mounts.contains("volatile"), "{mounts}");
        assert!(scratch.join("work/work/incompat/volatile").is_dir());

        let second = tmp.path().join("second");
        let req = run_request(&root, &scratch, &second, "cat /a; echo 2 > /b");
        let resp = client.run(req).await.unwrap().into_inner();
        assert_eq!(
            (resp.exit_code, std::fs::read_to_string(&second).unwrap()),
            (0, "1\n".to_string())
        );
        assert_eq!(
            std::fs::read_to_string(scratch.join("upper/b")).unwrap(),
            "2\n"
        );
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}

/// A scratch directory and an input root on a file system mounted below
/// the host's `/` (here the tmpfs of `/dev/shm`, as `/tmp` is on many
/// distributions): overlayfs refuses layers on a mount below the top of
/// the init's copy of the host unless each is cloned on its own first.
#[test]
fn layers_on_a_file_system_below_the_root_are_mounted() {
    let Started {
        tmp,
        host,
        zygote,
        rt,
        ..
    } = start(&RunnerConfig::default());
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let root = shm.path().join("root");
    common::busybox_root(&root);
    let scratch = shm.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let on_root_fs = std::fs::metadata(tmp.path()).unwrap();
    let on_shm = std::fs::metadata(shm.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(on_root_fs.dev(), on_shm.dev(), "/dev/shm is not a mount");
    let socket = tmp.path().join("runner.sock");
    rt.block_on(async {
        let (stop_tx, server, mut client) = serve(host, zygote, &socket).await;
        for run in 0..2 {
            let out = tmp.path().join(format!("out{run}"));
            let script = format!("echo {run} > /written; cat /written; ls /bin/busybox");
            let req = run_request(&root, &scratch, &out, &script);
            let resp = client.run(req).await.unwrap().into_inner();
            assert_eq!(
                (resp.exit_code, std::fs::read_to_string(&out).unwrap()),
                (0, format!("{run}\n/bin/busybox\n")),
                "{resp:?}"
            );
            assert_eq!(
                std::fs::read_to_string(scratch.join("upper/written")).unwrap(),
                format!("{run}\n")
            );
        }
        assert!(!root.join("written").exists());
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}
