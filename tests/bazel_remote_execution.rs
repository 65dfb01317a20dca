//! Real Bazel 4.2.3 building on the whole farm (`corral up`) with remote
//! execution: actions run in Corral's sandbox on the host rootfs (instance
//! names other than `buildstream` get the host's system directories).

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_cas::Digest;
use corral_integration::bazel::Bazel;
use corral_integration::farm::CorralFarm;
use corral_integration::remote::{RemoteExec, FUNCTION};
use corral_integration::server::corral_binary;
use corral_proto::prost::Message;
use corral_proto::reapi;

fn remote_flags(farm: &CorralFarm) -> Vec<String> {
    Bazel::remote_execution_flags(&farm.grpc_url(), "main")
}

/// A genrule and a `cc_binary` run on the farm and the binary works; after
/// `bazel clean` everything is a remote cache hit; with
/// `--remote_accept_cached=false` the actions run again; a failing genrule
/// reports its exit code and stderr; `corral runner exec --action`
/// reproduces the genrule. The farm then stops cleanly.
#[test]
fn bazel_remote_execution_on_the_farm() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
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

    // One of Bazel's actions, reproduced by hand as a worker ran it.
    reproduce_the_genrule(&farm, &bazel)?;

    drop(bazel);
    let status = farm.stop()?;
    assert!(status.success(), "corral up exit: {status}");
    Ok(())
}

/// Finds the genrule's action in the farm's action cache (instance `main`),
/// runs `corral runner exec --action` on it, and checks that it prints what
/// the farm's run printed and produces the same `greeting.h` as Bazel got.
fn reproduce_the_genrule(farm: &CorralFarm, bazel: &Bazel) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&farm.url(), "main"))?;
    let mut found = None;
    for function in std::fs::read_dir(farm.data_dir().join("server/ac"))? {
        for instance in std::fs::read_dir(function?.path())? {
            for entry in std::fs::read_dir(instance?.path())? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                let Some((hash, size)) = name.split_once('-') else {
                    continue;
                };
                let digest = Digest::from_proto(
                    FUNCTION,
                    &reapi::Digest {
                        hash: hash.to_string(),
                        size_bytes: size.parse()?,
                    },
                )?;
                let action =
                    reapi::Action::decode(rt.block_on(client.get_blob(digest))?.as_slice())?;
                let command_digest = Digest::from_proto(
                    FUNCTION,
                    action.command_digest.as_ref().expect("command digest"),
                )?;
                let command = reapi::Command::decode(
                    rt.block_on(client.get_blob(command_digest))?.as_slice(),
                )?;
                if command.arguments.join(" ").contains("greeting.h") {
                    found = Some(digest);
                }
            }
        }
    }
    let digest = found.expect("the genrule's action is in the farm's action cache");
    let outputs = tempfile::tempdir()?;
    let out_dir = outputs.path().join("out");
    let run = std::process::Command::new(corral_binary()?)
        .args(["runner", "exec", "--action"])
        .arg(format!("{}/{}", digest.hash_hex(), digest.size()))
        .args(["--remote", &farm.url(), "--instance", "main", "--outputs"])
        .arg(&out_dir)
        .output()?;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The genrule prints nothing; its output is the file.
    assert_eq!(String::from_utf8_lossy(&run.stdout), "");
    let reproduced = find_file(&out_dir, "greeting.h").expect("greeting.h among the outputs");
    assert_eq!(
        std::fs::read_to_string(reproduced)?,
        std::fs::read_to_string(bazel.bin("greeting.h"))?
    );
    Ok(())
}

fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}
