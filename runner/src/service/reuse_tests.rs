//! Containers that serve several runs (`runs_per_container`): what one run
//! leaves behind never reaches the next, each run's usage is its own, and
//! a container ends after its last run or after a run that hit a limit.

use std::path::PathBuf;

use super::tests::{run_request, serve};
use crate::testkit as common;
use crate::zygote::Zygote;
use crate::{Host, RunnerConfig};
use corral_proto::runner::v1 as pb;

/// What a run prints of its container: its PID namespace and when that
/// namespace's PID 1 started (field 22 of its `stat`), as `container …`.
/// (A namespace's inode number alone may be given again to a new one once
/// the old is gone.)
const PRINT_CONTAINER: &str =
    "echo container $(readlink /proc/self/ns/pid) $(cut -d' ' -f22 /proc/1/stat)";

/// A runner keeping one container made ahead, serving `runs` runs each,
/// driven by `f` through a client; `f` gets a function making numbered
/// requests (script → request with its own scratch and stdout).
fn with_runner<F, Fut>(runs: usize, f: F)
where
    F: FnOnce(Box<dyn Fn(&str) -> (pb::RunRequest, PathBuf)>, RunnerClient) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::busybox_root(&root);
    // A file no one may execute.
    std::fs::write(root.join("bin/not-executable"), "#!/bin/sh\n").unwrap();
    let config: RunnerConfig =
        toml::from_str(&format!("warm_sandboxes = 1\nruns_per_container = {runs}")).unwrap();
    let host = Host::probe(&config).unwrap();
    // SAFETY: not guaranteed under libtest's threaded harness (other test
    // threads may exist at the fork); the tests accept that risk: the child
    // only runs the sandbox, and nextest runs each test in its own process.
    let zygote = unsafe { Zygote::spawn(host.clone()) }.unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let socket = tmp.path().join("runner.sock");
    let base = tmp.path().to_path_buf();
    let counter = std::cell::Cell::new(0);
    let make = move |script: &str| {
        let i = counter.get();
        counter.set(i + 1);
        let scratch = base.join(format!("scratch{i}"));
        std::fs::create_dir(&scratch).unwrap();
        let out = base.join(format!("out{i}"));
        (run_request(&root, &scratch, &out, script), out)
    };
    rt.block_on(async {
        let (stop_tx, server, client) = serve(host, zygote, &socket).await;
        f(Box::new(make), client).await;
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    });
}

type RunnerClient = pb::runner_client::RunnerClient<tonic::transport::Channel>;

/// Runs `req` and returns its response and stdout.
async fn run(
    client: &mut RunnerClient,
    (req, out): (pb::RunRequest, PathBuf),
) -> (pb::RunResponse, String) {
    let resp = client.run(req).await.unwrap().into_inner();
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    (resp, stdout)
}

/// The container a run printed.
fn container(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("container "))
        .unwrap_or_else(|| panic!("no container in {stdout:?}"))
}

/// A request running `python3 -c code` on the host's system directories
/// (Debian's python3 is required), made with `make`.
fn host_python(
    make: &dyn Fn(&str) -> (pb::RunRequest, PathBuf),
    code: &str,
) -> (pb::RunRequest, PathBuf) {
    assert!(
        std::path::Path::new("/usr/bin/python3").exists(),
        "missing /usr/bin/python3 (Debian python3)"
    );
    let (mut req, out) = make("unused");
    req.rootfs = Some(pb::run_request::Rootfs::Host(pb::HostRoot {}));
    req.arguments = vec!["python3".into(), "-c".into(), code.into()];
    req.environment[0].value = "/usr/bin:/bin".into();
    (req, out)
}

/// One run leaves files in `/tmp`, `/dev/shm` and `/dev`, a process
/// running and its hostname; the next run of the same container finds
/// none of them.
#[test]
fn the_next_run_of_a_container_finds_nothing_of_the_last() {
    with_runner(10, |make, mut client| async move {
        let leave = format!(
            "{PRINT_CONTAINER}; echo x > /tmp/leftover; echo x > /dev/shm/leftover; \
             echo x > /dev/leftover; (sleep 1000 >/dev/null 2>&1 &); hostname"
        );
        let mut req = make(&leave);
        req.0.hostname = "first".into();
        let (first, out1) = run(&mut client, req).await;
        assert_eq!(first.exit_code, 0, "{out1}");
        assert!(out1.contains("first"), "{out1}");
        let look = format!("{PRINT_CONTAINER}; ls -a /tmp /dev/shm /dev; ps -o comm; hostname");
        let (second, out2) = run(&mut client, make(&look)).await;
        assert_eq!(second.exit_code, 0, "{out2}");
        assert_eq!(
            container(&out1),
            container(&out2),
            "the second run was not served by the same container"
        );
        assert!(out2.contains("urandom"), "no /dev listed: {out2}");
        assert!(
            !out2.contains("leftover"),
            "a file of the first run: {out2}"
        );
        assert!(
            !out2.contains("sleep"),
            "a process of the first run: {out2}"
        );
        assert!(!out2.contains("first"), "the first run's hostname: {out2}");
    });
}

/// Each run's CPU time and peak memory are its own, though the runs share
/// their container's cgroup.
#[test]
fn each_run_of_a_container_reports_its_own_usage() {
    with_runner(10, |make, mut client| async move {
        let hog = format!(
            "{PRINT_CONTAINER}; dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null; \
             i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
        );
        let (big, out1) = run(&mut client, make(&hog)).await;
        let (small, out2) = run(&mut client, make(PRINT_CONTAINER)).await;
        assert_eq!((big.exit_code, small.exit_code), (0, 0));
        assert_eq!(container(&out1), container(&out2));
        assert!(
            big.peak_memory_bytes > 96 << 20,
            "the hog's peak: {}",
            big.peak_memory_bytes
        );
        assert!(
            small.peak_memory_bytes < 32 << 20,
            "the next run's peak counts the hog's: {}",
            small.peak_memory_bytes
        );
        let cpu = |r: &pb::RunResponse| r.user_cpu_us + r.system_cpu_us;
        assert!(cpu(&big) > 100_000, "the hog's CPU: {} µs", cpu(&big));
        assert!(
            cpu(&small) < cpu(&big) / 4,
            "the next run's CPU counts the hog's: {} µs against {} µs",
            cpu(&small),
            cpu(&big)
        );
    });
}

/// A container serves at most `runs_per_container` runs, and none after a
/// run that timed out.
#[test]
fn a_container_ends_after_its_last_run_and_after_a_timeout() {
    with_runner(2, |make, mut client| async move {
        let (_, a) = run(&mut client, make(PRINT_CONTAINER)).await;
        let (_, b) = run(&mut client, make(PRINT_CONTAINER)).await;
        let (_, c) = run(&mut client, make(PRINT_CONTAINER)).await;
        assert_eq!(container(&a), container(&b));
        assert_ne!(container(&b), container(&c), "a third run");
        let mut slow = make(&format!("{PRINT_CONTAINER}; sleep 30"));
        slow.0.limits = Some(pb::Limits {
            timeout_ms: 500,
            ..Default::default()
        });
        let (timed_out, d) = run(&mut client, slow).await;
        assert!(timed_out.timed_out);
        assert_eq!(container(&c), container(&d));
        let (_, e) = run(&mut client, make(PRINT_CONTAINER)).await;
        assert_ne!(
            container(&d),
            container(&e),
            "a container served again after a timeout"
        );
    });
}

/// PID 1 of a serving container keeps the capabilities it makes each
/// run's namespaces with; a run can neither reach into it (its root, its
/// descriptors, its environment, its memory) nor stop it, and the next run
/// is served as before.
#[test]
fn a_run_cannot_reach_or_stop_the_containers_pid_1() {
    with_runner(10, |make, mut client| async move {
        let attack = format!(
            "{PRINT_CONTAINER}; \
             for f in root/ cwd/ fd/ environ mem maps; do \
               if ls /proc/1/$f >/dev/null 2>&1 && cat /proc/1/$f >/dev/null 2>&1; then \
                 echo REACHED $f; fi; done; \
             for sig in TERM INT HUP USR1 KILL STOP; do kill -$sig 1 2>/dev/null; done; \
             ls /proc/self/root/ >/dev/null && cat /proc/self/environ >/dev/null && echo OWN; \
             grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; echo done"
        );
        let (resp, out1) = run(&mut client, make(&attack)).await;
        assert_eq!(resp.exit_code, 0, "{out1}");
        assert!(out1.contains("done"), "{out1}");
        assert!(!out1.contains("REACHED"), "PID 1 reached: {out1}");
        // The same reads of its own process work.
        assert!(out1.contains("OWN"), "{out1}");
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert!(
                out1.contains(&format!("{set}:\t0000000000000000")),
                "{set} not empty: {out1}"
            );
        }
        let (next, out2) = run(&mut client, make(PRINT_CONTAINER)).await;
        assert_eq!(next.exit_code, 0);
        assert_eq!(container(&out1), container(&out2), "PID 1 was stopped");
    });
}

/// A command that cannot be executed (a file without execute permission)
/// ends as a shell says (127, the reason on its stderr), and the container
/// serves the next run.
#[test]
fn an_unexecutable_command_is_127_and_the_container_goes_on() {
    with_runner(10, |make, mut client| async move {
        let (_, before) = run(&mut client, make(PRINT_CONTAINER)).await;
        let (mut req, _) = make("unused");
        req.arguments = vec!["/bin/not-executable".into()];
        let err = std::path::Path::new(&req.stdout_path).with_extension("err");
        req.stderr_path = err.display().to_string();
        let resp = client.run(req).await.unwrap().into_inner();
        assert_eq!(resp.exit_code, 127);
        let stderr = std::fs::read_to_string(&err).unwrap();
        assert!(stderr.contains("cannot execute"), "{stderr}");
        let (_, after) = run(&mut client, make(PRINT_CONTAINER)).await;
        assert_eq!(container(&before), container(&after));
    });
}

/// What a run can leave in kernel objects that outlive its processes: a
/// System V shared memory segment (kept by its IPC namespace) and a TCP
/// connection in TIME_WAIT (kept by its network namespace). The next run
/// of the same container sees neither.
#[test]
fn the_next_run_finds_no_ipc_object_or_socket_of_the_last() {
    with_runner(10, |make, mut client| async move {
        let python = |code: &str| host_python(&*make, code);
        let leave = "import ctypes, os, socket\n\
            libc = ctypes.CDLL(None, use_errno=True)\n\
            print('shm', libc.shmget(0x5eed, 4096, 0o1600))\n\
            srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n\
            cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()\n\
            cli.close(); conn.close(); srv.close()\n\
            print('tcp', len(open('/proc/net/tcp').read().splitlines()) - 1)\n\
            print('pidns', os.readlink('/proc/self/ns/pid'), open('/proc/1/stat').read().split()[21])\n";
        let (first, out1) = run(&mut client, python(leave)).await;
        assert_eq!(first.exit_code, 0, "{out1}");
        assert!(!out1.contains("shm -1"), "no segment made: {out1}");
        assert!(!out1.contains("tcp 0"), "no TIME_WAIT left: {out1}");
        let look = "import ctypes, os\n\
            libc = ctypes.CDLL(None, use_errno=True)\n\
            print('shm', libc.shmget(0x5eed, 0, 0))\n\
            print('tcp', len(open('/proc/net/tcp').read().splitlines()) - 1)\n\
            print('pidns', os.readlink('/proc/self/ns/pid'), open('/proc/1/stat').read().split()[21])\n";
        let (second, out2) = run(&mut client, python(look)).await;
        assert_eq!(second.exit_code, 0, "{out2}");
        let pidns = |out: &str| {
            out.lines()
                .find(|l| l.starts_with("pidns"))
                .map(str::to_string)
        };
        assert_eq!(pidns(&out1), pidns(&out2), "not the same container");
        assert!(out2.contains("shm -1"), "the first run's segment: {out2}");
        assert!(out2.contains("tcp 0"), "the first run's socket: {out2}");
    });
}

/// A run's network namespace goes to the next run of its container only
/// if the run left no trace in it: a run that sent a datagram, or only
/// looked up a route it lacked, leaves the next run a new namespace whose
/// counters read as new; a run that did neither hands its own on.
#[test]
fn a_network_namespace_is_handed_on_only_unused() {
    with_runner(20, |make, mut client| async move {
        let print = "import os, socket\n\
            print('net', os.readlink('/proc/self/ns/net'))\n\
            print('counters', repr(open('/proc/net/snmp').read() + open('/proc/net/dev').read()))\n";
        let python = |code: &str| host_python(&*make, &format!("{print}{code}"));
        let field = |out: &str, name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        let mut outs = Vec::new();
        let datagram = "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
            s.sendto(b'x', ('127.0.0.1', 9))\n";
        let no_route = "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
            try: s.sendto(b'x', ('192.0.2.1', 9))\n\
            except OSError as e: print('unreachable', e.errno)\n";
        for code in ["pass", "pass", datagram, "pass", no_route, "pass"] {
            let (resp, out) = run(&mut client, python(code)).await;
            assert_eq!(resp.exit_code, 0, "{out}");
            outs.push(out);
        }
        let net: Vec<String> = outs.iter().map(|o| field(o, "net ")).collect();
        let counters: Vec<String> = outs.iter().map(|o| field(o, "counters ")).collect();
        assert_eq!(net[0], net[1], "an unused namespace was not handed on");
        assert_eq!(net[1], net[2], "an unused namespace was not handed on");
        assert_ne!(
            net[2], net[3],
            "a namespace that carried a datagram was handed on"
        );
        assert!(outs[4].contains("unreachable"), "{}", outs[4]);
        assert_ne!(
            net[4], net[5],
            "a namespace that looked up a route was handed on"
        );
        for later in [1, 2, 3, 5] {
            assert_eq!(
                counters[later], counters[0],
                "run {later} saw another run's counters"
            );
        }
    });
}

#[test]
fn runs_per_container_of_zero_is_refused() {
    let config: RunnerConfig = toml::from_str("runs_per_container = 0").unwrap();
    let err = Host::probe(&config).unwrap_err().to_string();
    assert!(err.contains("runs_per_container"), "{err}");
}
