//! Real BuildStream 2.8.1 against a protected farm (`corral up` with TLS
//! on the client port, client certificates required, a two-tenant policy
//! and static tokens): with `auth: server-cert, client-cert, client-key,
//! access-token` on every remote service it builds `hello.bst` remotely
//! over `https://`; with another tenant's instance name it fails, saying
//! the permission was denied, and without the token it fails as
//! UNAUTHENTICATED. Certificates are made here with rcgen.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use corral_integration::buildstream::{check_hello_tree, BstAuth, BstProject, Sandbox};
use corral_integration::certs::TestCa;
use corral_integration::farm::{CorralFarm, FarmOptions};
use corral_integration::tokens::token_entry;

const TOKEN_A: &str = "token-of-team-a-builds-0123456789";
const TOKEN_B: &str = "token-of-team-b-builds-0123456789";

/// `corral up` with TLS (client certificates from `ca` required), tenants
/// `team-a` and `team-b` under `buildstream/`, each with a static token,
/// and the in-process worker on its UNIX socket.
fn start_farm(dir: &Path, ca: &TestCa) -> CorralFarm {
    let server = ca.server("corral-up").unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        [
            token_entry("ci-a", "ci-a", TOKEN_A),
            token_entry("ci-b", "ci-b", TOKEN_B),
        ]
        .concat(),
    )
    .unwrap();
    let config = format!(
        r#"
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[auth.authentication.static_tokens]
file = "{tokens}"

[auth.policy.tenants.team-a]
instances = ["buildstream/team-a"]
[auth.policy.tenants.team-b]
instances = ["buildstream/team-b"]

[[auth.policy.grants]]
principals = ["ci-a"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "execute", "operations.read"]

[[auth.policy.grants]]
principals = ["ci-b"]
tenant = "team-b"
permissions = ["cas.read", "cas.write", "ac.read", "execute", "operations.read"]

[[auth.policy.workers]]
principals = ["uid:*"]
"#,
        cert = server.cert.display(),
        key = server.key.display(),
        ca = ca.cert.display(),
        tokens = tokens.display(),
    );
    CorralFarm::start_with(FarmOptions {
        config_toml: Some(config),
        https: true,
        ..FarmOptions::default()
    })
    .unwrap()
}

#[test]
fn buildstream_builds_over_https_with_certificates_and_a_token() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "farm-ca").unwrap();
    let client = ca.client("bst-ci-a").unwrap();
    let token = dir.path().join("team-a.token");
    std::fs::write(&token, format!("{TOKEN_A}\n")).unwrap();
    let farm = start_farm(dir.path(), &ca);
    let url = format!("https://127.0.0.1:{}", farm.addr().port());
    let auth = BstAuth {
        server_cert: Some(ca.cert.clone()),
        client_cert: Some(client.cert.clone()),
        client_key: Some(client.key.clone()),
        access_token: Some(token),
    };
    let project = BstProject::new().unwrap();

    let build = project
        .build(
            "hello.bst",
            Sandbox::remote_with_auth(&url, "buildstream/team-a", auth.clone()),
        )
        .unwrap();
    assert!(
        build.output.success,
        "remote build over https failed:\n{}",
        build.output.log
    );
    assert!(
        build
            .output
            .log
            .contains("Waiting for the remote build to complete"),
        "bst did not build remotely:\n{}",
        build.output.log
    );
    let tree = dir.path().join("hello");
    build.checkout(&tree).unwrap();
    check_hello_tree(&tree).unwrap();

    // The same credentials on team B's instance: refused, and bst says so.
    let denied = project
        .build(
            "hello.bst",
            Sandbox::remote_with_auth(&url, "buildstream/team-b", auth.clone()),
        )
        .unwrap();
    assert!(
        !denied.output.success,
        "a build on another tenant's instance must fail:\n{}",
        denied.output.log
    );
    assert!(
        denied.output.log.contains("PERMISSION_DENIED")
            && denied.output.log.contains("\"buildstream/team-b\""),
        "bst should say the permission on buildstream/team-b was denied:\n{}",
        denied.output.log
    );

    // Certificates but no token: UNAUTHENTICATED, and bst says so.
    let anonymous = BstAuth {
        access_token: None,
        ..auth
    };
    let refused = project
        .build(
            "hello.bst",
            Sandbox::remote_with_auth(&url, "buildstream/team-a", anonymous),
        )
        .unwrap();
    assert!(
        !refused.output.success && refused.output.log.contains("UNAUTHENTICATED"),
        "a build without a token must fail as UNAUTHENTICATED:\n{}",
        refused.output.log
    );

    let status = farm.stop().unwrap();
    assert!(status.success(), "corral up exit: {status}");
}
