//! Unpack tests, hostile tars included. Tars are written byte by byte so that
//! names the `tar` crate's builder would refuse (`..`, absolute) can be made.

use super::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

pub(super) struct Tar(pub(super) Vec<u8>);

impl Tar {
    pub(super) fn new() -> Tar {
        Tar(Vec::new())
    }

    pub(super) fn raw(
        self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> Tar {
        self.raw_bytes(name.as_bytes(), kind, link, data, mode)
    }

    /// An entry whose name is any bytes (up to 100), UTF-8 or not.
    pub(super) fn raw_bytes(
        mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> Tar {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
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

    pub(super) fn dir(self, name: &str, mode: u32) -> Tar {
        self.raw(name, tar::EntryType::Directory, "", b"", mode)
    }
    pub(super) fn file(self, name: &str, data: &str) -> Tar {
        self.raw(name, tar::EntryType::Regular, "", data.as_bytes(), 0o644)
    }
    pub(super) fn symlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    pub(super) fn hardlink(self, name: &str, target: &str) -> Tar {
        self.raw(name, tar::EntryType::Link, target, b"", 0o644)
    }
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        self.0
    }
}

pub(super) const ROOTLESS: UnpackOptions = UnpackOptions {
    rootless: true,
    limits: UnpackLimits {
        max_layer_bytes: 8 << 30,
        max_layer_entries: 1_000_000,
    },
};

fn unpack_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Result<Unpacked>) {
    unpack_with(bytes, ROOTLESS, None)
}

/// Unpacks `bytes` into `TMP/layer` with `opts` and `image`.
pub(super) fn unpack_with(
    bytes: &[u8],
    opts: UnpackOptions,
    image: Option<&ImageBudget>,
) -> (tempfile::TempDir, PathBuf, Result<Unpacked>) {
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    fs::write(&blob, bytes).unwrap();
    let dest = tmp.path().join("layer");
    fs::create_dir(&dest).unwrap();
    let result = unpack_layer(&blob, &dest, "sha256:test", opts, image);
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
    let as_root = UnpackOptions {
        rootless: false,
        ..ROOTLESS
    };
    let unpacked = unpack_layer(&blob, &dest, "sha256:test", as_root, None).unwrap();
    assert_eq!(unpacked.skipped, 0);
    let null = fs::symlink_metadata(dest.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    let f = fs::metadata(dest.join("home/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1234, 5678));
}

#[test]
fn names_that_are_not_utf8_are_unpacked_not_dropped() {
    let tar = Tar::new()
        .raw_bytes(b"caf\xe9", tar::EntryType::Regular, "", b"latin-1", 0o644)
        .raw_bytes(b"d/.wh.\xff", tar::EntryType::Regular, "", b"", 0o644)
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    let name = OsStr::from_bytes(b"caf\xe9");
    assert_eq!(fs::read_to_string(dest.join(name)).unwrap(), "latin-1");
    let wh = fs::symlink_metadata(dest.join("d").join(OsStr::from_bytes(b"\xff"))).unwrap();
    assert!(wh.file_type().is_char_device(), "the whiteout applies");
}

#[test]
fn set_id_bits_are_dropped_when_rootless() {
    let tar = Tar::new()
        .raw("bin/su", tar::EntryType::Regular, "", b"x", 0o6755)
        .dir("shared/", 0o3775)
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/su"), 0o755);
    assert_eq!(mode("shared"), 0o1775, "the sticky bit is no privilege");
}

#[test]
fn a_hard_link_to_a_symlink_links_the_symlink_not_what_it_points_to() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, "s").unwrap();
    let tar = Tar::new()
        .symlink("s", secret.to_str().unwrap())
        .hardlink("hl", "s")
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    let hl = fs::symlink_metadata(dest.join("hl")).unwrap();
    assert!(hl.file_type().is_symlink());
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn a_file_over_a_hard_link_does_not_write_through_it() {
    let tar = Tar::new()
        .file("a", "original")
        .hardlink("b", "a")
        .file("b", "replaced")
        .finish();
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    assert_eq!(fs::read_to_string(dest.join("a")).unwrap(), "original");
    assert_eq!(fs::read_to_string(dest.join("b")).unwrap(), "replaced");
}

/// An extension entry (GNU long name or PAX records) carrying `data`, in
/// the header format the tar crate honours it in.
fn extension(kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
    let mut h = if kind == tar::EntryType::GNULongName {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.set_path("././@LongLink").unwrap();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    out
}

/// One PAX record `LEN key=value\n` whose length counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn huge_long_names_and_pax_headers_are_refused_before_they_are_buffered() {
    let big = MAX_ENTRY_HEADER_BYTES as usize + 4096;
    let cases = [
        extension(tar::EntryType::GNULongName, &vec![b'a'; big]),
        extension(
            tar::EntryType::XHeader,
            &pax_record("comment", &"a".repeat(big)),
        ),
    ];
    for ext in cases {
        let mut tar = ext;
        tar.extend(Tar::new().file("f", "x").finish());
        let (_tmp, dest, result) = unpack_bytes(&tar);
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Layer { .. }), "{text}");
        assert!(text.contains("headers of one tar entry"), "{text}");
        assert!(!dest.exists());
    }

    // Long names of a sensible size still work.
    let long = format!(
        "{}/{}/{}",
        "a".repeat(100),
        "b".repeat(100),
        "c".repeat(100)
    );
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    builder.append_data(&mut h, &long, &b"long"[..]).unwrap();
    let mut tar = extension(tar::EntryType::XHeader, &pax_record("comment", "ok"));
    tar.extend(Tar::new().file("short", "s").0);
    tar.extend(builder.into_inner().unwrap());
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    assert_eq!(fs::read_to_string(dest.join(long)).unwrap(), "long");
    assert_eq!(fs::read_to_string(dest.join("short")).unwrap(), "s");
}

#[test]
fn a_directory_replaced_by_a_symlink_or_whiteout_is_no_parent_any_more() {
    let outside = tempfile::tempdir().unwrap();
    let tar = Tar::new()
        .file("d/first", "x")
        .symlink("d", outside.path().to_str().unwrap())
        .file("d/pwned", "x")
        .finish();
    let (_tmp, _dest, result) = unpack_bytes(&tar);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("symlink d"), "{err}");
    assert!(!outside.path().join("pwned").exists());

    let tar = Tar::new()
        .file("d/e/first", "x")
        .file("d/.wh.e", "")
        .file("d/e/second", "x")
        .finish();
    let (_tmp, _dest, result) = unpack_bytes(&tar);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

/// A tar entry (no end blocks) for an empty file `depth` directories
/// below `top`.
fn deep(top: &str, depth: usize, name: &str) -> Vec<u8> {
    let path = format!("{top}/{}{name}", "a/".repeat(depth));
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    builder.append_data(&mut h, &path, &b""[..]).unwrap();
    let mut tar = builder.into_inner().unwrap();
    tar.truncate(tar.len() - 1024);
    tar
}

/// Many entries 1,000 directories deep, alternating between two trees,
/// unpack where they belong. Checking every parent of every entry with
/// `lstat` cost depth² per entry (40 s for this test; a small hostile layer
/// of a million entries, days); with the directories remembered
/// (`known_dirs`, which has its own unit test) about 3 s. No assertion here
/// keys on the wall clock.
#[test]
fn deep_entries_unpack_where_they_belong() {
    const DEPTH: usize = 1_000;
    let mut tar = Vec::new();
    for i in 0..1_000 {
        tar.extend(deep(
            if i % 2 == 0 { "x" } else { "y" },
            DEPTH,
            &format!("f{i}"),
        ));
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let (_tmp, dest, result) = unpack_bytes(&tar);
    result.unwrap();
    let last = format!("y/{}f999", "a/".repeat(DEPTH));
    assert!(dest.join(last).exists());
}
