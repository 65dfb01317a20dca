//! BuildStream 2.8.1 keeps its artifact and source caches on Corral (the
//! Remote Asset API beside the CAS, on the farm's one port): a build
//! pushes; a build with an empty local cache pulls the artifact instead of
//! building it, after a restart of the farm too, and the checkouts are
//! equal byte for byte; a session with only the source cache pulls the
//! sources; and the same holds with remote execution on the same server in
//! one configuration.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use corral_integration::buildstream::{
    check_hello_tree, compare_trees, BstOutput, BstProject, CacheServers, Sandbox,
};
use corral_integration::farm::{CorralFarm, FarmOptions};

/// The instance name of every service (remote execution needs
/// `buildstream` for its input-root sandbox).
const INSTANCE: &str = "buildstream";

/// Whether some line of the log contains every one of `parts`.
fn has_line_with(output: &BstOutput, parts: &[&str]) -> bool {
    output
        .log
        .lines()
        .any(|line| parts.iter().all(|p| line.contains(p)))
}

fn assert_line(output: &BstOutput, parts: &[&str]) {
    assert!(
        has_line_with(output, parts),
        "no line with {parts:?} in the log:\n{}",
        output.log
    );
}

/// The first build pushed hello.bst's artifact and both elements'
/// sources.
fn assert_pushed(output: &BstOutput, url: &str) {
    assert!(output.success, "the first build failed:\n{}", output.log);
    assert_line(output, &["build:hello.bst", "SUCCESS Running commands"]);
    assert_line(output, &["push:hello.bst", "INFO    Pushed artifact", url]);
    assert_line(output, &["push:base.bst", "INFO    Pushed artifact", url]);
    assert_line(
        output,
        &["src-push:hello.bst", "INFO    Pushed source", url],
    );
    assert_line(output, &["src-push:base.bst", "INFO    Pushed source", url]);
}

/// A build with an empty local cache pulled hello.bst's artifact and
/// built nothing.
fn assert_pulled_not_built(output: &BstOutput, url: &str) {
    assert!(output.success, "the second build failed:\n{}", output.log);
    assert_line(output, &["pull:hello.bst", "INFO    Pulled artifact", url]);
    assert!(
        !has_line_with(output, &[" build:"]),
        "the second build built something:\n{}",
        output.log
    );
    assert!(
        !output
            .log
            .contains("Waiting for the remote build to complete"),
        "the second build executed remotely:\n{}",
        output.log
    );
    assert_line(output, &["Pull Queue:", "processed 1,"]);
    assert_line(output, &["Build Queue:", "processed 0,"]);
}

/// A data directory the farm keeps across restarts (the sandbox's user
/// must be able to traverse it).
fn farm_home() -> anyhow::Result<tempfile::TempDir> {
    let home = tempfile::tempdir()?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(home)
}

fn farm_in(home: &tempfile::TempDir) -> anyhow::Result<CorralFarm> {
    CorralFarm::start_with(FarmOptions {
        cache_home: Some(home.path().to_path_buf()),
        ..Default::default()
    })
}

/// Local builds with Corral as artifact and source cache: push, restart
/// the farm, pull into an empty cache, check out the same bytes; then a
/// source-cache-only session pulls the sources.
#[test]
fn artifacts_and_sources_cached_on_corral_survive_a_restart() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let home = farm_home()?;
    let project = BstProject::new()?;
    let out = tempfile::tempdir()?;

    let farm = farm_in(&home)?;
    let caches = CacheServers::both(farm.url(), INSTANCE);
    let first = project.session_with(Sandbox::Local, &caches.yaml())?;
    let built = first.build("hello.bst")?;
    assert_pushed(&built, &farm.url());
    first.checkout("hello.bst", &out.path().join("built"))?;
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");

    // Same data directory, new process and port: the asset index and the
    // CAS are still there.
    let farm = farm_in(&home)?;
    let caches = CacheServers::both(farm.url(), INSTANCE);
    let second = project.session_with(Sandbox::Local, &caches.yaml())?;
    let pulled = second.build("hello.bst")?;
    assert_pulled_not_built(&pulled, &farm.url());
    second.checkout("hello.bst", &out.path().join("pulled"))?;
    let diffs = compare_trees(&out.path().join("built"), &out.path().join("pulled"))?;
    assert!(
        diffs.is_empty(),
        "built and pulled artifacts differ:\n{}",
        diffs.join("\n")
    );
    check_hello_tree(&out.path().join("pulled"))?;

    // Without the artifact cache, bst builds again, from sources it pulls
    // from Corral's source cache.
    let sources = CacheServers::sources_only(farm.url(), INSTANCE);
    let third = project.session_with(Sandbox::Local, &sources.yaml())?;
    let rebuilt = third.build("hello.bst")?;
    assert!(
        rebuilt.success,
        "source-cache build failed:\n{}",
        rebuilt.log
    );
    assert_line(
        &rebuilt,
        &["fetch:hello.bst", "INFO    Pulled source", &farm.url()],
    );
    assert_line(
        &rebuilt,
        &["fetch:base.bst", "INFO    Pulled source", &farm.url()],
    );
    third.checkout("hello.bst", &out.path().join("rebuilt"))?;
    let diffs = compare_trees(&out.path().join("built"), &out.path().join("rebuilt"))?;
    assert!(
        diffs.is_empty(),
        "rebuilt artifact differs:\n{}",
        diffs.join("\n")
    );

    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// One Corral for remote execution, artifacts and sources in one user
/// configuration: the first build runs on the farm and pushes, the second
/// (empty local cache) pulls without executing anything.
#[test]
fn remote_execution_artifacts_and_sources_on_one_server() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let project = BstProject::new()?;
    let out = tempfile::tempdir()?;
    let remote = Sandbox::remote(farm.url(), INSTANCE);
    let caches = CacheServers::both(farm.url(), INSTANCE).yaml();

    let first = project.session_with(remote.clone(), &caches)?;
    let built = first.build("hello.bst")?;
    assert_pushed(&built, &farm.url());
    assert!(
        built
            .log
            .contains("Waiting for the remote build to complete"),
        "bst did not build remotely:\n{}",
        built.log
    );
    first.checkout("hello.bst", &out.path().join("built"))?;

    let second = project.session_with(remote, &caches)?;
    let pulled = second.build("hello.bst")?;
    assert_pulled_not_built(&pulled, &farm.url());
    second.checkout("hello.bst", &out.path().join("pulled"))?;
    let diffs = compare_trees(&out.path().join("built"), &out.path().join("pulled"))?;
    assert!(
        diffs.is_empty(),
        "built and pulled artifacts differ:\n{}",
        diffs.join("\n")
    );
    check_hello_tree(&out.path().join("pulled"))?;

    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}
