//! Workers on other machines: a real `corral server` whose workers' listener
//! is TCP on every address with TLS and client certificates required, a
//! real `corral worker` that proves who it is with its certificate, and a
//! client on the TLS client port with a token. An action runs end to end;
//! a worker without a certificate, with one from another CA, or with one
//! the workers' CRL revokes, never gets past the handshake; the bench
//! tools reach the farm with the same flags; `corral runner exec --action
//! --remote https://…` reproduces the action with a CA and a token, and
//! says UNAUTHENTICATED plainly without a valid one. Certificates are made
//! here with rcgen.
//!
//! Runs as root (as CI does), with Debian's busybox-static installed.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_cas::client_options::TlsClientConfig;
use corral_cas::{ClientOptions, Connector};
use corral_integration::certs::{CertFiles, TestCa};
use corral_integration::process::output_within;
use corral_integration::remote::{command, BusyboxRoot, RemoteExec};
use corral_integration::server::{corral_binary, CorralServer, ServerOptions};
use corral_integration::tokens::token_entry;
use corral_proto::reapi;
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;

const TOKEN: &str = "token-of-alice-0123456789abcdef";
const INSTANCE: &str = "team-a";
/// Longest a `corral runner exec` may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The certificates and files of one test.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    server: CertFiles,
    worker: CertFiles,
    /// A certificate for the same name from a CA the farm does not trust.
    rogue: CertFiles,
    /// A certificate of the farm's CA for `worker-2`, which the policy
    /// lists but the CRL revokes.
    revoked: CertFiles,
    /// The CRL of the workers' listener.
    crl: PathBuf,
    token: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    // The sandbox's user must reach the workers' data directories below.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ca = TestCa::new(&dir.path().join("farm"), "farm-ca").unwrap();
    let rogue_ca = TestCa::new(&dir.path().join("rogue"), "rogue-ca").unwrap();
    let token = dir.path().join("alice.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let revoked = ca.client("worker-2").unwrap();
    Pki {
        server: ca.server("corral-server").unwrap(),
        worker: ca.client("worker-1").unwrap(),
        rogue: rogue_ca.client("worker-1").unwrap(),
        crl: ca.crl("workers", &[&revoked]).unwrap(),
        revoked,
        ca,
        token,
        dir,
    }
}

/// A port free on every address right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A farm with TLS on the client port, a policy (alice owns `team-a`,
/// with a static token) and workers on TCP on every address, named by
/// their certificates: only `worker-1` may serve.
fn start_server(pki: &Pki, workers_port: u16) -> CorralServer {
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, token_entry("alice", "alice", TOKEN)).unwrap();
    let config = format!(
        r#"
[tls]
cert = "{cert}"
key = "{key}"

[workers]
listen = "0.0.0.0:{workers_port}"
[workers.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
crl = ["{crl}"]

[auth.authentication.static_tokens]
file = "{tokens}"

[auth.policy.tenants.team-a]
instances = ["team-a"]

[[auth.policy.grants]]
principals = ["alice"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "execute", "operations.read"]

[[auth.policy.workers]]
principals = ["worker-1", "worker-2"]
"#,
        cert = pki.server.cert.display(),
        key = pki.server.key.display(),
        ca = pki.ca.cert.display(),
        crl = pki.crl.display(),
        tokens = tokens.display(),
    );
    CorralServer::start_with(ServerOptions {
        config_toml: Some(config),
        ..ServerOptions::default()
    })
    .unwrap()
}

/// `corral worker` against `scheduler` with `tls_args`; killed on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(scheduler: &str, data: &Path, name: &str, tls_args: &[&Path]) -> WorkerProcess {
        let mut cmd = Command::new(corral_binary().unwrap());
        cmd.args(["worker", "--scheduler", scheduler, "--slots", "1"])
            .args(["--name", name])
            .arg("--data")
            .arg(data);
        for (flag, path) in ["--tls-ca", "--tls-cert", "--tls-key"].iter().zip(tls_args) {
            cmd.arg(flag).arg(path);
        }
        WorkerProcess(cmd.stdin(Stdio::null()).spawn().unwrap())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn audit_lines(server: &CorralServer, event: &str, containing: &str) -> usize {
    let log = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")) && l.contains(containing))
        .count()
}

fn connector(ca: &Path, cert: Option<&CertFiles>, token: Option<&Path>) -> Connector {
    ClientOptions {
        tls: Some(TlsClientConfig {
            ca: Some(ca.to_path_buf()),
            cert: cert.map(|c| c.cert.clone()),
            key: cert.map(|c| c.key.clone()),
            ..TlsClientConfig::default()
        }),
        token_file: token.map(Path::to_path_buf),
    }
    .connector()
    .unwrap()
}

/// Says hello as worker `name` on the workers' listener with `connector`;
/// the error if the farm does not welcome it.
async fn register(connector: &Connector, url: &str, name: &str) -> Result<(), String> {
    let channel = connector.connect(url).await.map_err(|e| e.to_string())?;
    let hello = wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Hello(wire::Hello {
            name: name.into(),
            slots: 1,
            platform: Some(reapi::Platform::default()),
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(hello).await.unwrap();
    let mut inbound = WorkerServiceClient::new(channel)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{}: {}", s.code(), error_chain(&s)))?
        .into_inner();
    match inbound.message().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the stream ended".into()),
        Err(s) => Err(format!("{}: {}", s.code(), error_chain(&s))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Runs `corral ARGS` under a deadline.
fn corral(args: &[&str]) -> Output {
    let mut cmd = Command::new(corral_binary().unwrap());
    cmd.args(args).env_remove("RUST_LOG");
    output_within(&mut cmd, RUN_TIMEOUT).unwrap()
}

/// Uploads a busybox root with `applets`, runs `cmd` in it on the farm
/// (not cached when `do_not_cache`), and returns the action's digest,
/// the response and the command's stdout.
fn run_in_busybox(
    rt: &tokio::runtime::Runtime,
    client: &RemoteExec,
    applets: &[&str],
    cmd: reapi::Command,
    salt: &[u8],
    do_not_cache: bool,
) -> (corral_cas::Digest, reapi::ExecuteResponse, String) {
    let root = BusyboxRoot::with_applets(applets).unwrap();
    rt.block_on(client.upload(&root.blobs)).unwrap();
    let action = rt
        .block_on(client.upload_action(root.root, cmd, salt.to_vec(), do_not_cache, None))
        .unwrap();
    let response = rt.block_on(client.execute(action, true)).unwrap();
    let result = response.result.clone().expect("a result");
    let stdout = rt.block_on(client.stdout(&result)).unwrap();
    (action, response, stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `corral bench execute` and `corral bench cas`, a few rounds each,
/// against `url` with the CA and token flags.
fn bench_against(url: &str, ca: &str, token: &str) {
    use clap::Parser;
    use corral_integration::bench::{cas, execute};
    #[derive(Parser)]
    struct Execute {
        #[command(flatten)]
        args: execute::Args,
    }
    #[derive(Parser)]
    struct Cas {
        #[command(flatten)]
        args: cas::Args,
    }
    let target = format!("farm={url}");
    let tls = ["--tls-ca", ca, "--token-file", token];
    let mut argv = vec!["bench-execute", "--target", &target, "--instance", INSTANCE];
    argv.extend(["--runs", "2", "--warmup", "0"]);
    argv.extend(tls);
    let args = Execute::try_parse_from(argv).unwrap().args;
    let rows = execute::measure(&args).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].samples.len(), 2, "{rows:?}");
    let mut argv = vec!["bench-cas", "--target", url, "--instance", INSTANCE];
    argv.extend(["--find-missing-calls", "2", "--find-missing-digests", "10"]);
    argv.extend(["--small-blobs", "10", "--large-mib", "1", "--rounds", "1"]);
    argv.extend(tls);
    cas::run(Cas::try_parse_from(argv).unwrap().args).unwrap();
    // Without the token the same run is refused.
    let argv = vec![
        "bench-cas",
        "--target",
        url,
        "--instance",
        INSTANCE,
        "--tls-ca",
        ca,
    ];
    let e = cas::run(Cas::try_parse_from(argv).unwrap().args).unwrap_err();
    assert!(format!("{e:#}").contains("authentication"), "{e:#}");
}

#[test]
fn a_worker_with_a_client_certificate_runs_an_action_and_runner_exec_reproduces_it() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    let pki = pki();
    let port = free_port();
    let server = start_server(&pki, port);
    let workers_url = format!("https://127.0.0.1:{port}");
    let client_url = format!("https://127.0.0.1:{}", server.addr().port());
    let _worker = WorkerProcess::start(
        &workers_url,
        &pki.dir.path().join("worker-1"),
        "worker-1",
        &[&pki.ca.cert, &pki.worker.cert, &pki.worker.key],
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let alice = connector(&pki.ca.cert, None, Some(&pki.token));
    let client = rt
        .block_on(RemoteExec::connect_with(&client_url, INSTANCE, &alice))
        .unwrap();
    let (action, response, stdout) = run_in_busybox(
        &rt,
        &client,
        &["sh", "echo"],
        command(["sh", "-c", "echo ran over mTLS"], &[("PATH", "/bin")]),
        b"worker-tls",
        false,
    );
    let result = response.result.clone().expect("a result");
    assert_eq!(result.exit_code, 0, "{response:?}");
    assert_eq!(stdout, "ran over mTLS\n");
    let meta = result.execution_metadata.clone().unwrap();
    assert_eq!(meta.worker, "worker-1");
    // The farm knows the worker by its certificate, not by its hello.
    assert_eq!(audit_lines(&server, "worker_registered", "worker-1"), 1);

    // No certificate, or one from a CA the farm does not trust: the
    // handshake fails and nothing registers, whatever the hello says.
    let anonymous = connector(&pki.ca.cert, None, None);
    let e = rt
        .block_on(register(&anonymous, &workers_url, "impostor-1"))
        .unwrap_err();
    assert!(!e.is_empty());
    let rogue = connector(&pki.ca.cert, Some(&pki.rogue), None);
    let e = rt
        .block_on(register(&rogue, &workers_url, "impostor-2"))
        .unwrap_err();
    assert!(!e.is_empty());
    // A token of a person does not make a worker either.
    let e = rt
        .block_on(register(&alice, &workers_url, "impostor-3"))
        .unwrap_err();
    assert!(!e.is_empty());
    assert_eq!(audit_lines(&server, "worker_registered", "impostor"), 0);

    // The bench tools reach the protected farm with the same flags.
    let ca = pki.ca.cert.to_str().unwrap();
    let token = pki.token.to_str().unwrap();
    bench_against(&client_url, ca, token);

    // `corral runner exec` reproduces the action from the TLS port with
    // the CA and alice's token.
    let cache = pki.dir.path().join("exec-cache");
    let action = action.to_string();
    let exec = |extra: &[&str]| {
        let mut args = vec![
            "runner",
            "exec",
            "--action",
            &action,
            "--remote",
            &client_url,
            "--instance",
            INSTANCE,
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        corral(&args)
    };
    let out = exec(&["--tls-ca", ca, "--token-file", token]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran over mTLS\n");

    // A wrong token, and none: UNAUTHENTICATED, said plainly.
    let wrong = pki.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-0000000000000000\n").unwrap();
    let out = exec(&["--tls-ca", ca, "--token-file", wrong.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("--token-file"),
        "{stderr}"
    );
    let out = exec(&["--tls-ca", ca]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("UNAUTHENTICATED") && stderr.contains("give --token-file"),
        "{stderr}"
    );
    // A token file that is not there: the flag and the path are named.
    let out = exec(&["--tls-ca", ca, "--token-file", "/nonexistent/alice.token"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--token-file") && stderr.contains("/nonexistent/alice.token"),
        "{stderr}"
    );
    // Without the farm's CA the server's certificate is not trusted.
    let out = exec(&["--token-file", token]);
    assert!(!out.status.success());
    drop(rt);
    server.stop().unwrap();
}

#[test]
fn a_worker_with_a_bad_certificate_never_registers() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let pki = pki();
    let port = free_port();
    let server = start_server(&pki, port);
    let workers_url = format!("https://127.0.0.1:{port}");
    // A real worker with the rogue CA's certificate for the listed name,
    // and one with the farm's CA but no certificate: neither gets past
    // the handshake, so both keep retrying.
    let rogue = WorkerProcess::start(
        &workers_url,
        &pki.dir.path().join("rogue"),
        "worker-1",
        &[&pki.ca.cert, &pki.rogue.cert, &pki.rogue.key],
    );
    let bare = WorkerProcess::start(
        &workers_url,
        &pki.dir.path().join("bare"),
        "worker-bare",
        &[&pki.ca.cert],
    );
    // And one the policy lists, with a certificate of the farm's CA that
    // the CRL revokes.
    let revoked = WorkerProcess::start(
        &workers_url,
        &pki.dir.path().join("revoked"),
        "worker-2",
        &[&pki.ca.cert, &pki.revoked.cert, &pki.revoked.key],
    );
    // Long enough for several attempts of each (backoff starts at 100 ms).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(audit_lines(&server, "worker_registered", ""), 0);
    drop((rogue, bare, revoked));
    // The good certificate registers on the same listener.
    let good = WorkerProcess::start(
        &workers_url,
        &pki.dir.path().join("good"),
        "worker-1",
        &[&pki.ca.cert, &pki.worker.cert, &pki.worker.key],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while audit_lines(&server, "worker_registered", "worker-1") == 0 {
        assert!(Instant::now() < deadline, "worker-1 did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(good);
    server.stop().unwrap();
}

#[test]
fn a_worker_address_beyond_loopback_needs_client_certificates() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let pki = pki();
    let config = pki.dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[workers]\nlisten = \"0.0.0.0:0\"\n[workers.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.server.cert.display(),
            pki.server.key.display()
        ),
    )
    .unwrap();
    let data = pki.dir.path().join("data");
    let output = Command::new(corral_binary().unwrap())
        .args(["server", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("[workers.tls] client_ca"),
        "{stderr}"
    );
    // `corral worker` names a certificate flag whose file is not there.
    let output = Command::new(corral_binary().unwrap())
        .args(["worker", "--scheduler", "https://127.0.0.1:1", "--data"])
        .arg(pki.dir.path().join("w"))
        .args(["--tls-ca", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--tls-ca") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}

/// `corral up` with its own worker on a TCP workers' listener with client
/// certificates (`[workers.tls]`, `[worker.tls]`): the worker registers
/// with its certificate and runs an action.
#[test]
fn corral_up_with_its_worker_on_tcp_and_mtls_runs_an_action() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let pki = pki();
    let config = format!(
        r#"
[workers]
listen = "127.0.0.1:0"
[workers.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[worker.tls]
ca = "{ca}"
cert = "{worker_cert}"
key = "{worker_key}"
"#,
        cert = pki.server.cert.display(),
        key = pki.server.key.display(),
        ca = pki.ca.cert.display(),
        worker_cert = pki.worker.cert.display(),
        worker_key = pki.worker.key.display(),
    );
    let farm =
        corral_integration::farm::CorralFarm::start_with(corral_integration::farm::FarmOptions {
            config_toml: Some(config),
            ..Default::default()
        })
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(RemoteExec::connect(&farm.url(), "buildstream"))
        .unwrap();
    let (_, response, stdout) = run_in_busybox(
        &rt,
        &client,
        &["sh", "echo"],
        command(["sh", "-c", "echo up over mTLS"], &[("PATH", "/bin")]),
        b"up-worker-tls",
        true,
    );
    let result = response.result.clone().expect("a result");
    assert_eq!(result.exit_code, 0, "{response:?}");
    assert_eq!(stdout, "up over mTLS\n");
    let audit =
        std::fs::read_to_string(farm.data_dir().join("server/audit.log")).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"event\":\"worker_registered\"") && l.contains("worker-1")),
        "the worker registers under its certificate's name:\n{audit}"
    );
    drop(rt);
    let status = farm.stop().unwrap();
    assert!(status.success(), "corral up exit: {status}");
}

/// A directory under `/etc`, removed when dropped.
struct EtcDir(PathBuf);

impl Drop for EtcDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The worker keeps its key where operators do, under `/etc`, which a
/// host root binds into every action, and readable by anyone (a mistake
/// the farm must survive): its actions still cannot read it, while its
/// certificate beside it stays visible.
#[test]
fn an_action_cannot_read_the_workers_key() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    let pki = pki();
    let etc = EtcDir(PathBuf::from(format!(
        "/etc/corral-test-worker-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&etc.0).unwrap();
    let (cert, key) = (etc.0.join("worker.pem"), etc.0.join("worker.key"));
    std::fs::copy(&pki.worker.cert, &cert).unwrap();
    std::fs::copy(&pki.worker.key, &key).unwrap();
    for path in [&etc.0, &cert, &key] {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let port = free_port();
    let server = start_server(&pki, port);
    let _worker = WorkerProcess::start(
        &format!("https://127.0.0.1:{port}"),
        &pki.dir.path().join("worker-1"),
        "worker-1",
        &[&pki.ca.cert, &cert, &key],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alice = connector(&pki.ca.cert, None, Some(&pki.token));
    let client_url = format!("https://127.0.0.1:{}", server.addr().port());
    let client = rt
        .block_on(RemoteExec::connect_with(&client_url, INSTANCE, &alice))
        .unwrap();
    // Host root (the default for this instance): /etc is the host's.
    let script = format!(
        "cat {key} 2>&1; echo \"key=$?\"; grep -c CERTIFICATE {cert}",
        key = key.display(),
        cert = cert.display()
    );
    let (_, response, stdout) = run_in_busybox(
        &rt,
        &client,
        &["sh"],
        command(["/bin/sh", "-c", &script], &[("PATH", "/usr/bin:/bin")]),
        b"read-the-key",
        false,
    );
    let result = response.result.clone().expect("a result");
    assert!(!stdout.contains("PRIVATE KEY"), "the key leaked: {stdout}");
    assert!(stdout.contains("key=1"), "{stdout}");
    assert!(
        stdout.ends_with("2\n"),
        "the certificate was hidden: {stdout}"
    );
    assert_eq!(
        result.execution_metadata.map(|m| m.worker).as_deref(),
        Some("worker-1"),
        "the worker with that key ran it"
    );
    drop(rt);
    server.stop().unwrap();
}
