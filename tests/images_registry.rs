//! `corral-images` against a real registry: Debian's `docker-registry` on
//! 127.0.0.1, images built by `umoci` and pushed by `skopeo`.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use corral_images::{Error, ImageCache, ImageRef, ImagesConfig};
use corral_integration::registry::{host_arch, ManifestFormat, OciLayout, Registry};

type TestResult = anyhow::Result<()>;

fn config(text: &str) -> ImagesConfig {
    ImagesConfig::from_toml(text).expect("test config parses")
}

/// An image with `/etc/marker` = `marker` and an `Env`.
fn marker_image(layout: &OciLayout, name: &str, arch: &str, marker: &str) -> TestResult {
    layout.new_image(name, arch)?;
    layout.add_layer(name, |root| {
        fs::create_dir_all(root.join("etc"))?;
        fs::write(root.join("etc/marker"), marker)?;
        Ok(())
    })?;
    layout.config(
        name,
        &[
            "--config.env",
            "IMAGE_VAR=from-image",
            "--config.env",
            "PATH=/bin",
        ],
    )
}

fn read_in_layers(layers: &[std::path::PathBuf], rel: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .find_map(|l| fs::read_to_string(l.join(rel)).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_and_docker_v2s2_manifests_pull_by_tag_and_digest() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    marker_image(&layout, "base", host_arch(), "hello from the image\n")?;
    let oci_digest = registry.push(&layout, "base", "corral/base:oci", ManifestFormat::Oci)?;
    let v2_digest = registry.push(&layout, "base", "corral/base:v2s2", ManifestFormat::V2s2)?;
    assert_ne!(oci_digest, v2_digest, "two manifest formats, two digests");
    // skopeo reuses a blob a registry already has in another compression,
    // so the zstd variant goes to a registry of its own.
    let zstd_registry = Registry::start()?;
    let zstd_digest =
        zstd_registry.push(&layout, "base", "corral/base:zstd", ManifestFormat::OciZstd)?;

    let cache = ImageCache::open(&work.path().join("cache"), config(""))?;
    let mut layer_blobs = Vec::new();
    for (registry, tag, digest) in [
        (&registry, "oci", &oci_digest),
        (&registry, "v2s2", &v2_digest),
        (&zstd_registry, "zstd", &zstd_digest),
    ] {
        let reference = ImageRef::parse(&registry.reference(&format!("corral/base:{tag}")))?;
        let lease = cache.ensure(&reference).await?;
        assert_eq!(
            lease.digest(),
            digest.as_str(),
            "the tag resolved to what skopeo pushed"
        );
        assert_eq!(lease.reference().digest.as_deref(), Some(digest.as_str()));
        assert_eq!(
            read_in_layers(&lease.layer_dirs(), "etc/marker").as_deref(),
            Some("hello from the image\n")
        );
        assert!(
            lease.env().iter().any(|e| e == "IMAGE_VAR=from-image"),
            "{:?}",
            lease.env()
        );
        layer_blobs.push(lease.layer_digests().join(","));
    }
    assert_eq!(layer_blobs[0], layer_blobs[1]);
    assert_ne!(
        layer_blobs[0], layer_blobs[2],
        "the zstd push made its own blob"
    );
    // skopeo keeps the same gzip blob in the OCI and v2s2 manifests: that
    // layer is downloaded and unpacked once; the zstd one is another blob.
    assert_eq!(cache.stats().blob_downloads, 2, "{:?}", cache.stats());

    // By digest, with or without docker://, the warm path needs no pull.
    let before = cache.stats();
    let by_digest = ImageRef::parse(&format!("{}/corral/base@{oci_digest}", registry.addr()))?;
    let lease = cache.ensure(&by_digest).await?;
    assert_eq!(lease.digest(), oci_digest);
    assert_eq!(cache.stats(), before);
    let listed = cache.cached_images();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().any(|i| i
        .names
        .contains(&format!("{}/corral/base:oci", registry.addr()))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_opaque_dirs_show_the_right_files_through_overlayfs() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    layout.new_image("layers", host_arch())?;
    layout.add_layer("layers", |root| {
        for (path, body) in [
            ("a/keep", "keep"),
            ("a/gone", "gone"),
            ("d/old1", "old"),
            ("d/sub/old2", "old"),
        ] {
            fs::create_dir_all(root.join(path).parent().unwrap_or(root))?;
            fs::write(root.join(path), body)?;
        }
        Ok(())
    })?;
    // umoci turns a deleted file into a `.wh.` whiteout.
    layout.add_layer("layers", |root| Ok(fs::remove_file(root.join("a/gone"))?))?;
    // An opaque directory, written verbatim.
    let tree = work.path().join("opaque-tree");
    fs::create_dir_all(tree.join("d"))?;
    fs::write(tree.join("d/.wh..wh..opq"), "")?;
    fs::write(tree.join("d/new"), "new")?;
    layout.add_tree_layer("layers", &tree)?;
    registry.push(&layout, "layers", "corral/layers:1", ManifestFormat::Oci)?;

    let cache = ImageCache::open(&work.path().join("cache"), config(""))?;
    let lease = cache
        .ensure(&ImageRef::parse(&registry.reference("corral/layers:1"))?)
        .await?;
    assert_eq!(lease.layer_dirs().len(), 3);

    // Mount the layers the way the runner will: read-only overlay lower
    // directories, `userxattr`, inside an unprivileged user namespace.
    let merged = work.path().join("merged");
    fs::create_dir(&merged)?;
    let script = format!(
        "mount -t overlay overlay -o ro,userxattr,lowerdir={} {} && cd {} && find . -mindepth 1 | sort",
        lease.overlay_lowerdir(),
        merged.display(),
        merged.display()
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run unshare (util-linux): {e}"))?;
    assert!(
        out.status.success(),
        "overlay mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout)?;
    assert_eq!(
        listing, "./a\n./a/keep\n./d\n./d/new\n",
        "merged view:\n{listing}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_yields_the_workers_platform() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    marker_image(&layout, "native", host_arch(), "native")?;
    marker_image(&layout, "foreign", other, "foreign")?;
    layout.make_index("multi", &["native", "foreign"])?;
    let index_digest = registry.push_all(&layout, "multi", "corral/multi:1")?;
    let native_manifest = layout.manifest_digest("native")?;
    let reference = ImageRef::parse(&registry.reference("corral/multi:1"))?;

    let cache = ImageCache::open(&work.path().join("cache"), config(""))?;
    let lease = cache.ensure(&reference).await?;
    assert_eq!(
        lease.digest(),
        index_digest,
        "the tag resolves to the index"
    );
    assert_eq!(lease.manifest_digest(), native_manifest);
    assert_eq!(
        read_in_layers(&lease.layer_dirs(), "etc/marker").as_deref(),
        Some("native")
    );
    // The platform manifest's own digest reaches the same cached image.
    let before = cache.stats();
    let by_manifest = cache
        .ensure(&reference.with_digest(&native_manifest))
        .await?;
    assert_eq!(by_manifest.digest(), native_manifest);
    assert_eq!(by_manifest.layer_dirs(), lease.layer_dirs());
    assert_eq!(cache.stats(), before, "served from the cache");
    drop(by_manifest);
    drop(lease);
    drop(cache);

    let cfg = config(&format!("platform = \"linux/{other}\""));
    let cache = ImageCache::open(&work.path().join("cache2"), cfg)?;
    let lease = cache.ensure(&reference).await?;
    assert_eq!(
        read_in_layers(&lease.layer_dirs(), "etc/marker").as_deref(),
        Some("foreign")
    );

    let cfg = config("platform = \"linux/s390x\"");
    let cache = ImageCache::open(&work.path().join("cache3"), cfg)?;
    let err = cache.ensure(&reference).await.unwrap_err();
    assert!(matches!(err, Error::NoPlatform { .. }), "{err}");
    assert!(
        err.to_string().contains("linux/s390x") && err.to_string().contains("corral/multi"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_and_corrupted_layers_fail_clearly() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    marker_image(&layout, "base", host_arch(), "x")?;
    registry.push(&layout, "base", "corral/good:1", ManifestFormat::Oci)?;
    let cache = ImageCache::open(&work.path().join("cache"), config(""))?;

    for missing in ["corral/nope:1", "corral/good:missing-tag"] {
        let reference = ImageRef::parse(&registry.reference(missing))?;
        let err = cache.ensure(&reference).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Registry { .. }), "{text}");
        assert!(text.contains(missing), "names the image: {text}");
        assert!(text.to_lowercase().contains("unknown"), "says why: {text}");
    }

    let layer = layout.layer_digests("base")?.pop().expect("one layer");
    registry.corrupt_blob(&layer)?;
    let reference = ImageRef::parse(&registry.reference("corral/good:1"))?;
    for _ in 0..2 {
        let err = cache.ensure(&reference).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{text}");
        assert!(
            text.contains("corral/good") && text.contains(&layer),
            "{text}"
        );
    }
    assert!(
        cache.cached_images().is_empty(),
        "nothing half-pulled is listed"
    );
    assert_eq!(
        cache.used_bytes(),
        0,
        "no layer from the corrupt blob was kept"
    );

    // Nothing outside the allowed list is even asked for.
    let strict = ImageCache::open(
        &work.path().join("strict"),
        config("allowed = [\"registry.example/ok\"]"),
    )?;
    let err = strict.ensure(&reference).await.unwrap_err();
    assert!(matches!(err, Error::NotAllowed { .. }), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_pull_once_and_leases_block_eviction() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    marker_image(&layout, "one", host_arch(), "one")?;
    layout.add_layer("one", |root| {
        Ok(fs::write(root.join("second"), vec![7u8; 4096])?)
    })?;
    marker_image(&layout, "two", host_arch(), "two-is-different")?;
    let one_digest = registry.push(&layout, "one", "corral/one:1", ManifestFormat::Oci)?;
    registry.push(&layout, "two", "corral/two:1", ManifestFormat::Oci)?;

    // A bound so small that only the image in use fits.
    let cache = ImageCache::open(&work.path().join("cache"), config("max_cache_bytes = 1"))?;
    let one = ImageRef::parse(&registry.reference("corral/one:1"))?;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            let one = one.clone();
            tokio::spawn(async move { cache.ensure(&one).await })
        })
        .collect();
    let mut leases = Vec::new();
    for t in tasks {
        leases.push(t.await??);
    }
    assert!(leases.iter().all(|l| l.digest() == one_digest));
    let stats = cache.stats();
    assert_eq!(stats.manifest_pulls, 1, "{stats:?}");
    assert_eq!(
        stats.blob_downloads, 2,
        "two layers, each downloaded once: {stats:?}"
    );

    // While leased, image one survives pulling image two over the bound.
    let two = cache
        .ensure(&ImageRef::parse(&registry.reference("corral/two:1"))?)
        .await?;
    for lease in &leases {
        for dir in lease.layer_dirs() {
            assert!(dir.is_dir(), "leased layer evicted: {}", dir.display());
        }
    }
    drop(leases);
    drop(two);
    // The next pull evicts what nobody holds, least recently used first.
    let again = cache.ensure(&one).await?;
    assert!(cache.cached_images().iter().all(|i| i.digest == one_digest));
    drop(again);
    let report = cache.prune()?;
    assert!(report.layers_removed >= 1, "{report:?}");
    assert!(cache.cached_images().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_images_run_without_the_registry_and_layouts_import_offline() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    marker_image(&layout, "airgap", host_arch(), "imported")?;
    let (digest, tagged, by_digest);
    {
        let registry = Registry::start()?;
        digest = registry.push(&layout, "airgap", "corral/airgap:1", ManifestFormat::Oci)?;
        tagged = ImageRef::parse(&registry.reference("corral/airgap:1"))?;
        by_digest = tagged.with_digest(&digest);
        let cache = ImageCache::open(&work.path().join("cache"), config(""))?;
        cache.ensure(&tagged).await?;
    }
    // The registry is gone: a digest still works, a tag cannot be resolved
    // and says so instead of silently using the cached image.
    let cache = Arc::new(ImageCache::open(&work.path().join("cache"), config(""))?);
    assert_eq!(cache.ensure(&by_digest).await?.digest(), digest);
    let err = cache.ensure(&tagged).await.unwrap_err();
    assert!(
        matches!(err, Error::Registry { .. }) && err.to_string().contains("corral/airgap:1"),
        "{err}"
    );
    drop(cache);

    // Offline mode answers tags from the cache's own records.
    let offline = ImageCache::open(&work.path().join("cache"), config("offline = true"))?;
    assert_eq!(offline.ensure(&tagged).await?.digest(), digest);
    drop(offline);

    // An air-gapped worker imports the layout and runs it by tag or digest.
    let fresh = ImageCache::open(&work.path().join("fresh"), config("offline = true"))?;
    let err = fresh.ensure(&tagged).await.unwrap_err();
    assert!(matches!(err, Error::NotCached { .. }), "{err}");
    let name = ImageRef::parse("docker://registry.internal/corral/airgap:airgap")?;
    let imported = fresh.import_layout(layout.path(), Some(&name)).await?;
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].digest, digest);
    let lease = fresh.ensure(&name).await?;
    assert_eq!(
        read_in_layers(&lease.layer_dirs(), "etc/marker").as_deref(),
        Some("imported")
    );
    assert_eq!(fresh.ensure(&by_digest).await?.digest(), digest);
    Ok(())
}

#[test]
fn a_second_process_cannot_open_a_cache_in_use() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let work = tempfile::tempdir()?;
    let _cache = ImageCache::open(work.path(), config(""))?;
    let err = ImageCache::open(work.path(), config(""))
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("in use")),
        "{err:?}"
    );
    assert!(Path::new(&work.path().join("lock")).exists());
    Ok(())
}

/// bcrypt of "s3cret" at cost 4, so the registry checks it fast; made with Python's
/// `crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`.
const S3CRET_BCRYPT: &str = "$2b$04$tzJRia6PMvNfqos1S0tCV.wiVV4ot2Ybdwce38eMTYy.uEnlyDQ6e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_config_per_registry() -> TestResult {
    corral_integration::use_corral(env!("CARGO_BIN_EXE_corral"));
    let registry = Registry::start_with_auth("corral", "s3cret", S3CRET_BCRYPT)?;
    let work = tempfile::tempdir()?;
    let layout = OciLayout::create(&work.path().join("oci"))?;
    marker_image(&layout, "private", host_arch(), "private")?;
    registry.push(&layout, "private", "corral/private:1", ManifestFormat::Oci)?;
    let reference = ImageRef::parse(&registry.reference("corral/private:1"))?;

    let anonymous = ImageCache::open(&work.path().join("anon"), config(""))?;
    let err = anonymous.ensure(&reference).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Registry { .. }), "{text}");
    assert!(text.contains("corral/private:1"), "{text}");
    assert!(text.to_lowercase().contains("authoriz"), "says why: {text}");

    let password_file = work.path().join("password");
    fs::write(&password_file, "s3cret\n")?;
    let wrong = format!(
        "[registries.\"{}\"]\nusername = \"corral\"\npassword = \"wrong\"\n",
        registry.addr()
    );
    let err = ImageCache::open(&work.path().join("wrong"), config(&wrong))?
        .ensure(&reference)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");

    let right = format!(
        "[registries.\"{}\"]\nusername = \"corral\"\npassword_file = \"{}\"\n",
        registry.addr(),
        password_file.display()
    );
    let cache = ImageCache::open(&work.path().join("authed"), config(&right))?;
    let lease = cache.ensure(&reference).await?;
    assert_eq!(
        read_in_layers(&lease.layer_dirs(), "etc/marker").as_deref(),
        Some("private")
    );
    Ok(())
}
