//! Unpack tests of the bounds: decompression bombs, too many entries, an
//! image's layers together, sparse files, and hard links past an inode's
//! link limit.

use super::tests::{unpack_with, Tar, ROOTLESS};
use super::*;
use crate::error::Bound;
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

const MIB: u64 = 1 << 20;

fn limited(max_layer_bytes: u64, max_layer_entries: u64) -> UnpackOptions {
    UnpackOptions {
        limits: UnpackLimits {
            max_layer_bytes,
            max_layer_entries,
        },
        ..ROOTLESS
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 19).unwrap()
}

/// A tar of one file of `size` zeros, compressed as concatenated members
/// (gzip members, zstd frames; both decoders read them as one stream). An
/// 8 MiB block of zeros is compressed once and repeated, so a gigabyte bomb
/// is made in moments, as an attacker would make it.
fn zero_file_bomb(size: u64, compress: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    const BLOCK: u64 = 8 * MIB;
    assert_eq!(size % BLOCK, 0);
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = compress(header.as_bytes());
    let block = compress(&vec![0u8; BLOCK as usize]);
    for _ in 0..size / BLOCK {
        out.extend_from_slice(&block);
    }
    out.extend(compress(&[0u8; 1024]));
    out
}

/// Checks a refusal: the error names the layer, the bound and its key, and
/// nothing is left of the layer's directory.
fn assert_refused(result: Result<Unpacked>, dest: &Path, bound: Bound, limit: u64) {
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::TooLarge { bound: b, limit: l, .. } if b == bound && l == limit),
        "{text}"
    );
    assert!(text.contains("sha256:test"), "names the layer: {text}");
    assert!(text.contains(&limit.to_string()), "names the bound: {text}");
    assert!(text.contains(bound.key()), "names the config key: {text}");
    assert!(!dest.exists(), "the partly unpacked layer is removed");
}

#[test]
fn a_gzip_bomb_is_refused_at_the_layer_bound_and_leaves_nothing() {
    let bomb = zero_file_bomb(1 << 30, gzip);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let (tmp, dest, result) = unpack_with(&bomb, limited(64 * MIB, 1_000_000), None);
    assert_refused(result, &dest, Bound::LayerBytes, 64 * MIB);
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the blob: {left:?}");
}

#[test]
fn a_zstd_bomb_is_refused_at_the_layer_bound_and_leaves_nothing() {
    let bomb = zero_file_bomb(1 << 30, zstd);
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    let (_tmp, dest, result) = unpack_with(&bomb, limited(64 * MIB, 1_000_000), None);
    assert_refused(result, &dest, Bound::LayerBytes, 64 * MIB);
}

#[test]
fn a_layer_within_the_bounds_unpacks() {
    let layer = zero_file_bomb(16 * MIB, zstd);
    let (_tmp, dest, result) = unpack_with(&layer, limited(17 * MIB, 3), None);
    assert_eq!(result.unwrap().bytes, 16 * MIB);
    assert_eq!(fs::metadata(dest.join("zeros")).unwrap().len(), 16 * MIB);
}

#[test]
fn too_many_entries_are_refused() {
    let mut tar = Tar::new();
    for i in 0..1_000 {
        tar = tar.file(&format!("f{i}"), "");
    }
    let tar = tar.finish();
    let (_tmp, _dest, result) = unpack_with(&tar, limited(u64::MAX, 1_000), None);
    result.unwrap();
    let (_tmp, dest, result) = unpack_with(&tar, limited(u64::MAX, 999), None);
    assert_refused(result, &dest, Bound::LayerEntries, 999);
    let gz = gzip(&tar);
    let (_tmp, dest, result) = unpack_with(&gz, limited(u64::MAX, 10), None);
    assert_refused(result, &dest, Bound::LayerEntries, 10);
}

#[test]
fn directories_made_for_an_entry_s_parents_count_as_entries() {
    let tar = Tar::new().file("a/b/c/d/e/f", "x").finish();
    let (_tmp, _dest, result) = unpack_with(&tar, limited(u64::MAX, 6), None);
    assert_eq!(result.unwrap().bytes, 5 * 512 + 1);
    let (_tmp, dest, result) = unpack_with(&tar, limited(u64::MAX, 5), None);
    assert_refused(result, &dest, Bound::LayerEntries, 5);
}

#[test]
fn the_image_bound_counts_the_layers_of_an_image_together() {
    let layer = zero_file_bomb(8 * MIB, gzip);
    let budget = ImageBudget::new(12 * MIB);
    let (_tmp, first, result) = unpack_with(&layer, ROOTLESS, Some(&budget));
    result.unwrap();
    let (_tmp2, second, result) = unpack_with(&layer, ROOTLESS, Some(&budget));
    assert_refused(result, &second, Bound::ImageBytes, 12 * MIB);
    assert_eq!(
        fs::metadata(first.join("zeros")).unwrap().len(),
        8 * MIB,
        "the layer within the bound is untouched"
    );
}

#[test]
fn a_stopped_image_stops_its_unpacks() {
    let budget = ImageBudget::new(u64::MAX);
    budget.stop();
    let tar = Tar::new().file("f", "x").finish();
    let (_tmp, dest, result) = unpack_with(&tar, ROOTLESS, Some(&budget));
    assert!(matches!(result, Err(Error::Layer { .. })), "{result:?}");
    assert!(!dest.exists());
}

/// A GNU sparse file: a header of 512 bytes standing for `size` bytes of
/// holes. Nothing to decompress, yet unpacking writes `size` bytes.
fn sparse_file(size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path("sparse").unwrap();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_size(0);
    header.set_mode(0o644);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(size);
    gnu.sparse[0].set_offset(size);
    gnu.sparse[0].set_length(0);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
fn a_sparse_file_that_expands_past_the_bound_is_refused() {
    let tar = sparse_file(1 << 30);
    assert_eq!(tar.len(), 1536, "no data at all in the tar");
    let (_tmp, dest, result) = unpack_with(&tar, limited(64 * MIB, 10), None);
    assert_refused(result, &dest, Bound::LayerBytes, 64 * MIB);

    let (_tmp, dest, result) = unpack_with(&sparse_file(MIB), limited(2 * MIB, 10), None);
    assert_eq!(result.unwrap().bytes, MIB, "a sparse file within the bound");
    assert_eq!(fs::metadata(dest.join("sparse")).unwrap().len(), MIB);
}

/// Hard links past what one inode takes (65,000 on ext4) become copies; on
/// a file system with no such limit they are all links. Fast enough for
/// every run: 70,000 empty-data link entries unpack in a few seconds.
#[test]
fn more_hard_links_than_an_inode_takes_fall_back_to_copies() {
    const LINKS: usize = 70_000;
    let mut tar = Tar::new().file("data/target", "shared content");
    for i in 0..LINKS {
        tar = tar.hardlink(&format!("l/{i}"), "data/target");
    }
    let (_tmp, dest, result) = unpack_with(&tar.finish(), ROOTLESS, None);
    let unpacked = result.unwrap();
    let target = fs::metadata(dest.join("data/target")).unwrap();
    let mut inodes = HashSet::new();
    for i in (0..LINKS).step_by(997).chain([LINKS - 1]) {
        let path = dest.join(format!("l/{i}"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "shared content");
        inodes.insert(fs::metadata(&path).unwrap().ino());
    }
    if unpacked.link_copies == 0 {
        // No per-inode limit here (tmpfs, XFS…): nothing to fall back from.
        assert_eq!(target.nlink(), LINKS as u64 + 1);
        return;
    }
    assert!(target.nlink() < LINKS as u64, "{}", target.nlink());
    assert!(inodes.len() > 1, "some names are copies");
    let mut all = HashSet::new();
    for i in 0..LINKS {
        all.insert(fs::metadata(dest.join(format!("l/{i}"))).unwrap().ino());
    }
    all.insert(target.ino());
    assert_eq!(
        all.len() as u64,
        1 + unpacked.link_copies,
        "each copy takes the following links until it is full in turn"
    );
}
