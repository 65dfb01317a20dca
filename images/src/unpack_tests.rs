//! Unpack tests, hostile tars included. Tars are written byte by byte so that
//! names the `tar` crate's builder would refuse (`..`, absolute) can be made.

use super::*;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Tar {
        Tar(Vec::new())
    }

    fn raw(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) -> Tar {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn dir(self, name: &str, mode: u32) -> Tar {
        self.raw(name, tar::EntryType::Directory, "", b"", mode)
    }
    fn file(self, name: &str, data: &str) -> Tar {
        self.raw(name, tar::EntryType::Regular, "", data.as_bytes(), 0o644)
    }
    fn symlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    fn hardlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Link, target, b"", 0o644)
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

const ROOTLESS: UnpackOptions = UnpackOptions { rootless: true };

fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Result<Unpacked>) {
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, bytes).unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let result = unpack_layer(&blob, &dest, "sha256:test", ROOTLESS);
    (tmp, dest, result)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
fn files_dirs_links_whiteouts_and_opaque_dirs() {
    let tar = Tar::new()
        .dir("./etc/", 0o755)
        .file("./etc/os-release", "ID=corral\n")
        .symlink("./etc/alias", "os-release")
        .hardlink("./etc/hard", "./etc/os-release")
        .file("bin/tool", "#!/bin/sh\n")
        .file("etc/.wh.removed", "")
        .dir("var/", 0o755)
        .file("var/.wh..wh..opq", "")
        .file("var/kept", "k")
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    let unpacked = result.unwrap();
    assert_eq!(unpacked.diff_id, sha256(&tar));
    assert_eq!(
        fs::read_to_string(dest.join("etc/os-release")).unwrap(),
        "ID=corral\n"
    );
    assert_eq!(
        fs::read_link(dest.join("etc/alias")).unwrap(),
        Path::new("os-release")
    );
    let a = fs::metadata(dest.join("etc/os-release")).unwrap();
    let b = fs::metadata(dest.join("etc/hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link inside the layer is kept");
    let wh = fs::symlink_metadata(dest.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0, "overlay whiteout is a 0/0 char device");
    assert!(!dest.join("etc/.wh.removed").exists());
    assert_eq!(
        xattr::get(dest.join("var"), "user.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!dest.join("var/.wh..wh..opq").exists());
    assert_eq!(fs::read_to_string(dest.join("var/kept")).unwrap(), "k");
    assert_eq!(
        fs::read_to_string(dest.join("bin/tool")).unwrap(),
        "#!/bin/sh\n"
    );
}

#[test]
fn gzip_zstd_and_plain_give_the_same_tree_and_diff_id() {
    let tar = Tar::new().file("a/b", "same").finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
    for bytes in [&tar, &gz, &zst] {
        let (_tmp, dest, result) = unpack_bytes(bytes);
        assert_eq!(result.unwrap().diff_id, sha256(&tar));
        assert_eq!(fs::read_to_string(dest.join("a/b")).unwrap(), "same");
    }
}

#[test]
fn dot_dot_is_refused() {
    let tar = Tar::new().file("a/../../escaped", "x").finish();
    let (tmp, _dest, result) = unpack_bytes(&tar);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("`..`"), "{err}");
    assert!(err.contains("a/../../escaped"), "names the entry: {err}");
    assert!(!tmp.path().join("escaped").exists());
    assert!(!tmp.path().parent().unwrap().join("escaped").exists());
}

#[test]
fn absolute_paths_stay_inside_the_layer() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("abs-file");
    let tar = Tar::new().file(target.to_str().unwrap(), "inside").finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    assert!(!target.exists(), "nothing written at the absolute path");
    let inside = dest.join(target.strip_prefix("/").unwrap());
    assert_eq!(fs::read_to_string(inside).unwrap(), "inside");
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    for link_target in [outside.path().to_str().unwrap(), "../..", "."] {
        let tar = Tar::new()
            .symlink("link", link_target)
            .file("link/pwned", "x")
            .finish();
        let (_tmp, _dest, result) = unpack_bytes(&tar);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("symlink link"), "{link_target}: {err}");
        assert!(!outside.path().join("pwned").exists());
    }
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "original").unwrap();
    let tar = Tar::new()
        .symlink("x", victim.to_str().unwrap())
        .file("x", "replaced")
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "original");
    let meta = fs::symlink_metadata(dest.join("x")).unwrap();
    assert!(meta.is_file());
    assert_eq!(fs::read_to_string(dest.join("x")).unwrap(), "replaced");
}

#[test]
fn hard_links_to_outside_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, "s").unwrap();
    let cases = [
        Tar::new().hardlink("hl", "../outside/secret").finish(),
        Tar::new().hardlink("hl", secret.to_str().unwrap()).finish(),
        Tar::new()
            .symlink("s", outside.path().to_str().unwrap())
            .hardlink("hl", "s/secret")
            .finish(),
    ];
    for tar in cases {
        let (_tmp, dest, result) = unpack_bytes(&tar);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("entry \"hl\""), "{err}");
        assert!(!dest.join("hl").exists());
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1, "{err}");
    }
}

#[test]
fn device_nodes_are_skipped_when_rootless() {
    let tar = Tar::new()
        .raw("dev/null", tar::EntryType::Char, "", b"", 0o666)
        .raw("dev/sda", tar::EntryType::Block, "", b"", 0o660)
        .raw("run/fifo", tar::EntryType::Fifo, "", b"", 0o600)
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    assert_eq!(result.unwrap().skipped, 2);
    assert!(fs::symlink_metadata(dest.join("dev/null")).is_err());
    assert!(fs::symlink_metadata(dest.join("dev/sda")).is_err());
    assert!(fs::symlink_metadata(dest.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn read_only_directories_get_their_mode_last_and_can_be_removed() {
    let tar = Tar::new().dir("ro/", 0o555).file("ro/inner", "i").finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    let mode = fs::metadata(dest.join("ro")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o555);
    remove_tree(&dest).unwrap();
    assert!(!dest.exists());
}

#[test]
fn garbage_and_truncated_streams_fail_clearly() {
    let (_tmp, _dest, result) = unpack_bytes(&[0x1f, 0x8b, 1, 2, 3, 4, 5]);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("layer sha256:test"), "{err}");
    let tar = Tar::new().file("f", &"x".repeat(2000)).finish();
    let (_tmp, _dest, result) = unpack_bytes(&tar[..1024]);
    assert!(result.is_err());
}

#[test]
fn as_root_device_nodes_and_owners_are_kept() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs the suite as root): it checks mknod and chown"
    );
    let tar = Tar::new()
        .raw("dev/null", tar::EntryType::Char, "", b"", 0o666)
        .file("home/f", "x")
        .finish();
    // Give the file an owner other than root.
    let mut tar = tar;
    let mut header = tar::Header::from_byte_slice(&tar[512..1024]).clone();
    header.set_uid(1234);
    header.set_gid(5678);
    header.set_cksum();
    tar[512..1024].copy_from_slice(header.as_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, &tar).unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let unpacked = unpack_layer(
        &blob,
        &dest,
        "sha256:test",
        UnpackOptions { rootless: false },
    )
    .unwrap();
    assert_eq!(unpacked.skipped, 0);
    let null = fs::symlink_metadata(dest.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    let f = fs::metadata(dest.join("home/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
}
