//! `container-image` through REAPI on the whole farm: what ran is recorded
//! in the result's auxiliary metadata, pinned to the digest the tag
//! resolved to, and a moved tag runs the new image.

use std::fs;

use corral_integration::farm::{CorralFarm, FarmOptions};
use corral_integration::registry::{host_arch, ManifestFormat, OciLayout, Registry};
use corral_integration::remote::{command, BusyboxRoot, RemoteExec};
use corral_integration::server::corral_binary;
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_proto::worker::v1::ResolvedImage;

/// A busybox image whose `/etc/which` says `which`.
fn image(layout: &OciLayout, name: &str, which: &str) -> anyhow::Result<()> {
    layout.new_image(name, host_arch())?;
    layout.add_layer(name, |root| {
        fs::create_dir_all(root.join("bin"))?;
        fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        for applet in ["sh", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        fs::create_dir_all(root.join("etc"))?;
        fs::write(root.join("etc/which"), format!("{which}\n"))?;
        Ok(())
    })
}

#[test]
fn results_record_the_image_digest_that_ran() -> anyhow::Result<()> {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    image(&layout, "one", "first")?;
    image(&layout, "two", "second")?;
    let first = registry.push(&layout, "one", "corral/moving:latest", ManifestFormat::Oci)?;
    let reference = registry.reference("corral/moving:latest");

    // Data where `corral up` keeps it by default, so that `corral images
    // list` below finds the worker's images with no flag either.
    let cache_home = tempfile::tempdir()?;
    fs::set_permissions(
        cache_home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let farm = CorralFarm::start_with(FarmOptions {
        cache_home: Some(cache_home.path().to_path_buf()),
        ..FarmOptions::default()
    })?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(RemoteExec::connect(&farm.url(), "main"))?;
    // The input root is irrelevant here; an empty directory will do.
    let root = BusyboxRoot::new()?;
    rt.block_on(client.upload(&root.blobs))?;
    let run = |salt: &str| -> anyhow::Result<(String, ResolvedImage)> {
        #[allow(deprecated)]
        let mut cmd = command(["/bin/sh", "-c", "cat /etc/which"], &[]);
        #[allow(deprecated)]
        if let Some(p) = cmd.platform.as_mut() {
            p.properties.push(reapi::platform::Property {
                name: "container-image".into(),
                value: reference.clone(),
            });
            p.properties.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let action = rt.block_on(client.upload_action(
            root.root,
            cmd,
            salt.as_bytes().to_vec(),
            true,
            None,
        ))?;
        let response = rt.block_on(client.execute(action, true))?;
        let result = response
            .result
            .clone()
            .unwrap_or_else(|| panic!("{response:?}"));
        assert_eq!(result.exit_code, 0, "{response:?}");
        let stdout = rt.block_on(client.stdout(&result))?;
        let meta = result.execution_metadata.expect("metadata");
        let any = meta
            .auxiliary_metadata
            .iter()
            .find(|a| a.type_url.ends_with("corral.worker.v1.ResolvedImage"))
            .expect("a ResolvedImage in the auxiliary metadata");
        Ok((stdout, ResolvedImage::decode(any.value.as_slice())?))
    };

    let (stdout, resolved) = run("first")?;
    assert_eq!(stdout, "first\n");
    assert_eq!(resolved.requested, reference);
    assert_eq!(resolved.digest, first);
    assert!(
        resolved.reference.ends_with(&format!("@{first}")),
        "{resolved:?}"
    );

    // The tag moves: the next action resolves it again and runs the new image.
    let second = registry.push(&layout, "two", "corral/moving:latest", ManifestFormat::Oci)?;
    assert_ne!(first, second);
    let (stdout, resolved) = run("second")?;
    assert_eq!(stdout, "second\n");
    assert_eq!(resolved.digest, second);

    drop(rt);
    let status = farm.stop()?;
    assert!(status.success());

    // `corral images list` with the same defaults shows what the farm's
    // worker pulled (it once looked in another directory than the worker).
    let listed = std::process::Command::new(corral_binary()?)
        .args(["images", "list"])
        .env("XDG_CACHE_HOME", cache_home.path())
        .output()?;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    for digest in [&first, &second] {
        assert!(
            text.contains(digest.as_str()),
            "{digest} not listed:\n{text}"
        );
    }
    Ok(())
}
