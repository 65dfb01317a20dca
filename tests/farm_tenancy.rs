//! Attempts to break the farm's separation of clients and workers, against
//! a real `corral server` process: the worker protocol is not reachable on
//! the client port, and the workers' socket is closed to other users.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use corral_integration::server::CorralServer;
use corral_proto::reapi;
use corral_proto::tonic::Code;
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;

use corral_integration::block_on;

fn hello(name: &str) -> wire::WorkerMessage {
    wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Hello(wire::Hello {
            name: name.into(),
            slots: 1,
            platform: Some(reapi::Platform::default()),
            ..Default::default()
        })),
    }
}

/// A build client that says hello as a worker on the client port is
/// refused: the worker protocol is not served there.
#[test]
fn a_client_cannot_register_as_a_worker_on_the_client_port() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start().unwrap();
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let refused = WorkerServiceClient::new(channel)
            .session(tokio_stream::iter(vec![hello("impostor")]))
            .await
            .expect_err("the worker protocol on the client port");
        assert_eq!(refused.code(), Code::Unimplemented, "{refused:?}");
    });
}

/// The workers' socket answers a worker, and it and its directory are
/// open to the server's user only.
#[test]
fn the_workers_socket_serves_workers_and_only_its_owner_may_connect() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start().unwrap();
    let url = server.worker_url();
    let path = url.strip_prefix("unix:").unwrap();
    let socket_mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(socket_mode & 0o777, 0o600, "socket {path}");
    let dir = std::path::Path::new(path).parent().unwrap();
    let dir_mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "directory {}", dir.display());
    // Another user on the machine cannot even open the socket.
    let other = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg(format!(
            "import socket; socket.socket(socket.AF_UNIX).connect({path:?})"
        ))
        .output()
        .expect("setpriv and python3 (util-linux, python3) are installed");
    assert!(!other.status.success(), "another user connected to {path}");
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    block_on(async {
        let channel = corral_cas::channel::connect(&url).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(hello("w1")).await.unwrap();
        let mut inbound = WorkerServiceClient::new(channel)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("a worker session on the workers' socket")
            .into_inner();
        let welcome = inbound.message().await.unwrap().expect("a welcome");
        assert!(
            matches!(
                welcome.kind,
                Some(wire::scheduler_message::Kind::Welcome(_))
            ),
            "{welcome:?}"
        );
    });
}
