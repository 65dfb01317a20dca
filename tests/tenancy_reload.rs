//! What a SIGHUP does to a real `corral server` with a policy file: a
//! worker the reloaded policy no longer lists is cut off at once (not at
//! its next message) and cannot register again, audited as revoked; and
//! the audit log is opened again, so that a rotated file is not written
//! to any more.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use corral_integration::server::{CorralServer, ServerOptions};
use corral_integration::tokens::token_entry;
use corral_proto::reapi;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::tonic::{self, Code};
use corral_proto::worker::v1 as wire;
use corral_proto::worker::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const TOKEN: &str = "token-of-alice-0123456789abcdef";

use corral_integration::block_on;

/// The policy file: tenant `team-a` for alice, and workers whose
/// principals match `workers` (the test's own uid connects as `uid:N`).
fn policy(workers: &str) -> String {
    format!(
        r#"
[tenants.team-a]
instances = ["team-a"]

[[grants]]
principals = ["alice"]
tenant = "team-a"
permissions = ["cas.read"]

[[workers]]
principals = ["{workers}"]
"#
    )
}

fn start(dir: &Path) -> CorralServer {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, token_entry("a", "alice", TOKEN)).unwrap();
    std::fs::write(dir.join("policy.toml"), policy("uid:*")).unwrap();
    let config = format!(
        r#"
[auth]
policy_file = "{policy}"
[auth.authentication.static_tokens]
file = "{tokens}"
"#,
        policy = dir.join("policy.toml").display(),
        tokens = tokens.display()
    );
    CorralServer::start_with(ServerOptions {
        config_toml: Some(config),
        ..ServerOptions::default()
    })
    .unwrap()
}

fn hangup(server: &CorralServer) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

fn audit(path: &Path, event: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .map(str::to_string)
        .collect()
}

/// Waits up to 10 s for `cond`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A worker session on the workers' socket: the sender keeps the stream
/// open; the receiver yields what the scheduler sends.
async fn session(
    url: &str,
) -> Result<
    (
        mpsc::Sender<wire::WorkerMessage>,
        tonic::Streaming<wire::SchedulerMessage>,
    ),
    tonic::Status,
> {
    let channel = corral_cas::channel::connect(url).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(wire::WorkerMessage {
        kind: Some(wire::worker_message::Kind::Hello(wire::Hello {
            name: "w1".into(),
            slots: 1,
            platform: Some(reapi::Platform::default()),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let inbound = WorkerServiceClient::new(channel)
        .session(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

#[test]
fn a_worker_revoked_by_a_policy_reload_is_cut_off_and_audited() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let log = server.data_dir().join("audit.log");
    block_on(async {
        let (_keep_open, mut inbound) = session(&server.worker_url()).await.unwrap();
        eventually("the registration", || {
            !audit(&log, "worker_registered").is_empty()
        })
        .await;

        // The reloaded policy lists workers of another uid only. The
        // worker sends nothing; the scheduler must close its stream.
        std::fs::write(dir.path().join("policy.toml"), policy("uid:4242424")).unwrap();
        hangup(&server);
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    _ => return,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the revoked worker's stream stayed open");
        eventually("the revocation's audit line", || {
            !audit(&log, "worker_revoked").is_empty()
        })
        .await;
        assert_eq!(audit(&log, "policy_reload").len(), 1);
        assert!(audit(&log, "policy_reload")[0].contains("loaded"));

        // And it cannot come back.
        let Err(refused) = session(&server.worker_url()).await else {
            panic!("a revoked worker registered again");
        };
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    });
}

#[test]
fn the_audit_log_is_reopened_on_sighup_after_rotation() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let log = server.data_dir().join("audit.log");
    let rotated = server.data_dir().join("audit.log.1");
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let cas = ContentAddressableStorageClient::new(channel);
        // alice may not write: one `denied` line each time.
        let denied = || {
            let data = b"not allowed".to_vec();
            let digest = corral_cas::Digest::of_bytes(corral_cas::DigestFunction::Sha256, &data);
            let mut request = tonic::Request::new(reapi::BatchUpdateBlobsRequest {
                instance_name: "team-a".into(),
                requests: vec![reapi::batch_update_blobs_request::Request {
                    digest: Some(digest.to_proto()),
                    data,
                    ..Default::default()
                }],
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            let mut cas = cas.clone();
            async move {
                let response = cas.batch_update_blobs(request).await.unwrap().into_inner();
                response.responses[0].status.as_ref().map(|s| s.code)
            }
        };
        assert_eq!(denied().await, Some(Code::PermissionDenied as i32));
        assert_eq!(audit(&log, "denied").len(), 1);

        // logrotate moves the file away and signals the server.
        std::fs::rename(&log, &rotated).unwrap();
        hangup(&server);
        eventually("the reload after SIGHUP", || {
            !audit(&log, "policy_reload").is_empty()
        })
        .await;
        assert_eq!(denied().await, Some(Code::PermissionDenied as i32));
        assert_eq!(audit(&log, "denied").len(), 1, "the new file");
        assert_eq!(audit(&rotated, "denied").len(), 1, "the rotated file");
    });
}
