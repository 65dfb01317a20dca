//! Real Bazel 4.2.3 against a real `corral server` used as a remote cache,
//! and the server process's own life cycle.

use corral_integration::bazel::Bazel;
use corral_integration::server::{CorralServer, ServerOptions};

/// Build, `bazel clean`, build again: the second build runs nothing
/// locally — every action is a remote cache hit — and the binary works.
/// The instance name has slashes to exercise that form of resource names.
#[test]
fn bazel_builds_from_the_remote_cache_after_clean() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let server = CorralServer::start()?;
    let bazel = Bazel::new("workspace")?;
    let flags = vec![
        format!("--remote_cache={}", server.grpc_url()),
        "--remote_instance_name=team/bazel/main".to_string(),
        "--spawn_strategy=processwrapper-sandbox".to_string(),
        "--genrule_strategy=processwrapper-sandbox".to_string(),
        "--remote_timeout=30".to_string(),
    ];
    let first = bazel.build(&["//:hello"], &flags)?;
    let summary = first
        .processes()
        .expect("no process summary in the first build");
    assert!(
        summary.count("processwrapper-sandbox") >= 3,
        "the first build should run genrule, compile and link locally: {summary:?}\n{}",
        first.stderr
    );
    assert_eq!(summary.count("remote cache hit"), 0, "{summary:?}");

    bazel.clean()?;
    let second = bazel.build(&["//:hello"], &flags)?;
    let summary = second
        .processes()
        .expect("no process summary in the second build");
    let hits = summary.count("remote cache hit");
    assert_eq!(
        hits + summary.count("internal"),
        summary.total,
        "every non-internal action should be a remote cache hit: {summary:?}\n{}",
        second.stderr
    );
    assert!(hits >= 3, "{summary:?}");

    let output = std::process::Command::new(bazel.bin("hello")).output()?;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from corral\n"
    );
    let status = server.stop()?;
    assert!(status.success(), "server exit: {status}");
    Ok(())
}

/// Blobs survive a restart on the same data directory; SIGTERM is a clean
/// exit; bad settings are refused with a message naming them.
#[test]
fn server_restarts_keep_blobs_and_sigterm_is_clean() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    use corral_cas::{Digest, DigestFunction, GrpcStore};

    let data = tempfile::tempdir()?;
    let options = ServerOptions {
        data_dir: Some(data.path().to_path_buf()),
        config_toml: Some("[cas]\nmax_batch_total_size_bytes = 1048576\n".into()),
        ..Default::default()
    };
    let blob = bytes_of(3 << 20);
    let digest = Digest::of_bytes(DigestFunction::Blake3, &blob);
    // A runtime per server, dropped before the server is stopped, so the
    // client's connection is closed rather than left idle.
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };

    let server = CorralServer::start_with(options.clone())?;
    runtime()?.block_on(async {
        let store = GrpcStore::connect(&server.url(), "").await?;
        store.put(&digest, blob.clone().into()).await?;
        anyhow::Ok(())
    })?;
    assert!(server.stop()?.success());

    let server = CorralServer::start_with(options)?;
    runtime()?.block_on(async {
        let store = GrpcStore::connect(&server.url(), "").await?;
        assert_eq!(store.get(&digest).await?, blob);
        anyhow::Ok(())
    })?;
    assert!(server.stop()?.success());

    let bad = CorralServer::start_with(ServerOptions {
        config_toml: Some("[cas]\nmax_cas_byte = 5\n".into()),
        ..Default::default()
    });
    let err = bad.err().expect("an unknown config field must be refused");
    assert!(
        err.to_string().contains("exited before it was ready"),
        "{err:#}"
    );
    Ok(())
}

fn bytes_of(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i.wrapping_mul(2654435761)) >> 13) as u8)
        .collect()
}
