//! A server whose CAS and action cache live on another, protected server
//! (`type = "remote"` with `tls` and `token_file`): it presents its client
//! certificate and token, what it stores lands in the other server under
//! the configured instance, and wrong credentials stop it at start with an
//! error naming the setting.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use corral_cas::client_options::TlsClientConfig;
use corral_cas::{ClientOptions, Connector, Digest, DigestFunction};
use corral_integration::block_on;
use corral_integration::certs::{CertFiles, TestCa};
use corral_integration::process::output_within;
use corral_integration::server::{corral_binary, CorralServer, ServerOptions};
use corral_integration::tokens::token_entry;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;
use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;

const TOKEN: &str = "token-of-the-downstream-server-0123";
const INSTANCE: &str = "team-a";

struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    server: CertFiles,
    downstream: CertFiles,
    token: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("farm"), "farm-ca").unwrap();
    let token = dir.path().join("downstream.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    Pki {
        server: ca.server("upstream").unwrap(),
        downstream: ca.client("downstream").unwrap(),
        ca,
        token,
        dir,
    }
}

/// The protected server: client certificates required, a static token,
/// one tenant that the downstream server's token may read and write.
fn upstream(pki: &Pki) -> CorralServer {
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, token_entry("downstream", "downstream", TOKEN)).unwrap();
    let config = format!(
        r#"
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[auth.authentication.static_tokens]
file = "{tokens}"

[auth.policy.tenants.team-a]
instances = ["{INSTANCE}"]

[[auth.policy.grants]]
principals = ["downstream"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "ac.write"]
"#,
        cert = pki.server.cert.display(),
        key = pki.server.key.display(),
        ca = pki.ca.cert.display(),
        tokens = tokens.display(),
    );
    CorralServer::start_with(ServerOptions {
        config_toml: Some(config),
        ..ServerOptions::default()
    })
    .unwrap()
}

/// The `[cas.store]` and `[action_cache]` of a server whose storage is
/// `upstream_url`, presenting `client` (a certificate, or none) and the
/// token in `token`.
fn downstream_config(pki: &Pki, upstream_url: &str, client: bool, token: &Path) -> String {
    let tls = if client {
        format!(
            r#"{{ ca = "{}", cert = "{}", key = "{}" }}"#,
            pki.ca.cert.display(),
            pki.downstream.cert.display(),
            pki.downstream.key.display()
        )
    } else {
        format!(r#"{{ ca = "{}" }}"#, pki.ca.cert.display())
    };
    let remote = format!(
        "type = \"remote\"\nurl = \"{upstream_url}\"\ninstance_name = \"{INSTANCE}\"\n\
         token_file = \"{}\"\ntls = {tls}\n",
        token.display()
    );
    format!("[cas.store]\n{remote}\n[action_cache]\n{remote}")
}

/// A client of the upstream server, as the downstream one is.
fn upstream_connector(pki: &Pki) -> Connector {
    ClientOptions {
        tls: Some(TlsClientConfig {
            ca: Some(pki.ca.cert.clone()),
            cert: Some(pki.downstream.cert.clone()),
            key: Some(pki.downstream.key.clone()),
            ..TlsClientConfig::default()
        }),
        token_file: Some(pki.token.clone()),
    }
    .connector()
    .unwrap()
}

#[test]
fn a_remote_store_and_action_cache_reach_a_protected_server_with_a_certificate_and_token() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let pki = pki();
    let upstream = upstream(&pki);
    let upstream_url = format!("https://127.0.0.1:{}", upstream.addr().port());
    let downstream = CorralServer::start_with(ServerOptions {
        config_toml: Some(downstream_config(&pki, &upstream_url, true, &pki.token)),
        ..ServerOptions::default()
    })
    .unwrap();

    let blob = b"stored through the downstream server".to_vec();
    let digest = Digest::of_bytes(DigestFunction::Sha256, &blob).to_proto();
    let result = reapi::ActionResult {
        exit_code: 3,
        stdout_raw: b"cached".to_vec(),
        ..Default::default()
    };
    let action = reapi::Digest {
        hash: "ab".repeat(32),
        size_bytes: 140,
    };
    block_on(async {
        // A client of the downstream server (on loopback, no policy) ...
        let channel = tonic::transport::Channel::from_shared(downstream.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let update = ContentAddressableStorageClient::new(channel.clone())
            .batch_update_blobs(reapi::BatchUpdateBlobsRequest {
                instance_name: "anything".into(),
                requests: vec![reapi::batch_update_blobs_request::Request {
                    digest: Some(digest.clone()),
                    data: blob.clone(),
                    compressor: 0,
                }],
                digest_function: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(update.responses[0].status.as_ref().map(|s| s.code), Some(0));
        ActionCacheClient::new(channel)
            .update_action_result(reapi::UpdateActionResultRequest {
                instance_name: "anything".into(),
                action_digest: Some(action.clone()),
                action_result: Some(result.clone()),
                ..Default::default()
            })
            .await
            .unwrap();

        // ... stored them in the protected server, under its instance.
        let conn = upstream_connector(&pki)
            .connect(&upstream_url)
            .await
            .unwrap();
        let read = ContentAddressableStorageClient::new(conn.clone())
            .batch_read_blobs(reapi::BatchReadBlobsRequest {
                instance_name: INSTANCE.into(),
                digests: vec![digest.clone()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read.responses[0].data, blob);
        let cached = ActionCacheClient::new(conn)
            .get_action_result(reapi::GetActionResultRequest {
                instance_name: INSTANCE.into(),
                action_digest: Some(action),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cached.exit_code, 3);
        assert_eq!(cached.stdout_raw, b"cached");
    });
    downstream.stop().unwrap();
    upstream.stop().unwrap();
}

#[test]
fn wrong_credentials_for_a_remote_store_stop_the_server_at_start_naming_the_setting() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let pki = pki();
    let upstream = upstream(&pki);
    let upstream_url = format!("https://127.0.0.1:{}", upstream.addr().port());
    let wrong = pki.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token-of-anybody-0123456789\n").unwrap();

    let refused = failed_start(&downstream_config(&pki, &upstream_url, true, &wrong));
    assert!(
        refused.contains("cas.store") && refused.contains("token_file"),
        "{refused}"
    );
    assert!(refused.contains("Unauthenticated"), "{refused}");

    // Without its client certificate, the handshake itself fails.
    let no_cert = failed_start(&downstream_config(&pki, &upstream_url, false, &pki.token));
    assert!(no_cert.contains("cas.store"), "{no_cert}");

    // A token over plaintext beyond loopback is refused before any call.
    let plain = failed_start(&downstream_config(
        &pki,
        "http://192.0.2.1:1",
        false,
        &pki.token,
    ));
    assert!(
        plain.contains("cas.store") && plain.contains("https"),
        "{plain}"
    );
    upstream.stop().unwrap();
}

/// Starts `corral server` with `config`, which must make it exit with an
/// error; returns what it printed on stderr.
fn failed_start(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(corral_binary().unwrap());
    cmd.args(["server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data")
        .arg(dir.path().join("data"));
    let output = output_within(&mut cmd, Duration::from_secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    stderr
}
