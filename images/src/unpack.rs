//! Unpacks one layer tar into a fresh directory, safely.
//!
//! The result is one overlayfs lower directory: OCI whiteouts (`.wh.NAME`)
//! become overlay whiteouts (a 0/0 character device, which the kernel lets
//! any user create since 5.8) and opaque markers (`.wh..wh..opq`) become the
//! `user.overlay.opaque=y` xattr, which overlayfs honours when mounted with
//! `userxattr` (required inside a user namespace). As root the
//! `trusted.overlay.opaque` form is set as well, so a mount without
//! `userxattr` sees it too. Layers are therefore never merged on disk, and one
//! unpacked layer serves every image that contains it.
//!
//! The tar is untrusted. Every name is cleaned (`..` is refused, a leading `/`
//! is dropped), no entry is ever written through a symlink (each parent
//! component is checked with `lstat`, and an existing entry is removed before a
//! new one takes its place), and hard links must point at an entry already in
//! this layer. Nothing outside the destination directory is created, changed
//! or linked to.
//!
//! What an unpack may cost is bounded while it runs (see `bounds`): the
//! uncompressed bytes of the layer and of its image, the number of entries
//! and the size of one entry's headers. A layer that passes a bound, or
//! fails in any other way, leaves nothing behind.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

use crate::bounds::{Meter, MeteredReader};
use crate::error::{Error, Result};
use crate::known_dirs::KnownDirs;
use crate::links::Links;
use crate::tree::{make_writable_tree, remove_tree};

pub use crate::bounds::{ImageBudget, StopOnDrop, UnpackLimits, MAX_ENTRY_HEADER_BYTES};

/// How to unpack.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Without root: device nodes are skipped, ownership is not kept and
    /// set-id bits are dropped.
    pub rootless: bool,
    /// What one layer may unpack to.
    pub limits: UnpackLimits,
}

/// What one unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar: the layer's DiffID, which the image
    /// config lists and which is checked against it.
    pub diff_id: String,
    /// Apparent size of the unpacked files, for the cache bound.
    pub bytes: u64,
    /// Entries skipped (device nodes when rootless, unknown special names).
    pub skipped: u64,
    /// Hard links made as copies because their inode was out of links.
    pub link_copies: u64,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Unpacks the (gzip, zstd or plain) tar in `blob` into `dest`, an existing
/// empty directory. `layer` names the layer in errors (its digest, and the
/// image). The uncompressed bytes and the entries are counted against
/// `opts.limits` as they are read, and the bytes against `image` too (shared
/// by the image's layers) if given, so a bomb stops at the bound.
///
/// On any error `dest` is removed with whatever was unpacked into it: a
/// half-unpacked layer is never used, nor left behind.
pub fn unpack_layer(
    blob: &Path,
    dest: &Path,
    layer: &str,
    opts: UnpackOptions,
    image: Option<&ImageBudget>,
) -> Result<Unpacked> {
    let meter = Meter::new(opts.limits, image);
    let result = unpack_metered(blob, dest, layer, opts, &meter);
    // A bound passed shows through the tar or decoder as some I/O error;
    // the meter knows which bound it was.
    let result = match meter.refusal() {
        Some(why) => Err(why.into_error(layer)),
        None => result,
    };
    if result.is_err() {
        if let Err(e) = remove_tree(dest) {
            tracing::warn!(layer, error = %e, "cannot remove a refused layer's directory");
        }
    }
    result
}

fn unpack_metered(
    blob: &Path,
    dest: &Path,
    layer: &str,
    opts: UnpackOptions,
    meter: &Meter<'_>,
) -> Result<Unpacked> {
    let file = File::open(blob).map_err(Error::io("open layer blob", blob))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let magic = peek(&mut reader, blob)?;
    let decoded: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(Error::io("start zstd decoder", blob))?,
        )
    } else {
        Box::new(reader)
    };
    let mut metered = MeteredReader::new(decoded, meter);
    let mut un = Unpacker {
        root: dest.to_path_buf(),
        layer: layer.to_string(),
        opts,
        meter,
        links: Links::default(),
        known: KnownDirs::default(),
        buf: vec![0; 1 << 16],
        dirs: Vec::new(),
        bytes: 0,
        skipped: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut metered);
        let entries = archive
            .entries()
            .map_err(|e| un.err("<archive>", format!("not a tar: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| un.err("<archive>", format!("corrupt tar: {e}")))?;
            meter
                .begin_entry()
                .map_err(|e| un.err("<archive>", e.to_string()))?;
            un.entry(&mut entry)?;
            // Data the entry did not use (a directory with a size, say) is
            // entry data all the same, not headers.
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| un.err("<archive>", format!("corrupt tar: {e}")))?;
            meter.end_entry();
        }
    }
    // Hash whatever follows the end-of-archive blocks too: the DiffID covers
    // the whole uncompressed stream.
    meter.begin_trailer();
    io::copy(&mut metered, &mut io::sink())
        .map_err(|e| un.err("<archive>", format!("corrupt compressed stream: {e}")))?;
    un.finish_dirs()?;
    Ok(Unpacked {
        diff_id: metered.diff_id(),
        bytes: un.bytes,
        skipped: un.skipped,
        link_copies: un.links.copies(),
    })
}

fn peek(reader: &mut BufReader<File>, blob: &Path) -> Result<Vec<u8>> {
    use std::io::BufRead;
    let buf = reader
        .fill_buf()
        .map_err(Error::io("read layer blob", blob))?;
    Ok(buf[..buf.len().min(4)].to_vec())
}

struct Unpacker<'m, 'a> {
    root: PathBuf,
    layer: String,
    opts: UnpackOptions,
    meter: &'m Meter<'a>,
    links: Links,
    /// Directories created or checked so far, relative to `root`.
    known: KnownDirs,
    /// Copy buffer for file data.
    buf: Vec<u8>,
    /// Directories whose mode and mtime are applied at the end, so that a
    /// read-only directory can still receive its entries first.
    dirs: Vec<(PathBuf, u32, u64)>,
    bytes: u64,
    skipped: u64,
}

impl Unpacker<'_, '_> {
    fn err(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::Layer {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let rel = clean(&entry.path().map_err(|e| self.err(&shown, e.to_string()))?)
            .map_err(|r| self.err(&shown, r))?;
        // Names are bytes: one that is not UTF-8 is as valid as any other.
        let Some(file_name) = rel.file_name().map(OsStr::to_os_string) else {
            // The layer root itself ("./"): its metadata is not ours to set.
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.make_parents(&parent_rel, &shown)?;

        let name = file_name.as_bytes();
        if name == OPAQUE_MARKER {
            return self.mark_opaque(&parent, &shown);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(WHITEOUT_PREFIX) {
                tracing::debug!(layer = %self.layer, entry = %shown, "skipping special whiteout name");
                self.skipped += 1;
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.err(&shown, "whiteout names no file"));
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            self.clear(&target, false, &shown)?;
            return self.whiteout(&target, &shown);
        }
        self.place(entry, kind, &parent.join(file_name), &shown)
    }

    /// Creates the entry at `path` (its parents exist), replacing whatever
    /// an earlier entry put there.
    fn place<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        path: &Path,
        shown: &str,
    ) -> Result<()> {
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mode = if self.opts.rootless {
            mode & 0o1777
        } else {
            mode
        };
        let mtime = header.mtime().unwrap_or(0);
        let owner = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        match kind {
            tar::EntryType::Directory => {
                self.clear(path, true, shown)?;
                if !is_dir(path) {
                    fs::create_dir(path).map_err(Error::io("create directory", path))?;
                }
                self.chown(path, owner, shown)?;
                self.dirs.push((path.to_path_buf(), mode, mtime));
                self.bytes += 512;
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.clear(path, false, shown)?;
                self.write_file(entry, path, mode, shown)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.err(shown, e.to_string()))?
                    .ok_or_else(|| self.err(shown, "symlink without a target"))?;
                self.clear(path, false, shown)?;
                // The target is only ever resolved inside the container's root.
                std::os::unix::fs::symlink(&target, path)
                    .map_err(Error::io("create symlink", path))?;
                self.bytes += 512;
            }
            tar::EntryType::Link => return self.hard_link(entry, path, shown),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let is_fifo = kind == tar::EntryType::Fifo;
                if self.opts.rootless && !is_fifo {
                    tracing::debug!(layer = %self.layer, entry = %shown, "rootless: skipping device node");
                    self.skipped += 1;
                    return Ok(());
                }
                self.clear(path, false, shown)?;
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (SFlag::S_IFCHR, self.device(header, shown)?),
                    tar::EntryType::Block => (SFlag::S_IFBLK, self.device(header, shown)?),
                    _ => (SFlag::S_IFIFO, 0),
                };
                nix::sys::stat::mknod(path, sflag, Mode::from_bits_truncate(mode), dev)
                    .map_err(|e| Error::io("create special file", path)(e.into()))?;
                self.bytes += 512;
            }
            other => {
                return Err(self.err(shown, format!("unsupported tar entry type {other:?}")));
            }
        }
        self.chown(path, owner, shown)?;
        set_mtime(path, mtime);
        Ok(())
    }

    /// Writes a regular file's data. Bytes the tar expands (the holes of a
    /// sparse file, which the stream does not carry) are charged to the
    /// bounds before they are written, like decompressed bytes are.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        shown: &str,
    ) -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(Error::io("create file", path))?;
        let start = self.meter.stream_bytes();
        let (mut written, mut expanded) = (0u64, 0u64);
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(shown, format!("reading file data: {e}"))),
            };
            written += n as u64;
            let beyond_stream = written.saturating_sub(self.meter.stream_bytes() - start);
            if beyond_stream > expanded {
                self.meter
                    .charge(beyond_stream - expanded)
                    .map_err(|e| self.err(shown, e.to_string()))?;
                expanded = beyond_stream;
            }
            file.write_all(&self.buf[..n])
                .map_err(Error::io("write file", path))?;
        }
        self.bytes += written;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(Error::io("set file mode", path))
    }

    /// A hard link to an entry already unpacked in this layer, reached
    /// without symlinks; a copy if that entry's inode is out of links.
    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        path: &Path,
        shown: &str,
    ) -> Result<()> {
        let target = entry
            .link_name()
            .map_err(|e| self.err(shown, e.to_string()))?
            .ok_or_else(|| self.err(shown, "hard link without a target"))?;
        let target_rel =
            clean(&target).map_err(|r| self.err(shown, format!("hard link target: {r}")))?;
        let source = self.existing(&target_rel, shown)?;
        if source == path {
            return Err(self.err(shown, "hard link to itself"));
        }
        self.clear(path, false, shown)?;
        let meter = self.meter;
        let copied = self
            .links
            .link(&source, path, !self.opts.rootless, |n| meter.charge(n))
            .map_err(Error::io("create hard link", path))?;
        self.bytes += copied;
        Ok(())
    }

    fn device(&self, header: &tar::Header, shown: &str) -> Result<u64> {
        let major = header
            .device_major()
            .map_err(|e| self.err(shown, e.to_string()))?
            .unwrap_or(0);
        let minor = header
            .device_minor()
            .map_err(|e| self.err(shown, e.to_string()))?
            .unwrap_or(0);
        Ok(nix::sys::stat::makedev(major.into(), minor.into()))
    }

    /// Creates the missing directories of `rel` and returns its absolute path.
    /// A component that is a symlink or a non-directory is an error: writing
    /// through it could land outside the layer.
    /// Directories already created or checked by this unpack are not
    /// checked again (see `known_dirs`); one created counts as an entry.
    fn make_parents(&mut self, rel: &Path, shown: &str) -> Result<PathBuf> {
        let known = self.known.known_prefix(rel);
        let mut path = self.root.clone();
        for (i, comp) in rel.components().enumerate() {
            path.push(comp);
            if i < known {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.err(
                        shown,
                        format!("path goes through the symlink {}", self.show(&path)),
                    ))
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(self.err(
                        shown,
                        format!("parent {} is not a directory", self.show(&path)),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.meter
                        .implicit_entry()
                        .map_err(|e| self.err(shown, e.to_string()))?;
                    fs::create_dir(&path).map_err(Error::io("create directory", &path))?;
                    self.bytes += 512;
                }
                Err(e) => return Err(Error::io("inspect", &path)(e)),
            }
        }
        self.known.insert(rel);
        Ok(path)
    }

    /// The absolute path of an entry that must already exist in this layer
    /// (a hard link source), reached without following any symlink.
    fn existing(&self, rel: &Path, shown: &str) -> Result<PathBuf> {
        let mut path = self.root.clone();
        let n = rel.components().count();
        if n == 0 {
            return Err(self.err(shown, "hard link to the layer root"));
        }
        let known = self
            .known
            .known_prefix(rel.parent().unwrap_or(Path::new("")));
        for (i, comp) in rel.components().enumerate() {
            path.push(comp);
            if i < known {
                continue;
            }
            let meta = fs::symlink_metadata(&path).map_err(|_| {
                self.err(
                    shown,
                    format!("hard link target {} is not in this layer", rel.display()),
                )
            })?;
            let last = i + 1 == n;
            if !last && !meta.is_dir() {
                return Err(self.err(
                    shown,
                    format!(
                        "hard link target goes through non-directory {}",
                        self.show(&path)
                    ),
                ));
            }
            if last && meta.is_dir() {
                return Err(self.err(shown, "hard link to a directory"));
            }
        }
        Ok(path)
    }

    /// Makes room for a new entry at `path`: a later entry replaces an earlier
    /// one, except that a directory over a directory merges.
    fn clear(&mut self, path: &Path, new_is_dir: bool, _shown: &str) -> Result<()> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                if !new_is_dir {
                    match path.strip_prefix(&self.root) {
                        Ok(rel) => self.known.forget(rel),
                        Err(_) => self.known = KnownDirs::default(),
                    }
                    make_writable_tree(path);
                    fs::remove_dir_all(path).map_err(Error::io("replace directory", path))?;
                }
                Ok(())
            }
            Ok(_) => fs::remove_file(path).map_err(Error::io("replace entry", path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("inspect", path)(e)),
        }
    }

    fn whiteout(&mut self, path: &Path, shown: &str) -> Result<()> {
        nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(|e| {
            self.err(
                shown,
                format!("cannot create overlay whiteout (0/0 char device): {e}"),
            )
        })?;
        self.bytes += 512;
        Ok(())
    }

    fn mark_opaque(&mut self, dir: &Path, shown: &str) -> Result<()> {
        xattr::set(dir, "user.overlay.opaque", b"y").map_err(|e| {
            self.err(
                shown,
                format!("cannot set user.overlay.opaque on {}: {e}", self.show(dir)),
            )
        })?;
        if !self.opts.rootless {
            if let Err(e) = xattr::set(dir, "trusted.overlay.opaque", b"y") {
                tracing::debug!(layer = %self.layer, error = %e, "trusted.overlay.opaque not set");
            }
        }
        Ok(())
    }

    fn chown(&self, path: &Path, (uid, gid): (u64, u64), shown: &str) -> Result<()> {
        if self.opts.rootless {
            return Ok(());
        }
        let uid = u32::try_from(uid).map_err(|_| self.err(shown, "uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| self.err(shown, "gid out of range"))?;
        nix::unistd::fchownat(
            None,
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("set owner", path)(e.into()))
    }

    fn finish_dirs(&mut self) -> Result<()> {
        // Deepest first, so a parent's mtime is set after its children change.
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode, mtime) in std::mem::take(&mut self.dirs) {
            if !is_dir(&path) {
                continue; // replaced by a later entry
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(Error::io("set directory mode", &path))?;
            set_mtime(&path, mtime);
        }
        Ok(())
    }

    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Cleans a tar name: drops `.` and a leading `/`, refuses `..`.
fn clean(path: &Path) -> std::result::Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("`..` in a path is not allowed".to_string()),
            Component::Normal(c) => {
                if c.as_encoded_bytes().contains(&0) {
                    return Err("NUL in a path".to_string());
                }
                out.push(c)
            }
            Component::Prefix(_) => return Err("path prefix is not allowed".to_string()),
        }
    }
    Ok(out)
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

fn set_mtime(path: &Path, mtime: u64) {
    let secs = i64::try_from(mtime).unwrap_or(0);
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    if let Err(e) = nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    ) {
        tracing::debug!(path = %path.display(), error = %e, "mtime not set");
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "unpack_bounds_tests.rs"]
mod bounds_tests;
