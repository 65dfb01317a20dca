//! Real BuildStream 2.8.1 projects at the scale users bring: a Debian 12
//! root with gcc and make (about 5,200 files, 267 MB, several files over
//! 4 MiB that buildbox-casd uploads with ByteStream under one reused upload
//! UUID) and C elements that stage each other's artifacts. Built remotely on
//! `corral up` and locally in BuildStream's own sandbox, every artifact is
//! identical file for file.

use std::path::Path;

use corral_integration::buildstream::{compare_trees, BstBuild, BstProject, Sandbox};
use corral_integration::farm::CorralFarm;

/// The elements of the Debian fixture, each later one staging the ones
/// before it.
const CHAIN: [&str; 3] = ["greet-lib.bst", "hello-c.bst", "report.bst"];

/// What `report.bst` records of the program it ran.
const REPORT_OUTPUT: &str = "hello, BuildStream, from greet-lib\n";

#[test]
fn debian_chain_on_the_farm_matches_the_local_sandbox() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let project = BstProject::debian()?;
    let remote = project.build("report.bst", Sandbox::remote(farm.url(), "buildstream"))?;
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
    eprintln!("remote build of the Debian chain: {:?}", remote.output.wall);
    let local = project.build("report.bst", Sandbox::Local)?;
    assert!(
        local.output.success,
        "local build failed:\n{}",
        local.output.log
    );
    eprintln!("local build of the Debian chain: {:?}", local.output.wall);

    let out = tempfile::tempdir()?;
    for element in CHAIN {
        let diffs = checkout_and_compare(&local, &remote, element, out.path())?;
        assert!(
            diffs.is_empty(),
            "{element}: local and remote artifacts differ:\n{}",
            diffs.join("\n")
        );
    }
    check_report(&out.path().join("remote-report.bst"))?;
    // hello-c's artifact brings its runtime dependency along.
    let hello = out.path().join("remote-hello-c.bst");
    for file in [
        "usr/bin/hello",
        "usr/lib/libgreet.so.1",
        "usr/include/greet.h",
    ] {
        assert!(hello.join(file).is_file(), "hello-c.bst lacks {file}");
    }
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// Two projects build the whole chain at once under two instance names;
/// both succeed remotely and produce the same artifacts.
#[test]
fn two_debian_builds_at_once() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let projects = [BstProject::debian()?, BstProject::debian()?];
    let names = ["buildstream/team-a", "buildstream/team-b"];
    let builds: Vec<anyhow::Result<BstBuild<'_>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = projects
            .iter()
            .zip(names)
            .map(|(project, name)| {
                let url = farm.url();
                scope.spawn(move || project.build("report.bst", Sandbox::remote(url, name)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("build thread"))
            .collect()
    });
    let mut done = Vec::new();
    for (name, build) in names.iter().zip(builds) {
        let build = build?;
        assert!(
            build.output.success,
            "{name}: remote build failed:\n{}",
            build.output.log
        );
        assert!(
            build
                .output
                .log
                .contains("Waiting for the remote build to complete"),
            "{name}: bst did not build remotely:\n{}",
            build.output.log
        );
        done.push(build);
    }
    let out = tempfile::tempdir()?;
    for element in CHAIN {
        let diffs = checkout_and_compare(&done[0], &done[1], element, out.path())?;
        assert!(
            diffs.is_empty(),
            "{element}: the two builds differ:\n{}",
            diffs.join("\n")
        );
    }
    check_report(&out.path().join("remote-report.bst"))?;
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// Checks `element` out of both builds (under `out/local-ELEMENT` and
/// `out/remote-ELEMENT`) and lists their differences.
fn checkout_and_compare(
    local: &BstBuild<'_>,
    remote: &BstBuild<'_>,
    element: &str,
    out: &Path,
) -> anyhow::Result<Vec<String>> {
    let left = out.join(format!("local-{element}"));
    let right = out.join(format!("remote-{element}"));
    local.session.checkout(element, &left)?;
    remote.session.checkout(element, &right)?;
    compare_trees(&left, &right)
}

/// The report names the program's output, both inputs and the root's gcc.
fn check_report(report: &Path) -> anyhow::Result<()> {
    let dir = report.join("usr/share/report");
    assert_eq!(std::fs::read_to_string(dir.join("output"))?, REPORT_OUTPUT);
    let inputs = std::fs::read_to_string(dir.join("inputs"))?;
    assert!(
        inputs.contains("/usr/bin/hello") && inputs.contains("/usr/lib/libgreet.so.1"),
        "{inputs}"
    );
    let compiler = std::fs::read_to_string(dir.join("compiler"))?;
    assert!(compiler.starts_with("gcc (Debian 12"), "{compiler}");
    Ok(())
}
