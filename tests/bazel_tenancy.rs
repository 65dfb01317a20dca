//! Real Bazel 4.2.3 against a farm (`corral up`) with a policy and static
//! tokens on loopback (Debian's Bazel cannot speak TLS): a token in
//! `--remote_header` or a `.netrc` builds remotely, a wrong token fails
//! clearly, and a read-only principal's cache-only build stops with
//! Bazel's own "not authorized" message. Two tenants' builds of a hundred
//! and more actions each run at once and stay apart.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_integration::bazel::Bazel;
use corral_integration::farm::{CorralFarm, FarmOptions};
use corral_integration::tokens::token_entry as entry;

const TOKEN: &str = "bazel-token-for-team-a-0123456789";
const READER: &str = "bazel-token-read-only-0123456789";
const TOKEN_B: &str = "bazel-token-for-team-b-0123456789";

fn farm(dir: &std::path::Path) -> CorralFarm {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        entry("ci", "ci/team-a", TOKEN)
            + &entry("ro", "reader", READER)
            + &entry("cb", "ci/team-b", TOKEN_B),
    )
    .unwrap();
    let config = format!(
        r#"
[auth.authentication.static_tokens]
file = "{}"
[auth.policy.tenants.team-a]
instances = ["team-a"]
[auth.policy.tenants.team-b]
instances = ["team-b"]
[auth.policy.tenants.team-b.quotas]
concurrent_executions = 1
[[auth.policy.grants]]
principals = ["ci/team-b"]
tenant = "team-b"
permissions = ["cas.read", "cas.write", "ac.read", "ac.write", "execute", "operations.read"]
[[auth.policy.grants]]
principals = ["ci/team-a"]
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
    remote_as(farm, "team-a")
}

fn remote_as(farm: &CorralFarm, instance: &str) -> Vec<String> {
    Bazel::remote_execution_flags(&farm.grpc_url(), instance)
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

/// Genrules for `tenant`: `n` of its own, `n` that both tenants have
/// (identical actions, which each must run for itself), and one that
/// gathers them all.
fn many_genrules(tenant: &str, n: usize) -> String {
    let mut build = String::new();
    let mut all = Vec::new();
    for i in 0..n {
        build += &format!(
            "genrule(name = \"own_{i}\", outs = [\"own_{i}.txt\"], cmd = \"echo {tenant}-{i} > $@\")\n\
             genrule(name = \"same_{i}\", outs = [\"same_{i}.txt\"], cmd = \"echo same-{i} > $@\")\n"
        );
        all.push(format!("\":own_{i}\", \":same_{i}\""));
    }
    build += &format!(
        "genrule(name = \"all\", srcs = [{}], outs = [\"all.txt\"], cmd = \"cat $(SRCS) > $@\")\n",
        all.join(", ")
    );
    build
}

#[test]
fn two_tenants_build_at_once_and_stay_apart() {
    use corral_cas::{Digest, DigestFunction};
    use corral_proto::reapi;
    use corral_proto::reapi::content_addressable_storage_client::ContentAddressableStorageClient;
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let farm = farm(dir.path());
    let build = |tenant: &'static str, token: &'static str| {
        let flags = {
            let mut f = remote_as(&farm, tenant);
            f.push(format!("--remote_header=authorization=Bearer {token}"));
            f.push("--jobs=16".into());
            f
        };
        move || {
            let bazel = Bazel::new("workspace").unwrap();
            let path = bazel.workspace().join("BUILD");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text += &many_genrules(tenant, N);
            std::fs::write(&path, text).unwrap();
            let run = bazel.build(&["//:all"], &flags).unwrap();
            (bazel, run)
        }
    };
    // Team b may run one action at a time; both builds still finish.
    let a = std::thread::spawn(build("team-a", TOKEN));
    let b = std::thread::spawn(build("team-b", TOKEN_B));
    let (bazel_a, run_a) = a.join().unwrap();
    let (bazel_b, run_b) = b.join().unwrap();
    for (tenant, bazel, run) in [("team-a", &bazel_a, &run_a), ("team-b", &bazel_b, &run_b)] {
        let summary = run.processes().expect("a process summary");
        // Every action ran remotely for this tenant: the shared ones too,
        // none answered from the other tenant's cache.
        assert!(
            summary.count("remote") > 2 * N as u32,
            "{tenant}: {summary:?}\n{}",
            run.stderr
        );
        let all = std::fs::read_to_string(bazel.bin("all.txt")).unwrap();
        let expected: String = (0..N)
            .map(|i| format!("{tenant}-{i}\nsame-{i}\n"))
            .collect();
        assert_eq!(all, expected, "{tenant}");
    }

    // Team b cannot learn that team a's outputs exist; team a sees them.
    let own_a = std::fs::read(bazel_a.bin("own_0.txt")).unwrap();
    let digest = Digest::of_bytes(DigestFunction::Sha256, &own_a);
    let ask = |instance: &str, token: &str| {
        let mut request = corral_proto::tonic::Request::new(reapi::FindMissingBlobsRequest {
            instance_name: instance.into(),
            blob_digests: vec![digest.to_proto()],
            digest_function: DigestFunction::Sha256.to_proto(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = corral_cas::channel::connect(&farm.url()).await.unwrap();
            let mut cas = ContentAddressableStorageClient::new(channel);
            let seen_by_a = cas.find_missing_blobs(ask("team-a", TOKEN)).await.unwrap();
            assert!(seen_by_a.into_inner().missing_blob_digests.is_empty());
            let seen_by_b = cas
                .find_missing_blobs(ask("team-b", TOKEN_B))
                .await
                .unwrap();
            assert_eq!(seen_by_b.into_inner().missing_blob_digests.len(), 1);
        });
    farm.stop().unwrap();
}
