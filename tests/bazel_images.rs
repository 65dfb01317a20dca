//! Bazel choosing the image of its actions with `container-image` on the
//! whole farm: images made with `umoci`, pushed by `skopeo` to Debian's
//! `docker-registry` on 127.0.0.1, pulled by the worker.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use corral_integration::bazel::Bazel;
use corral_integration::farm::CorralFarm;
use corral_integration::registry::{host_arch, ManifestFormat, OciLayout, Registry};

/// Copies `/bin/bash` and the shared libraries `ldd` names into `root`, at
/// the same paths: Bazel runs every genrule with `/bin/bash -c`.
fn add_bash(root: &Path) -> anyhow::Result<()> {
    let ldd = Command::new("ldd").arg("/bin/bash").output()?;
    anyhow::ensure!(ldd.status.success(), "ldd /bin/bash failed");
    let mut files = vec!["/bin/bash".to_string()];
    for line in String::from_utf8(ldd.stdout)?.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("a parent"))?;
        fs::copy(fs::canonicalize(&f)?, &dest)?;
    }
    Ok(())
}

/// An image: busybox and bash, `/etc/corral-image-marker` = `marker`, a
/// second layer that deletes `/etc/corral-gone` (a whiteout), an `Env`.
fn probe_image(layout: &OciLayout, name: &str, marker: &str) -> anyhow::Result<()> {
    layout.new_image(name, host_arch())?;
    layout.add_layer(name, |root| {
        fs::create_dir_all(root.join("bin"))?;
        fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        for applet in ["sh", "cat", "echo", "test", "mkdir", "rm", "ls"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        add_bash(root)?;
        fs::create_dir_all(root.join("etc"))?;
        fs::write(root.join("etc/corral-image-marker"), format!("{marker}\n"))?;
        fs::write(root.join("etc/corral-gone"), "deleted by the next layer\n")?;
        Ok(())
    })?;
    layout.add_layer(name, |root| {
        Ok(fs::remove_file(root.join("etc/corral-gone"))?)
    })?;
    layout.config(name, &["--config.env", "IMAGE_VAR=from-image-env"])?;
    Ok(())
}

fn flags(farm: &CorralFarm, image: &str) -> Vec<String> {
    let mut flags = Bazel::remote_execution_flags(&farm.grpc_url(), "images");
    flags.push(format!(
        "--remote_default_exec_properties=container-image={image}"
    ));
    flags
}

/// The action runs in the image it names, two images give two results, the
/// layers' whiteout holds, the image's Env is the base environment; an
/// unknown image fails the build with a message naming it.
#[test]
fn bazel_actions_run_in_the_image_they_name() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    probe_image(&layout, "a", "image A")?;
    probe_image(&layout, "b", "image B")?;
    let digest_a = registry.push(&layout, "a", "corral/probe:a", ManifestFormat::Oci)?;
    let digest_b = registry.push(&layout, "b", "corral/probe:b", ManifestFormat::V2s2)?;
    let by_digest = |d: &str| format!("docker://{}/corral/probe@{d}", registry.addr());

    let farm = CorralFarm::start()?;
    let bazel = Bazel::new("workspace")?;
    bazel.build(&["//:image_probe"], &flags(&farm, &by_digest(&digest_a)))?;
    let out = fs::read_to_string(bazel.bin("image_probe.txt"))?;
    assert_eq!(out, "image A\nwhiteout-ok\nfrom-image-env\n");

    bazel.build(&["//:image_probe"], &flags(&farm, &by_digest(&digest_b)))?;
    let out = fs::read_to_string(bazel.bin("image_probe.txt"))?;
    assert_eq!(out, "image B\nwhiteout-ok\nfrom-image-env\n");

    // By tag too: the worker resolves it.
    bazel.clean()?;
    let mut tagged = flags(&farm, &registry.reference("corral/probe:a"));
    tagged.push("--remote_accept_cached=false".into());
    bazel.build(&["//:image_probe"], &tagged)?;
    let out = fs::read_to_string(bazel.bin("image_probe.txt"))?;
    assert!(out.starts_with("image A\n"), "{out}");

    let unknown = registry.reference("corral/nope:missing");
    let mut args = Bazel::offline_flags();
    args.extend(flags(&farm, &unknown));
    args.push("//:image_probe".into());
    let failed = bazel.run("build", &args)?;
    assert!(!failed.success, "an unknown image must fail the build");
    assert!(
        failed.stderr.contains("corral/nope"),
        "the failure should name the image:\n{}",
        failed.stderr
    );

    drop(bazel);
    let status = farm.stop()?;
    assert!(status.success());
    Ok(())
}
