//! The `[http] listen` listener under an authentication policy: it is
//! served like the gRPC port, so it asks the same credentials and puts
//! pages and admin actions to the same permissions. Health probes need
//! none; `/metrics` and the pages need a valid token (a browser or a
//! scraper without one gets 401 with the reason); an admin action needs
//! the `admin` permission, with the same answer on both ports. Off
//! loopback, without TLS, the listener refuses to start.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod observability_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use corral_integration::tokens::token_entry;
use observability_support::{first_line, http_with};

const USER: &str = "ci-user-token-0123456789abcdef";
const ADMIN: &str = "ops-admin-token-0123456789abcdef";

/// A server config with a policy, static tokens, and `[http] listen`.
fn config(dir: &Path, http_listen: &str) -> std::path::PathBuf {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        token_entry("ci", "ci/user", USER) + &token_entry("ops", "ops/admin", ADMIN),
    )
    .unwrap();
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[http]
listen = "{http_listen}"
[auth.authentication.static_tokens]
file = "{}"
[auth.policy.tenants.team-a]
instances = ["team-a"]
[[auth.policy.grants]]
principals = ["ci/*"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "execute", "operations.read"]
[[auth.policy.grants]]
principals = ["ops/*"]
tenant = "*"
permissions = ["admin", "operations.read", "operations.cancel"]
[[auth.policy.workers]]
principals = ["uid:*"]
"#,
            tokens.display()
        ),
    )
    .unwrap();
    path
}

fn server(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args([
        "--log-format",
        "json",
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data",
    ])
    .arg(dir.join("data"))
    .arg("--config")
    .arg(config);
    cmd
}

/// Starts the server; its gRPC and `[http] listen` addresses.
fn start(dir: &Path) -> (Child, SocketAddr, SocketAddr) {
    let config = config(dir, "127.0.0.1:0");
    let mut child = server(dir, &config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http_addr: SocketAddr = first_line(child.stderr.take().unwrap(), |line| {
        let (_, rest) = line.split_once("\"bound\":\"")?;
        rest.split('"').next()?.parse().ok()
    });
    let grpc_addr: SocketAddr = first_line(child.stdout.take().unwrap(), |line| {
        line.strip_prefix("corral server listening on http://")?
            .parse()
            .ok()
    });
    (child, grpc_addr, http_addr)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn the_http_listener_asks_what_the_grpc_port_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, grpc, listener) = start(dir.path());
    let user = bearer(USER);
    let admin = bearer(ADMIN);
    let get = |addr, path, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        http_with(addr, "GET", path, None, &headers)
    };

    // Probes need no credentials.
    assert_eq!(get(listener, "/healthz", None), (200, "ok\n".to_string()));
    assert_eq!(get(listener, "/readyz", None).0, 200);

    for addr in [listener, grpc] {
        // Without a token, or with a wrong one: 401 and why, no data.
        let (status, body) = get(addr, "/metrics", None);
        assert_eq!(status, 401, "{addr}: {body}");
        assert!(!body.contains("corral_"), "{body}");
        let (status, body) = get(
            addr,
            "/metrics",
            Some("Bearer wrong-token-0123456789abcdef"),
        );
        assert_eq!(status, 401, "{body}");
        assert_eq!(get(addr, "/", None).0, 401);
        // With a token: the metrics and the farm page.
        let (status, body) = get(addr, "/metrics", Some(&user));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("corral_scheduler_queue_length"), "{body}");
        let (status, body) = get(addr, "/", Some(&admin));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("Workers"), "{body}");

        // Admin actions: none without a token, refused without `admin`,
        // and only asked (not done) with it.
        let form = Some("target=some-worker");
        let post = |token: Option<&str>| {
            let headers: Vec<(&str, &str)> =
                token.map(|t| ("Authorization", t)).into_iter().collect();
            http_with(addr, "POST", "/admin/drain", form, &headers)
        };
        assert_eq!(post(None).0, 401);
        let (status, body) = post(Some(&user));
        assert_eq!(status, 403, "{addr}: {body}");
        assert!(body.contains("admin"), "{body}");
        let (status, body) = post(Some(&admin));
        assert_eq!(status, 200, "{addr}: {body}");
        assert!(body.contains("Nothing has been done yet"), "{body}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn off_loopback_without_tls_the_listener_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "0.0.0.0:0");
    let out = server(dir.path(), &config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[http] listen") && stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("[tls]"), "{stderr}");
}
