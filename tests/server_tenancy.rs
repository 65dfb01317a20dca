//! A real `corral server` with a two-tenant policy and static tokens,
//! attacked through real gRPC clients: no credential, a wrong one, another
//! tenant's instance, another tenant's blobs, results and operations, the
//! action cache without `ac.write`, a quota, and the refusal to listen
//! beyond loopback unprotected. Every denial leaves one audit line.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use corral_cas::{Digest, DigestFunction};
use corral_integration::server::{corral_binary, CorralServer, ServerOptions};
use corral_integration::tokens::token_entry as entry;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;
use corral_proto::reapi::capabilities_client::CapabilitiesClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use corral_proto::reapi::execution_client::ExecutionClient;
use corral_proto::tonic::{self, Code};

const F: DigestFunction = DigestFunction::Sha256;
const TOKEN_A: &str = "token-of-team-a-0123456789abcdef";
const TOKEN_B: &str = "token-of-team-b-0123456789abcdef";
const TOKEN_RO: &str = "token-read-only-0123456789abcdef";
const TOKEN_C: &str = "token-of-team-c-0123456789abcdef";

use corral_integration::block_on;

/// Two tenants; `a-ro` may only read team-a's cache; a tight rate on
/// team-b's CAS reads.
fn start(dir: &Path) -> CorralServer {
    let tokens = dir.join("tokens");
    let text = [
        entry("a", "alice", TOKEN_A),
        entry("b", "bob", TOKEN_B),
        entry("ro", "reader", TOKEN_RO),
        entry("c", "carol", TOKEN_C),
    ]
    .concat();
    std::fs::write(&tokens, text).unwrap();
    let config = format!(
        r#"
[auth.authentication.static_tokens]
file = "{tokens}"

[auth.policy.tenants.team-a]
instances = ["team-a"]
[auth.policy.tenants.team-a.quotas]
queued_operations = 1

[auth.policy.tenants.team-b]
instances = ["team-b"]
[auth.policy.tenants.team-b.quotas]
rate."cas.read" = {{ per_second = 0.01, burst = 3 }}

[auth.policy.tenants.team-c]
instances = ["team-c"]
[auth.policy.tenants.team-c.quotas]
cas_bytes = 1000

[[auth.policy.grants]]
principals = ["carol"]
tenant = "team-c"
permissions = ["cas.read", "cas.write"]

[[auth.policy.grants]]
principals = ["alice"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "ac.write", "execute", "operations.read"]

[[auth.policy.grants]]
principals = ["bob"]
tenant = "team-b"
permissions = ["cas.read", "cas.write", "ac.read", "ac.write", "execute", "operations.read"]

[[auth.policy.grants]]
principals = ["reader"]
tenant = "team-a"
permissions = ["cas.read", "ac.read"]

[[auth.policy.workers]]
principals = ["uid:*"]
"#,
        tokens = tokens.display()
    );
    CorralServer::start_with(ServerOptions {
        config_toml: Some(config),
        ..ServerOptions::default()
    })
    .unwrap()
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    request
}

fn find_missing(instance: &str, digest: &Digest) -> reapi::FindMissingBlobsRequest {
    reapi::FindMissingBlobsRequest {
        instance_name: instance.into(),
        blob_digests: vec![digest.to_proto()],
        digest_function: F.to_proto(),
    }
}

fn audit_lines(server: &CorralServer, event: &str) -> usize {
    let log = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .count()
}

#[test]
fn tenants_are_kept_apart_and_every_denial_is_audited() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        let secret = b"team a's secret source".to_vec();
        let d = Digest::of_bytes(F, &secret);

        // No credential, and a wrong one: UNAUTHENTICATED, audited.
        let e = cas
            .find_missing_blobs(with_token(find_missing("team-a", &d), None))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = cas
            .find_missing_blobs(with_token(
                find_missing("team-a", &d),
                Some("not-a-real-token-at-all-0000"),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(audit_lines(&server, "unauthenticated"), 2);

        // Team A uploads its secret.
        cas.batch_update_blobs(with_token(
            reapi::BatchUpdateBlobsRequest {
                instance_name: "team-a".into(),
                requests: vec![reapi::batch_update_blobs_request::Request {
                    digest: Some(d.to_proto()),
                    data: secret.clone(),
                    ..Default::default()
                }],
                digest_function: F.to_proto(),
            },
            Some(TOKEN_A),
        ))
        .await
        .unwrap();

        // Team A on team B's instance: PERMISSION_DENIED naming both.
        let e = cas
            .find_missing_blobs(with_token(find_missing("team-b", &d), Some(TOKEN_A)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("cas.read") && e.message().contains("team-b"),
            "{e:?}"
        );
        // `team-ab` is not team A's either.
        let e = cas
            .find_missing_blobs(with_token(find_missing("team-ab", &d), Some(TOKEN_A)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert_eq!(audit_lines(&server, "denied"), 2);
        // Each names who, where from and with which credential.
        let log = std::fs::read_to_string(server.data_dir().join("audit.log")).unwrap();
        for line in log.lines().filter(|l| l.contains("\"event\":\"denied\"")) {
            for field in [
                "\"principal\":",
                "\"peer\":\"127.0.0.1:",
                "\"credential_id\":",
            ] {
                assert!(line.contains(field), "{field} missing: {line}");
            }
        }

        // Team B, on its own instance, cannot learn that the blob exists.
        let missing = cas
            .find_missing_blobs(with_token(find_missing("team-b", &d), Some(TOKEN_B)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(missing.missing_blob_digests, vec![d.to_proto()]);
        // One batch of five blobs is one call against the rate (burst 3),
        // however many blobs it reads.
        let mut digests = vec![d.to_proto()];
        digests.extend((0..4u8).map(|i| Digest::of_bytes(F, &[i]).to_proto()));
        let read = cas
            .batch_read_blobs(with_token(
                reapi::BatchReadBlobsRequest {
                    instance_name: "team-b".into(),
                    digests,
                    digest_function: F.to_proto(),
                    ..Default::default()
                },
                Some(TOKEN_B),
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.responses.len(), 5);
        for r in &read.responses {
            assert_eq!(
                r.status.as_ref().map(|s| s.code),
                Some(Code::NotFound as i32),
                "{r:?}"
            );
        }

        // Team B's reads are rate-limited: the burst, then RESOURCE_EXHAUSTED.
        let mut exhausted = None;
        for _ in 0..5 {
            if let Err(e) = cas
                .find_missing_blobs(with_token(find_missing("team-b", &d), Some(TOKEN_B)))
                .await
            {
                exhausted = Some(e);
                break;
            }
        }
        let e = exhausted.expect("the rate quota must refuse a call");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("retry"), "{e:?}");
    });
}

#[test]
fn the_action_cache_needs_ac_write_and_capabilities_say_so() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let caps = |token| {
            let mut client = CapabilitiesClient::new(channel.clone());
            async move {
                client
                    .get_capabilities(with_token(
                        reapi::GetCapabilitiesRequest {
                            instance_name: "team-a".into(),
                        },
                        Some(token),
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .cache_capabilities
                    .and_then(|c| c.action_cache_update_capabilities)
                    .map(|u| u.update_enabled)
            }
        };
        assert_eq!(caps(TOKEN_A).await, Some(true));
        assert_eq!(caps(TOKEN_RO).await, Some(false));

        let action = Digest::of_bytes(F, b"an action");
        let update = reapi::UpdateActionResultRequest {
            instance_name: "team-a".into(),
            action_digest: Some(action.to_proto()),
            action_result: Some(reapi::ActionResult::default()),
            digest_function: F.to_proto(),
            ..Default::default()
        };
        let mut ac = ActionCacheClient::new(channel.clone());
        let e = ac
            .update_action_result(with_token(update.clone(), Some(TOKEN_RO)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("ac.write"), "{e:?}");
        ac.update_action_result(with_token(update, Some(TOKEN_A)))
            .await
            .unwrap();
        // Team B cannot read team A's result under its own name or A's.
        let get = |instance: &str| reapi::GetActionResultRequest {
            instance_name: instance.into(),
            action_digest: Some(action.to_proto()),
            digest_function: F.to_proto(),
            ..Default::default()
        };
        let e = ac
            .get_action_result(with_token(get("team-a"), Some(TOKEN_B)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = ac
            .get_action_result(with_token(get("team-b"), Some(TOKEN_B)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        // Every client write is audited.
        assert_eq!(audit_lines(&server, "ac_write"), 1);
    });
}

#[test]
fn a_farm_beyond_loopback_refuses_to_start_unprotected() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(corral_binary().unwrap())
        .args(["server", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("[tls]") && stderr.contains("[auth]"),
        "{stderr}"
    );
}

/// Uploads an Action running `arguments` (no worker will take it: the
/// server has none) and returns its digest.
async fn upload_action(
    cas: &mut ContentAddressableStorageClient<tonic::transport::Channel>,
    tag: &str,
) -> Digest {
    let command = reapi::Command {
        arguments: vec!["/bin/echo".into(), tag.into()],
        ..Default::default()
    };
    let root = reapi::Directory::default();
    let command_d = Digest::of_message(F, &command);
    let root_d = Digest::of_message(F, &root);
    let action = reapi::Action {
        command_digest: Some(command_d.to_proto()),
        input_root_digest: Some(root_d.to_proto()),
        ..Default::default()
    };
    let action_d = Digest::of_message(F, &action);
    let requests = [
        (command_d, command.encode_to_vec()),
        (root_d, root.encode_to_vec()),
        (action_d, action.encode_to_vec()),
    ]
    .into_iter()
    .map(|(d, data)| reapi::batch_update_blobs_request::Request {
        digest: Some(d.to_proto()),
        data,
        ..Default::default()
    })
    .collect();
    cas.batch_update_blobs(with_token(
        reapi::BatchUpdateBlobsRequest {
            instance_name: "team-a".into(),
            requests,
            digest_function: F.to_proto(),
        },
        Some(TOKEN_A),
    ))
    .await
    .unwrap();
    action_d
}

#[test]
fn a_tenant_over_its_queued_operations_is_told_to_retry() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        let mut execution = ExecutionClient::new(channel.clone());
        let execute = |d: Digest| {
            with_token(
                reapi::ExecuteRequest {
                    instance_name: "team-a".into(),
                    action_digest: Some(d.to_proto()),
                    digest_function: F.to_proto(),
                    ..Default::default()
                },
                Some(TOKEN_A),
            )
        };
        let first = upload_action(&mut cas, "first").await;
        let second = upload_action(&mut cas, "second").await;
        // Queued (no worker), holding the tenant's one place.
        let _queued = execution.execute(execute(first)).await.unwrap();
        let e = execution.execute(execute(second)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("queued operations") && e.message().contains("retry"),
            "{e:?}"
        );
        assert_eq!(retry_delay(e.details()), Some(Duration::from_secs(1)));
    });
}

/// The `RetryInfo` delay in a status's details, if there is one.
fn retry_delay(details: &[u8]) -> Option<Duration> {
    use corral_proto::error_details::{RetryInfo, RETRY_INFO_URL};
    let status = corral_proto::rpc::Status::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url == RETRY_INFO_URL)?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(Duration::new(
        u64::try_from(delay.seconds).ok()?,
        u32::try_from(delay.nanos).ok()?,
    ))
}

#[test]
fn uploads_past_a_tenants_cas_bytes_are_refused_with_a_retry_delay() {
    use corral_proto::bytestream::byte_stream_client::ByteStreamClient;
    use corral_proto::bytestream::WriteRequest;
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    block_on(async {
        let channel = corral_cas::channel::connect(&server.url()).await.unwrap();
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        let blob = |fill: u8| vec![fill; 600];
        let upload = |data: Vec<u8>| {
            let d = Digest::of_bytes(F, &data);
            with_token(
                reapi::BatchUpdateBlobsRequest {
                    instance_name: "team-c".into(),
                    requests: vec![reapi::batch_update_blobs_request::Request {
                        digest: Some(d.to_proto()),
                        data,
                        ..Default::default()
                    }],
                    digest_function: F.to_proto(),
                },
                Some(TOKEN_C),
            )
        };
        // 600 of 1,000 bytes: stored; the same blob again costs nothing.
        for _ in 0..2 {
            let r = cas.batch_update_blobs(upload(blob(1))).await.unwrap();
            assert_eq!(r.into_inner().responses[0].status.as_ref().unwrap().code, 0);
        }
        // Another 600: refused, saying which quota and when to retry.
        let r = cas.batch_update_blobs(upload(blob(2))).await.unwrap();
        let status = r.into_inner().responses[0].status.clone().unwrap();
        assert_eq!(status.code, Code::ResourceExhausted as i32, "{status:?}");
        assert!(status.message.contains("1000 CAS bytes"), "{status:?}");
        assert_eq!(
            retry_delay(&status.encode_to_vec()),
            Some(Duration::from_secs(60))
        );
        // And through ByteStream, refused before the bytes are taken.
        let data = blob(3);
        let d = Digest::of_bytes(F, &data);
        let write = WriteRequest {
            resource_name: format!(
                "team-c/uploads/3f2a9c4e-1b7d-4e8a-9c0f-5d6e7f8a9b0c/blobs/{}/{}",
                d.hash_hex(),
                data.len()
            ),
            write_offset: 0,
            finish_write: true,
            data: data.into(),
        };
        let mut request = tonic::Request::new(tokio_stream::iter(vec![write]));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {TOKEN_C}").parse().unwrap(),
        );
        let e = ByteStreamClient::new(channel)
            .write(request)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(retry_delay(e.details()), Some(Duration::from_secs(60)));
    });
}
