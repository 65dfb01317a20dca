//! The unpack bounds through the cache: an OCI layout holding a bomb is
//! imported, and the layer is refused, not cached, and nothing of it stays
//! in the cache directory.

// Test code: a panic is the failure report, so unwrap/expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use corral_images::{Bound, Error, ImageCache, ImagesConfig};
use serde_json::json;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn tar_header(name: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// A layer holding one file of `size` zeros (a multiple of 8 MiB), gzipped
/// as concatenated members so that a gigabyte takes moments to make.
/// Returns the blob and its DiffID.
fn zero_layer(name: &str, size: u64) -> (Vec<u8>, String) {
    let block = vec![0u8; 8 * MIB as usize];
    let packed = gzip(&block);
    let mut blob = gzip(&tar_header(name, size));
    let mut diff = Sha256::new();
    diff.update(tar_header(name, size));
    for _ in 0..size / (8 * MIB) {
        blob.extend_from_slice(&packed);
        diff.update(&block);
    }
    blob.extend(gzip(&[0u8; 1024]));
    diff.update([0u8; 1024]);
    (blob, format!("sha256:{}", hex::encode(diff.finalize())))
}

fn put_blob(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let digest = sha256(bytes);
    let hex = digest.trim_start_matches("sha256:");
    fs::write(dir.join("blobs/sha256").join(hex), bytes).unwrap();
    json!({ "digest": digest, "size": bytes.len() })
}

/// Writes an OCI image layout of one image with `layers` (blob, DiffID).
fn write_layout(dir: &Path, layers: &[(Vec<u8>, String)]) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "config": {},
    });
    let mut config_desc = put_blob(dir, config.to_string().as_bytes());
    config_desc["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|(blob, _)| {
            let mut desc = put_blob(dir, blob);
            desc["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
            desc
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    });
    let mut manifest_desc = put_blob(dir, manifest.to_string().as_bytes());
    manifest_desc["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
    let index = json!({ "schemaVersion": 2, "manifests": [manifest_desc] });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// Waits until `dir` is empty: a layer still unpacking when its image
/// failed stops at its next read and removes its directory itself.
fn wait_until_empty(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<_> = fs::read_dir(dir).unwrap().collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left in {}: {left:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_bomb_layer_is_refused_not_cached_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let (bomb, diff_id) = zero_layer("zeros", 1 << 30);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let bomb_digest = sha256(&bomb);
    write_layout(&layout, &[(bomb, diff_id)]);
    let config = ImagesConfig::from_toml("max_layer_bytes = 67108864").unwrap();
    let cache = ImageCache::open(&tmp.path().join("cache"), config).unwrap();

    let err = cache.import_layout(&layout, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::TooLarge { bound: Bound::LayerBytes, limit, .. } if limit == 64 * MIB),
        "{text}"
    );
    assert!(text.contains(&bomb_digest), "names the layer: {text}");
    assert!(
        text.contains("67108864") && text.contains("max_layer_bytes"),
        "{text}"
    );

    assert!(cache.cached_images().is_empty());
    assert_eq!(cache.used_bytes(), 0, "the layer is not cached");
    wait_until_empty(&cache.root().join("tmp"));
    wait_until_empty(&cache.root().join("layers/sha256"));
}

#[tokio::test]
async fn an_image_past_max_image_bytes_is_refused_though_each_layer_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let layers: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| zero_layer(name, 8 * MIB))
        .collect();
    write_layout(&layout, &layers);
    let config = ImagesConfig::from_toml("max_image_bytes = 20971520").unwrap();
    let cache = ImageCache::open(&tmp.path().join("cache"), config).unwrap();

    let err = cache.import_layout(&layout, None).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::TooLarge { bound: Bound::ImageBytes, limit, .. } if limit == 20 * MIB),
        "{text}"
    );
    assert!(text.contains("max_image_bytes"), "{text}");
    assert!(cache.cached_images().is_empty());
    wait_until_empty(&cache.root().join("tmp"));

    // Within the bound, the same image imports.
    drop(cache);
    let config = ImagesConfig::from_toml("max_image_bytes = 33554432").unwrap();
    let cache = ImageCache::open(&tmp.path().join("cache"), config).unwrap();
    cache.import_layout(&layout, None).await.unwrap();
    assert_eq!(cache.cached_images().len(), 1);
}

/// A layer whose descriptor alone names more bytes than `max_layer_bytes`
/// is refused before any of it is fetched: a compressed layer never
/// unpacks to less than its own size (give or take a header).
#[tokio::test]
async fn a_layer_whose_descriptor_names_more_than_the_bound_is_not_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    // Random bytes do not compress: the blob is as large as its contents.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..2 * MIB)
        .map(|_| {
            // xorshift64: cheap bytes that gzip cannot shrink.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let mut tar = tar_header("noise", noise.len() as u64);
    tar.extend_from_slice(&noise);
    tar.extend_from_slice(&[0u8; 1024 + 512]);
    let diff_id = sha256(&tar);
    let blob = gzip(&tar);
    assert!(blob.len() as u64 > MIB, "{} bytes", blob.len());
    write_layout(&layout, &[(blob, diff_id)]);
    let config = ImagesConfig::from_toml("max_layer_bytes = 1048576").unwrap();
    let cache = ImageCache::open(&tmp.path().join("cache"), config).unwrap();
    let err = cache.import_layout(&layout, None).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { bound: Bound::LayerBytes, limit, .. } if limit == MIB),
        "{err}"
    );
    assert_eq!(cache.stats().blob_downloads, 0, "the layer was fetched");
    assert!(cache.cached_images().is_empty());
    wait_until_empty(&cache.root().join("tmp"));
}
