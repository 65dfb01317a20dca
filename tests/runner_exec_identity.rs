//! `corral runner exec --root DIR` gives the action's user DIR's
//! directories as the farm gives it a staged input root's: run as root on a
//! busybox root owned by root, `echo x > /etc/f` succeeds, as the same
//! command does on the farm, and `/etc` looks the same from inside both.
//! DIR itself is never written.
//!
//! Runs as root (as CI does) with Debian's busybox-static; cargo builds
//! the `corral` it runs.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};
use std::time::Duration;

use corral_integration::bench::sandbox::busybox_root;
use corral_integration::farm::CorralFarm;
use corral_integration::process::output_within;
use corral_integration::remote::{command, BusyboxRoot, RemoteExec};
use corral_integration::server::corral_binary;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Writes into a directory of the root, then says how `/etc` looks.
const SCRIPT: &str = "echo x > /etc/f && cat /etc/f && stat -c '%u %g %a' /etc";

/// Runs `corral ARGS`. `runner exec`'s service gets a runtime directory of
/// its own, whose removal here makes it leave.
fn corral(args: &[&str]) -> Output {
    let runtime = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(corral_binary().unwrap());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("XDG_RUNTIME_DIR", runtime.path());
    output_within(&mut cmd, RUN_TIMEOUT).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A busybox root owned by root, as a new user would make it.
fn root_owned_busybox(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    busybox_root(&root).unwrap();
    let etc = fs::metadata(root.join("etc")).unwrap();
    assert_eq!((etc.uid(), etc.gid()), (0, 0));
    root
}

#[test]
fn exec_on_a_root_owned_root_writes_where_the_farm_writes() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let tmp = tempfile::tempdir().unwrap();
    let root = root_owned_busybox(&tmp);
    let out = corral(&[
        "runner",
        "exec",
        "--root",
        root.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    let local = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(local, "x\n0 0 755\n");
    // The root itself is untouched.
    assert!(!root.join("etc/f").exists());
    assert_eq!(fs::metadata(root.join("etc")).unwrap().uid(), 0);

    // The same command on the farm (input root as `/`, as for BuildStream).
    let farm = CorralFarm::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(RemoteExec::connect(&farm.url(), "buildstream"))
        .unwrap();
    let input = BusyboxRoot::with_applets(&["sh", "cat", "stat"])
        .unwrap()
        .with_file("etc/hostname", "x\n", false)
        .unwrap();
    rt.block_on(client.upload(&input.blobs)).unwrap();
    let cmd = command(["/bin/sh", "-c", SCRIPT], &[("PATH", "/bin")]);
    let action = rt
        .block_on(client.upload_action(input.root, cmd, b"identity".to_vec(), true, None))
        .unwrap();
    let response = rt.block_on(client.execute(action, true)).unwrap();
    let result = response
        .result
        .clone()
        .unwrap_or_else(|| panic!("{response:?}"));
    assert_eq!(result.exit_code, 0, "{response:?}");
    assert_eq!(rt.block_on(client.stdout(&result)).unwrap(), local);
    drop(rt);
    assert!(farm.stop().unwrap().success());
}

#[test]
fn keep_keeps_the_scratch_directory_with_what_the_command_changed() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let tmp = tempfile::tempdir().unwrap();
    let root = root_owned_busybox(&tmp);
    let out = corral(&[
        "runner",
        "exec",
        "--keep",
        "--root",
        root.to_str().unwrap(),
        "--",
        "/bin/sh",
        "-c",
        "echo y > /etc/g",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("corral: scratch directory kept at "))
        .unwrap_or_else(|| panic!("no kept scratch directory in {stderr:?}"));
    assert_eq!(
        fs::read_to_string(std::path::Path::new(kept).join("upper/etc/g")).unwrap(),
        "y\n"
    );
    fs::remove_dir_all(kept).unwrap();
}
