//! Real Bazel 4.2.3 building on the whole farm (`corral up`) with remote
//! execution: actions run in Corral's sandbox on the host rootfs (instance
//! names other than `buildstream` get the host's system directories).

use corral_integration::bazel::Bazel;
use corral_integration::farm::CorralFarm;

fn remote_flags(farm: &CorralFarm) -> Vec<String> {
    vec![
        format!("--remote_executor={}", farm.grpc_url()),
        "--remote_instance_name=main".to_string(),
        "--spawn_strategy=remote".to_string(),
        "--genrule_strategy=remote".to_string(),
        "--remote_timeout=120".to_string(),
    ]
}

/// A genrule and a `cc_binary` run on the farm and the binary works; after
/// `bazel clean` everything is a remote cache hit; with
/// `--remote_accept_cached=false` the actions run again; a failing genrule
/// reports its exit code and stderr. The farm then stops cleanly.
#[test]
fn bazel_remote_execution_on_the_farm() -> anyhow::Result<()> {
    let farm = CorralFarm::start()?;
    let bazel = Bazel::new("workspace")?;
    let flags = remote_flags(&farm);

    let first = bazel.build(&["//:hello"], &flags)?;
    let summary = first.processes().expect("no process summary");
    assert!(
        summary.count("remote") >= 3,
        "genrule, compile and link should run remotely: {summary:?}\n{}",
        first.stderr
    );
    let output = std::process::Command::new(bazel.bin("hello")).output()?;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from corral\n"
    );

    bazel.clean()?;
    let cached = bazel.build(&["//:hello"], &flags)?;
    let summary = cached.processes().expect("no process summary");
    let hits = summary.count("remote cache hit");
    assert!(hits >= 3, "{summary:?}\n{}", cached.stderr);
    assert_eq!(
        hits + summary.count("internal"),
        summary.total,
        "every action should be a cache hit after clean: {summary:?}"
    );

    bazel.clean()?;
    let mut again = flags.clone();
    again.push("--remote_accept_cached=false".into());
    let rerun = bazel.build(&["//:hello"], &again)?;
    let summary = rerun.processes().expect("no process summary");
    assert!(
        summary.count("remote") >= 3 && summary.count("remote cache hit") == 0,
        "with the cache refused the actions run again: {summary:?}\n{}",
        rerun.stderr
    );
    let output = std::process::Command::new(bazel.bin("hello")).output()?;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from corral\n"
    );

    let mut args = Bazel::offline_flags();
    args.extend(flags.iter().cloned());
    args.push("//:fails".into());
    let failed = bazel.run("build", &args)?;
    assert!(
        !failed.success,
        "the failing genrule built:\n{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("corral-bazel-failure-marker"),
        "its stderr should reach Bazel:\n{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("Exit 7"),
        "its exit code should reach Bazel:\n{}",
        failed.stderr
    );

    drop(bazel);
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}
