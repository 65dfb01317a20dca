//! Real BuildStream 2.8.1 building on the whole farm (`corral up`): the
//! input root becomes `/` for the `buildstream` instance name, and the
//! checked-out artifact matches BuildStream's own bubblewrap sandbox byte
//! for byte.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_integration::buildstream::{
    check_failed_cleanly, check_hello_tree, compare_trees, BstProject, Sandbox,
};
use corral_integration::farm::CorralFarm;
use corral_proto::reapi;
use corral_proto::reapi::action_cache_client::ActionCacheClient;

/// hello.bst remotely on Corral and locally under bwrap: identical trees.
#[test]
fn hello_on_the_farm_matches_the_local_sandbox() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let project = BstProject::new()?;
    let out = tempfile::tempdir()?;

    let remote = project.build("hello.bst", Sandbox::remote(farm.url(), "buildstream"))?;
    assert!(
        remote.output.success,
        "remote build failed:\n{}",
        remote.output.log
    );
    assert!(
        remote
            .output
            .log
            .contains("Waiting for the remote build to complete"),
        "bst did not build remotely:\n{}",
        remote.output.log
    );
    eprintln!(
        "remote build of hello.bst on corral: {:?}",
        remote.output.wall
    );
    let local = project.build("hello.bst", Sandbox::Local)?;
    assert!(
        local.output.success,
        "local build failed:\n{}",
        local.output.log
    );

    let (local_tree, remote_tree) = (out.path().join("local"), out.path().join("remote"));
    local.checkout(&local_tree)?;
    remote.checkout(&remote_tree)?;
    let diffs = compare_trees(&local_tree, &remote_tree)?;
    assert!(
        diffs.is_empty(),
        "local and remote artifacts differ:\n{}",
        diffs.join("\n")
    );
    check_hello_tree(&remote_tree)?;

    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// fails.bst fails the build cleanly, with its stderr and exit code in bst's
/// log.
#[test]
fn failing_element_fails_cleanly_with_its_log() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let project = BstProject::new()?;
    let build = project.build("fails.bst", Sandbox::remote(farm.url(), "buildstream"))?;
    check_failed_cleanly(&build.output)?;
    Ok(())
}

/// Two builds at once under different instance names both finish, and each
/// result is in its own instance's action cache only.
#[test]
fn two_instances_build_at_once_with_separate_action_caches() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let names = ["buildstream/team-a", "buildstream/team-b"];
    let results: Vec<anyhow::Result<bool>> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let url = farm.url();
                scope.spawn(move || {
                    let project = BstProject::new()?;
                    let build = project.build("hello.bst", Sandbox::remote(url, *name))?;
                    if !build.output.success {
                        anyhow::bail!("build for {name} failed:\n{}", build.output.log);
                    }
                    Ok(build
                        .output
                        .log
                        .contains("Waiting for the remote build to complete"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("build thread"))
            .collect()
    });
    for (name, r) in names.iter().zip(results) {
        assert!(r?, "{name}: bst did not build remotely");
    }

    // Both ran the same action (same input root, same command); each
    // instance's cache holds it, a third instance's does not.
    let action = single_action_digest(&farm)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut ac = ActionCacheClient::connect(farm.url()).await?;
        for name in names {
            let hit = ac
                .get_action_result(reapi::GetActionResultRequest {
                    instance_name: name.to_string(),
                    action_digest: Some(action.clone()),
                    ..Default::default()
                })
                .await;
            assert!(hit.is_ok(), "{name} should have its own result: {hit:?}");
        }
        let miss = ac
            .get_action_result(reapi::GetActionResultRequest {
                instance_name: "buildstream/team-c".into(),
                action_digest: Some(action.clone()),
                ..Default::default()
            })
            .await;
        assert_eq!(
            miss.expect_err("another instance must not see the result")
                .code(),
            tonic::Code::NotFound
        );
        anyhow::Ok(())
    })?;
    drop(runtime);
    let status = farm.stop()?;
    assert!(status.success());
    Ok(())
}

/// The digest of the one action in the farm's action cache, read from its
/// on-disk layout `ac/<function>/<instance hash>/<hash>-<size>` (both
/// instances stored the same action).
fn single_action_digest(farm: &CorralFarm) -> anyhow::Result<reapi::Digest> {
    let ac = farm.data_dir().join("server/ac");
    let mut digests = std::collections::BTreeSet::new();
    let mut instances = 0;
    for function in std::fs::read_dir(&ac)? {
        for instance in std::fs::read_dir(function?.path())? {
            instances += 1;
            for entry in std::fs::read_dir(instance?.path())? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if let Some((hash, size)) = name.split_once('-') {
                    digests.insert((hash.to_string(), size.parse::<i64>()?));
                }
            }
        }
    }
    anyhow::ensure!(
        instances == 2,
        "expected two instances in {}, found {instances}",
        ac.display()
    );
    anyhow::ensure!(digests.len() == 1, "expected one action, found {digests:?}");
    let (hash, size_bytes) = digests.into_iter().next().expect("one digest");
    Ok(reapi::Digest { hash, size_bytes })
}

/// Aspects `observe.bst` records that must be the same locally and on the
/// farm: everything an action can see of its sandbox except how its file
/// systems are mounted, how it is confined (seccomp, the file size limit)
/// and which process is PID 1 (see docs/sandbox.md).
const SAME_AS_LOCAL: &[&str] = &[
    "hostname",
    "uname-n",
    "id",
    "umask",
    "environment",
    "dev-entries",
    "dev-nodes",
    "dev-subdirs",
    "proc-entries",
    "proc-self",
    "tmp-entries",
    "tmp-mode",
    "tmp-writable",
    "capabilities",
    "no-new-privs",
    "network-interfaces",
    "root-entries",
    "cwd",
    "ulimits",
];

/// The one resource limit the farm sets where BuildStream's sandbox sets
/// none: the written-bytes bound, enforced per file with RLIMIT_FSIZE.
const FILE_SIZE_LIMIT: &str = "(-f)";

/// observe.bst records the sandbox an action sees; remote on the farm and
/// local under BuildStream's bubblewrap runner, every aspect in
/// [`SAME_AS_LOCAL`] is identical (hostname `buildbox` included).
#[test]
fn the_sandbox_an_action_observes_matches_the_local_one() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let project = BstProject::new()?;
    let out = tempfile::tempdir()?;
    let remote = project.build("observe.bst", Sandbox::remote(farm.url(), "buildstream"))?;
    assert!(remote.output.success, "remote:\n{}", remote.output.log);
    let local = project.build("observe.bst", Sandbox::Local)?;
    assert!(local.output.success, "local:\n{}", local.output.log);
    let (local_tree, remote_tree) = (out.path().join("local"), out.path().join("remote"));
    local.checkout(&local_tree)?;
    remote.checkout(&remote_tree)?;
    let mut differences = Vec::new();
    let mut report = String::new();
    for entry in std::fs::read_dir(local_tree.join("observed"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let mut here = std::fs::read_to_string(local_tree.join("observed").join(&name))?;
        let mut there = std::fs::read_to_string(remote_tree.join("observed").join(&name))
            .unwrap_or_else(|e| format!("<missing: {e}>"));
        if name == "ulimits" {
            here = without_lines_containing(&here, FILE_SIZE_LIMIT);
            there = without_lines_containing(&there, FILE_SIZE_LIMIT);
        }
        if here != there {
            report.push_str(&format!("== {name}\n-- local:\n{here}-- farm:\n{there}"));
            if SAME_AS_LOCAL.contains(&name.as_str()) {
                differences.push(name);
            }
        }
    }
    eprintln!("aspects that differ:\n{report}");
    assert!(
        differences.is_empty(),
        "the farm's sandbox differs from BuildStream's in {differences:?}:\n{report}"
    );
    for name in SAME_AS_LOCAL {
        assert!(
            remote_tree.join("observed").join(name).is_file(),
            "observe.bst recorded no {name}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(remote_tree.join("observed/hostname"))?,
        "buildbox\n"
    );
    Ok(())
}

fn without_lines_containing(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| !l.contains(needle))
        .map(|l| format!("{l}\n"))
        .collect()
}
