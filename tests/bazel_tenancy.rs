//! Real Bazel 4.2.3 against a farm (`corral up`) with a policy and static
//! tokens on loopback (Debian's Bazel cannot speak TLS): a token in
//! `--remote_header` or a `.netrc` builds remotely, a wrong token fails
//! clearly, and a read-only principal's cache-only build stops with
//! Bazel's own "not authorized" message.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_integration::bazel::Bazel;
use corral_integration::farm::{CorralFarm, FarmOptions};
use corral_integration::tokens::token_entry as entry;

const TOKEN: &str = "bazel-token-for-team-a-0123456789";
const READER: &str = "bazel-token-read-only-0123456789";

fn farm(dir: &std::path::Path) -> CorralFarm {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        entry("ci", "ci/team-a", TOKEN) + &entry("ro", "reader", READER),
    )
    .unwrap();
    let config = format!(
        r#"
[auth.authentication.static_tokens]
file = "{}"
[auth.policy.tenants.team-a]
instances = ["team-a"]
[[auth.policy.grants]]
principals = ["ci/*"]
tenant = "team-a"
permissions = ["cas.read", "cas.write", "ac.read", "ac.write", "execute", "operations.read"]
[[auth.policy.grants]]
principals = ["reader"]
tenant = "team-a"
permissions = ["cas.read", "ac.read"]
[[auth.policy.workers]]
principals = ["uid:*"]
"#,
        tokens.display()
    );
    CorralFarm::start_with(FarmOptions {
        config_toml: Some(config),
        ..FarmOptions::default()
    })
    .unwrap()
}

fn remote(farm: &CorralFarm) -> Vec<String> {
    vec![
        format!("--remote_executor={}", farm.grpc_url()),
        "--remote_instance_name=team-a".to_string(),
        "--spawn_strategy=remote".to_string(),
        "--genrule_strategy=remote".to_string(),
        "--remote_timeout=120".to_string(),
    ]
}

#[test]
fn bazel_builds_with_a_token_and_fails_clearly_without_one() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let farm = farm(dir.path());

    // The token as a header: everything runs on the farm.
    let bazel = Bazel::new("workspace").unwrap();
    let mut flags = remote(&farm);
    flags.push(format!("--remote_header=authorization=Bearer {TOKEN}"));
    let run = bazel.build(&["//:hello"], &flags).unwrap();
    let summary = run.processes().expect("a process summary");
    assert!(summary.count("remote") >= 3, "{summary:?}\n{}", run.stderr);

    // A wrong token: the build fails and says why.
    let bazel = Bazel::new("workspace").unwrap();
    let mut flags = remote(&farm);
    flags.push("--remote_header=authorization=Bearer wrong-token-0123456789abcdef".into());
    let e = bazel.build(&["//:hello"], &flags).unwrap_err().to_string();
    assert!(e.contains("UNAUTHENTICATED"), "{e}");

    // The same token from a .netrc (Basic ID:TOKEN): builds.
    let mut bazel = Bazel::new("workspace").unwrap();
    let netrc = bazel.scratch("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1 login ci password {TOKEN}\n"),
    )
    .unwrap();
    bazel.set_env("NETRC", &netrc.display().to_string());
    let run = bazel.build(&["//:hello"], &remote(&farm)).unwrap();
    let summary = run.processes().expect("a process summary");
    // Served by the farm (its cache holds the first build's results), which
    // needs an authenticated `ac.read`.
    assert!(
        summary.count("remote") + summary.count("remote cache hit") >= 3,
        "{summary:?}\n{}",
        run.stderr
    );
    farm.stop().unwrap();
}

#[test]
fn a_read_only_principal_cannot_upload_local_results() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let farm = farm(dir.path());
    let bazel = Bazel::new("workspace").unwrap();
    let flags = vec![
        format!("--remote_cache={}", farm.grpc_url()),
        "--remote_instance_name=team-a".to_string(),
        format!("--remote_header=authorization=Bearer {READER}"),
        "--spawn_strategy=processwrapper-sandbox".to_string(),
        "--genrule_strategy=processwrapper-sandbox".to_string(),
    ];
    let e = bazel.build(&["//:hello"], &flags).unwrap_err().to_string();
    assert!(e.contains("not authorized"), "{e}");
    // Without uploads, the same principal may use the cache.
    let mut flags = flags;
    flags.push("--noremote_upload_local_results".into());
    bazel.build(&["//:hello"], &flags).unwrap();
    farm.stop().unwrap();
}
