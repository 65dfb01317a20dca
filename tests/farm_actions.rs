//! REAPI actions on the whole farm (`corral up`) that no build tool in the
//! other tests sends: a working directory the input root lacks, BuildStream's
//! uid/gid, a timeout, and a hostile input tree; and a farm whose data
//! directory is on a file system of its own.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use corral_cas::Digest;
use corral_integration::farm::CorralFarm;
use corral_integration::remote::{command, message_blob, BusyboxRoot, RemoteExec, FUNCTION};
use corral_proto::reapi;

const APPLETS: &[&str] = &["sh", "pwd", "id", "sleep", "echo", "true"];

/// A client of `farm` with a busybox root of [`APPLETS`] uploaded.
struct Caller {
    rt: tokio::runtime::Runtime,
    client: RemoteExec,
    root: BusyboxRoot,
}

impl Caller {
    fn of(farm: &CorralFarm) -> anyhow::Result<Caller> {
        let rt = tokio::runtime::Runtime::new()?;
        let client = rt.block_on(RemoteExec::connect(&farm.url(), "buildstream"))?;
        let root = BusyboxRoot::with_applets(APPLETS)?;
        rt.block_on(client.upload(&root.blobs))?;
        Ok(Caller { rt, client, root })
    }

    /// Executes `cmd` in the busybox root, not cached, salted with `salt`.
    fn run(
        &self,
        cmd: reapi::Command,
        salt: &str,
        timeout: Option<Duration>,
    ) -> anyhow::Result<reapi::ExecuteResponse> {
        let action = self.rt.block_on(self.client.upload_action(
            self.root.root,
            cmd,
            salt.as_bytes().to_vec(),
            true,
            timeout,
        ))?;
        self.rt.block_on(self.client.execute(action, true))
    }

    /// What `r`'s command printed.
    fn stdout(&self, r: &reapi::ActionResult) -> String {
        self.rt
            .block_on(self.client.stdout(r))
            .expect("the result's stdout")
    }
}

#[test]
fn actions_the_build_tools_do_not_send() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let farm = CorralFarm::start()?;
    let caller = Caller::of(&farm)?;
    let (rt, client) = (&caller.rt, &caller.client);
    let run = |cmd, salt, timeout| caller.run(cmd, salt, timeout);

    // A working directory the input root lacks: the worker creates it.
    let mut cmd = command(["sh", "-c", "pwd"], &[("PATH", "/bin")]);
    cmd.working_directory = "made/by/the/worker".into();
    let r = run(cmd, "cwd", None)?;
    let result = r.result.clone().expect("result");
    assert_eq!(result.exit_code, 0, "{r:?}");
    assert_eq!(caller.stdout(&result), "/made/by/the/worker\n");

    // BuildStream's unixUID/unixGID.
    #[allow(deprecated)]
    let mut cmd = command(["sh", "-c", "id -u; id -g"], &[("PATH", "/bin")]);
    #[allow(deprecated)]
    if let Some(platform) = cmd.platform.as_mut() {
        for (name, value) in [("unixGID", "1234"), ("unixUID", "1000")] {
            platform.properties.push(reapi::platform::Property {
                name: name.into(),
                value: value.into(),
            });
        }
        platform.properties.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let r = run(cmd, "uid", None)?;
    let result = r
        .result
        .clone()
        .unwrap_or_else(|| panic!("no result: {r:?}"));
    assert_eq!(result.exit_code, 0, "{r:?}");
    assert_eq!(caller.stdout(&result), "1000\n1234\n");

    // A timeout: DEADLINE_EXCEEDED, with the partial result.
    let cmd = command(["sh", "-c", "echo started; sleep 30"], &[("PATH", "/bin")]);
    let r = run(cmd, "timeout", Some(Duration::from_secs(1)))?;
    let status = r.status.clone().unwrap_or_default();
    assert_eq!(status.code, tonic::Code::DeadlineExceeded as i32, "{r:?}");
    let result = r.result.clone().expect("the partial result");
    assert_eq!(caller.stdout(&result), "started\n");

    // A hostile input tree: refused naming the bad name, nothing runs, the
    // farm keeps serving.
    let file = Digest::of_bytes(FUNCTION, b"x");
    let evil = reapi::Directory {
        files: vec![reapi::FileNode {
            name: "../escape".into(),
            digest: Some(file.to_proto()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (evil_digest, evil_bytes) = message_blob(&evil);
    rt.block_on(client.upload(&BTreeMap::from([
        (file, b"x".to_vec()),
        (evil_digest, evil_bytes),
    ])))?;
    let action = rt.block_on(client.upload_action(
        evil_digest,
        command(["/bin/true"], &[]),
        b"hostile".to_vec(),
        true,
        None,
    ))?;
    let r = rt.block_on(client.execute(action, true))?;
    let status = r.status.clone().unwrap_or_default();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32, "{r:?}");
    assert!(status.message.contains("../escape"), "{}", status.message);
    let cmd = command(["sh", "-c", "echo still serving"], &[("PATH", "/bin")]);
    let r = run(cmd, "after-hostile", None)?;
    assert_eq!(caller.stdout(&r.result.expect("result")), "still serving\n");

    drop(caller);
    let status = farm.stop()?;
    assert!(status.success());
    Ok(())
}

/// A farm whose data directory is on a file system of its own (here the
/// tmpfs of `/dev/shm`; on a server, a data disk on `/var/cache`): the
/// staged input root and the action's scratch directory are overlay
/// layers below the host's `/`, which overlayfs refused until each was
/// copied on its own (docs/sandbox.md).
#[test]
fn a_farm_whose_data_is_on_a_file_system_of_its_own_runs_actions() -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let home = tempfile::tempdir_in("/dev/shm")?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755))?;
    assert_ne!(
        std::fs::metadata(home.path())?.dev(),
        std::fs::metadata("/")?.dev(),
        "/dev/shm is not a file system of its own"
    );
    let farm = CorralFarm::start_with(corral_integration::farm::FarmOptions {
        cache_home: Some(home.path().to_path_buf()),
        ..Default::default()
    })?;
    let caller = Caller::of(&farm)?;
    for salt in ["first", "second"] {
        let cmd = command(
            [
                "sh",
                "-c",
                "echo written > /out; echo $(pwd) read $(echo /bin/*)",
            ],
            &[("PATH", "/bin")],
        );
        let r = caller.run(cmd, salt, None)?;
        let result = r
            .result
            .clone()
            .unwrap_or_else(|| panic!("no result: {r:?}"));
        assert_eq!(result.exit_code, 0, "{r:?}");
        let out = caller.stdout(&result);
        assert!(out.starts_with("/ read /bin/"), "{salt}: {out}");
        assert!(out.contains("/bin/sh"), "{salt}: {out}");
    }
    assert!(farm.data_dir().starts_with(home.path()));
    farm.stop()?;
    Ok(())
}
