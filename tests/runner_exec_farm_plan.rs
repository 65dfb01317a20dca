//! `corral runner exec --action` reproduces an action as the farm ran it,
//! from the run plan its worker recorded with the result, not from a
//! default farm's configuration:
//!
//! * a farm whose own `rootfs_by_instance`, `hostname_by_instance` and
//!   default timeout differ from the defaults: the reproduction sees the
//!   farm's rootfs and hostname and gets its timeout, with the same
//!   stdout, stderr, exit code and outputs as the farm;
//! * a `container-image` action: the reproduction pulls the very image
//!   digest that ran (the tag has moved on meanwhile) and gives the same
//!   outputs as the farm.
//!
//! Runs as root (as CI does) with busybox-static, docker-registry, umoci
//! and skopeo installed; cargo builds the `corral` it runs.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use corral_cas::Digest;
use corral_integration::farm::{CorralFarm, FarmOptions};
use corral_integration::registry::{host_arch, ManifestFormat, OciLayout, Registry};
use corral_integration::remote::{command, BusyboxRoot, RemoteExec, FUNCTION};
use corral_integration::server::corral_binary;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::worker::v1 as wire;

/// Longest a `corral runner exec` may take before the test gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// A farm unlike the default one: instance `custom` runs with the input
/// root as `/` (a default farm gives it the host's directories), under
/// the hostname `farmbox`, and actions without a timeout get 7 s.
const FARM: &str = r#"
[scheduler]
default_timeout_s = 7

[scheduler.rootfs_by_instance]
custom = "input-root"

[scheduler.hostname_by_instance]
custom = "farmbox"
"#;

const SCRIPT: &str = "echo \"host=$(cat /proc/sys/kernel/hostname)\"; echo \"pwd=$(pwd)\"; \
                      mkdir -p out; echo made > out/result.txt; echo to-stderr >&2";

/// `corral ARGS` with `env`, stdin closed, under a deadline.
fn corral(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = Command::new(corral_binary().unwrap())
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("corral {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory the sandbox's user (uid 65534) can traverse.
fn open_tempdir() -> tempfile::TempDir {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (as CI does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// `corral runner exec --action` of `action` on `url` under `instance`.
fn reproduce(
    url: &str,
    instance: &str,
    action: &Digest,
    cache: &Path,
    outputs: &Path,
    env: &[(&str, &str)],
) -> Output {
    let action = action.to_string();
    corral(
        &[
            "runner",
            "exec",
            "--action",
            &action,
            "--remote",
            url,
            "--instance",
            instance,
            "--cache",
            cache.to_str().unwrap(),
            "--outputs",
            outputs.to_str().unwrap(),
        ],
        env,
    )
}

/// The record the worker kept in the result's auxiliary metadata.
fn recorded_plan(result: &reapi::ActionResult) -> wire::RunPlan {
    let meta = result.execution_metadata.as_ref().expect("metadata");
    let any = meta
        .auxiliary_metadata
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/corral.worker.v1.RunPlan")
        .expect("a RunPlan in the auxiliary metadata");
    wire::RunPlan::decode(any.value.as_slice()).unwrap()
}

/// The content of output `path` of a result, read from the farm.
fn farm_output(
    rt: &tokio::runtime::Runtime,
    client: &RemoteExec,
    result: &reapi::ActionResult,
    path: &str,
) -> String {
    let file = result
        .output_files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no output {path} in {result:?}"));
    let digest = Digest::from_proto(FUNCTION, file.digest.as_ref().unwrap()).unwrap();
    text(&rt.block_on(client.get_blob(digest)).unwrap())
}

#[test]
fn a_farm_with_its_own_rootfs_hostname_and_timeout_is_reproduced_as_it_ran() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let tmp = open_tempdir();
    let farm = CorralFarm::start_with(FarmOptions {
        config_toml: Some(FARM.into()),
        ..Default::default()
    })
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(RemoteExec::connect(&farm.url(), "custom"))
        .unwrap();
    let root = BusyboxRoot::with_applets(&["sh", "cat", "mkdir"]).unwrap();
    rt.block_on(client.upload(&root.blobs)).unwrap();
    let mut cmd = command(["/bin/sh", "-c", SCRIPT], &[("PATH", "/bin")]);
    cmd.output_paths = vec!["out/result.txt".into()];
    let ran = rt
        .block_on(client.upload_action(root.root, cmd.clone(), b"ran".to_vec(), false, None))
        .unwrap();
    let response = rt.block_on(client.execute(ran, true)).unwrap();
    let result = response
        .result
        .clone()
        .unwrap_or_else(|| panic!("{response:?}"));
    assert_eq!(result.exit_code, 0, "{response:?}");
    let farm_stdout = rt.block_on(client.stdout(&result)).unwrap();
    assert_eq!(farm_stdout, "host=farmbox\npwd=/\n");
    let farm_result = farm_output(&rt, &client, &result, "out/result.txt");

    // The worker recorded the plan it used.
    let plan = recorded_plan(&result);
    assert_eq!(plan.rootfs, wire::RootfsMode::InputRoot as i32);
    assert_eq!(plan.hostname, "farmbox");
    assert_eq!(plan.limits.unwrap().timeout_ms, 7_000);

    // The reproduction: same stdout, stderr, exit code and outputs.
    let cache = tmp.path().join("cache");
    let outputs = tmp.path().join("outputs");
    let out = reproduce(&farm.url(), "custom", &ran, &cache, &outputs, &[]);
    assert_eq!(
        text(&out.stdout),
        farm_stdout,
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "to-stderr\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        fs::read_to_string(outputs.join("out/result.txt")).unwrap(),
        farm_result
    );

    // It says where the plan came from, with the farm's 7 s timeout.
    let logged = tmp.path().join("outputs-logged");
    let out = reproduce(
        &farm.url(),
        "custom",
        &ran,
        &cache,
        &logged,
        &[("RUST_LOG", "info")],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("reproducing the run of worker")
            && stderr.contains("rootfs input-root, hostname farmbox, timeout 7 s"),
        "{stderr}"
    );

    // Without a record (this action never ran, so the action cache has
    // no result for it), a default farm is assumed: the host's
    // directories and the default hostname, not what this farm does.
    let never_ran = rt
        .block_on(client.upload_action(root.root, cmd, b"never ran".to_vec(), false, None))
        .unwrap();
    let guessed = tmp.path().join("outputs-guessed");
    let out = reproduce(&farm.url(), "custom", &never_ran, &cache, &guessed, &[]);
    assert_eq!(
        text(&out.stdout),
        "host=corral\npwd=/work\n",
        "stderr: {}",
        text(&out.stderr)
    );

    drop(rt);
    assert!(farm.stop().unwrap().success());
}

/// A busybox image whose `/etc/which` says `which`, with `GREETING` in
/// its environment.
fn image(layout: &OciLayout, name: &str, which: &str) -> anyhow::Result<()> {
    layout.new_image(name, host_arch())?;
    layout.config(name, &["--config.env", "GREETING=from-the-image"])?;
    layout.add_layer(name, |root| {
        fs::create_dir_all(root.join("bin"))?;
        fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        for applet in ["sh", "cat", "mkdir"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        fs::create_dir_all(root.join("etc"))?;
        fs::write(root.join("etc/which"), format!("{which}\n"))?;
        Ok(())
    })
}

#[test]
fn a_container_image_action_is_reproduced_on_the_digest_that_ran() {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let tmp = open_tempdir();
    let registry = Registry::start().unwrap();
    let layout = OciLayout::create(&tmp.path().join("oci")).unwrap();
    image(&layout, "one", "first").unwrap();
    image(&layout, "two", "second").unwrap();
    let first = registry
        .push(&layout, "one", "corral/repro:latest", ManifestFormat::Oci)
        .unwrap();
    let reference = registry.reference("corral/repro:latest");

    let farm = CorralFarm::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(RemoteExec::connect(&farm.url(), "main"))
        .unwrap();
    let root = BusyboxRoot::new().unwrap();
    rt.block_on(client.upload(&root.blobs)).unwrap();
    let script = "cat /etc/which; echo \"greeting=$GREETING\"; mkdir -p out; \
                  cat /etc/which > out/which";
    let mut cmd = command(["/bin/sh", "-c", script], &[("PATH", "/bin")]);
    cmd.output_paths = vec!["out/which".into()];
    #[allow(deprecated)]
    if let Some(p) = cmd.platform.as_mut() {
        p.properties.push(reapi::platform::Property {
            name: "container-image".into(),
            value: reference.clone(),
        });
        p.properties.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let action = rt
        .block_on(client.upload_action(root.root, cmd, b"image".to_vec(), false, None))
        .unwrap();
    let response = rt.block_on(client.execute(action, true)).unwrap();
    let result = response
        .result
        .clone()
        .unwrap_or_else(|| panic!("{response:?}"));
    assert_eq!(result.exit_code, 0, "{response:?}");
    let farm_stdout = rt.block_on(client.stdout(&result)).unwrap();
    assert_eq!(farm_stdout, "first\ngreeting=from-the-image\n");
    let farm_which = farm_output(&rt, &client, &result, "out/which");
    let plan = recorded_plan(&result);
    let image = plan.image.expect("the image in the record");
    assert_eq!(image.requested, reference);
    assert_eq!(image.digest, first);

    // The tag moves on; the reproduction still runs what the farm ran.
    let second = registry
        .push(&layout, "two", "corral/repro:latest", ManifestFormat::Oci)
        .unwrap();
    assert_ne!(first, second);
    let outputs = tmp.path().join("outputs");
    let out = reproduce(
        &farm.url(),
        "main",
        &action,
        &tmp.path().join("cache"),
        &outputs,
        &[],
    );
    assert_eq!(
        text(&out.stdout),
        farm_stdout,
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        fs::read_to_string(outputs.join("out/which")).unwrap(),
        farm_which
    );

    drop(rt);
    assert!(farm.stop().unwrap().success());
}
