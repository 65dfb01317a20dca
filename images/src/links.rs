//! Hard links of one layer, with a copy when an inode is out of links.
//!
//! A file system allows only so many links per inode (65,000 on ext4;
//! linking more fails with EMLINK), and a layer may link one file more often
//! than that: the unpack must not fail for it. So when linking an entry
//! fails with EMLINK, the entry is made a copy instead, and the following
//! links to the same entry link that copy, until it is full in turn. The
//! layer then holds a few inodes where the tar had one; nothing inside an
//! overlay rootfs can tell, except by comparing inode numbers.
//!
//! A copy costs disk where a link did not, so its size is charged to the
//! layer's bound by the caller: a tar of a gigabyte file and a million
//! links to it stops at the bound like any other bomb.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};

/// `(device, inode)` of a file, to notice a path replaced by a later entry.
type FileId = (u64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The copy that stands in for a link target whose inode is full.
#[derive(Debug)]
struct Spare {
    /// The target's inode when the copy was made: a later entry may have
    /// replaced the target, and links must then go to the new file.
    target: FileId,
    copy: PathBuf,
    /// The copy's inode: a later entry may have replaced the copy too.
    copy_id: FileId,
}

/// Makes hard links within one layer.
#[derive(Debug, Default)]
pub(crate) struct Links {
    spares: HashMap<PathBuf, Spare>,
    copies: u64,
}

impl Links {
    /// Copies made so far because an inode was out of links.
    pub(crate) fn copies(&self) -> u64 {
        self.copies
    }

    /// Makes `path` (free) a hard link of `target` (an entry of this layer,
    /// not a directory), or a copy of it if its inode is out of links.
    /// `keep_owner` copies the owner too (as root). `charge` is called with
    /// the size of a copy before it is written; its error stops the copy.
    /// Returns the bytes a copy wrote (0 for a link).
    pub(crate) fn link(
        &mut self,
        target: &Path,
        path: &Path,
        keep_owner: bool,
        charge: impl FnOnce(u64) -> io::Result<()>,
    ) -> io::Result<u64> {
        self.link_with(target, path, keep_owner, charge, |from, to| {
            fs::hard_link(from, to)
        })
    }

    /// [`Links::link`] with the link call given, so tests can run out of
    /// links without making 65,000 of them.
    pub(crate) fn link_with(
        &mut self,
        target: &Path,
        path: &Path,
        keep_owner: bool,
        charge: impl FnOnce(u64) -> io::Result<()>,
        hard_link: impl Fn(&Path, &Path) -> io::Result<()>,
    ) -> io::Result<u64> {
        let target_id = file_id(target).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let from = match self.spares.get(target) {
            Some(spare)
                if spare.target == target_id && file_id(&spare.copy) == Some(spare.copy_id) =>
            {
                spare.copy.clone()
            }
            _ => target.to_path_buf(),
        };
        match hard_link(&from, path) {
            Ok(()) => Ok(0),
            Err(e) if e.raw_os_error() == Some(nix::libc::EMLINK) => {
                let bytes = copy_entry(&from, path, keep_owner, charge)?;
                let copy_id =
                    file_id(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                self.copies += 1;
                tracing::debug!(target = %target.display(), copy = %path.display(), "inode out of links: copied");
                self.spares.insert(
                    target.to_path_buf(),
                    Spare {
                        target: target_id,
                        copy: path.to_path_buf(),
                        copy_id,
                    },
                );
                Ok(bytes)
            }
            Err(e) => Err(e),
        }
    }
}

/// Makes `to` a copy of the unpacked entry `from`: same type, content,
/// mode, mtime and (with `keep_owner`) owner. Nothing is followed: `from`
/// is opened with `O_NOFOLLOW`, `to` is created with `O_EXCL|O_NOFOLLOW`.
fn copy_entry(
    from: &Path,
    to: &Path,
    keep_owner: bool,
    charge: impl FnOnce(u64) -> io::Result<()>,
) -> io::Result<u64> {
    let meta = fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    let mut bytes = 0;
    if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if kind.is_file() {
        charge(meta.len())?;
        let mut src = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(from)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(to)?;
        bytes = io::copy(&mut src, &mut dst)?;
    } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        let sflag = SFlag::from_bits_truncate(meta.mode() & SFlag::S_IFMT.bits());
        nix::sys::stat::mknod(to, sflag, Mode::from_bits_truncate(0o600), meta.rdev())?;
    } else {
        // Directories never get here (hard links to them are refused).
        return Err(io::Error::from_raw_os_error(nix::libc::EMLINK));
    }
    if keep_owner {
        // Before the mode: changing the owner clears set-id bits.
        nix::unistd::fchownat(
            None,
            to,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if !kind.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let mtime = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        to,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Links like the kernel does, except that `full` is out of links.
    fn linker(full: &Path) -> impl Fn(&Path, &Path) -> io::Result<()> + '_ {
        move |from: &Path, to: &Path| {
            if from == full {
                return Err(io::Error::from_raw_os_error(nix::libc::EMLINK));
            }
            fs::hard_link(from, to)
        }
    }

    #[test]
    fn an_inode_out_of_links_is_copied_and_the_copy_takes_the_next_links() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "payload").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o751)).unwrap();
        let mut links = Links::default();
        let charged = Cell::new(0);
        let charge = |n| {
            charged.set(charged.get() + n);
            Ok(())
        };

        let first = tmp.path().join("first");
        let n = links
            .link_with(&target, &first, false, charge, linker(&target))
            .unwrap();
        assert_eq!((n, charged.get(), links.copies()), (7, 7, 1));
        let meta = fs::symlink_metadata(&first).unwrap();
        assert_ne!(meta.ino(), fs::metadata(&target).unwrap().ino(), "a copy");
        assert_eq!(fs::read_to_string(&first).unwrap(), "payload");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
        assert_eq!(meta.mtime(), fs::metadata(&target).unwrap().mtime());

        let second = tmp.path().join("second");
        let n = links
            .link_with(&target, &second, false, charge, linker(&target))
            .unwrap();
        assert_eq!((n, links.copies()), (0, 1));
        assert_eq!(
            fs::metadata(&second).unwrap().ino(),
            meta.ino(),
            "links the copy"
        );

        // A later entry replaces the copy: links go back to the target
        // (which is still full here, so a new copy is made).
        fs::remove_file(&first).unwrap();
        fs::write(&first, "other").unwrap();
        let third = tmp.path().join("third");
        links
            .link_with(&target, &third, false, charge, linker(&target))
            .unwrap();
        assert_eq!(fs::read_to_string(&third).unwrap(), "payload");
        assert_eq!(links.copies(), 2);
    }

    #[test]
    fn a_refused_charge_stops_the_copy_and_other_errors_are_not_copies() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, "payload").unwrap();
        let mut links = Links::default();
        let path = tmp.path().join("copy");
        let refuse = |_| Err(io::Error::other("over the bound"));
        assert!(links
            .link_with(&target, &path, false, refuse, linker(&target))
            .is_err());
        assert!(!path.exists(), "nothing written past the bound");

        let denied = |_: &Path, _: &Path| Err(io::Error::from_raw_os_error(nix::libc::EPERM));
        let err = links
            .link_with(&target, &path, false, |_| Ok(()), denied)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EPERM));
        assert!(!path.exists());
    }

    #[test]
    fn symlinks_and_fifos_out_of_links_are_recreated() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o640)).unwrap();
        let mut links = Links::default();
        let link_copy = tmp.path().join("link2");
        links
            .link_with(&link, &link_copy, false, |_| Ok(()), linker(&link))
            .unwrap();
        assert_eq!(fs::read_link(&link_copy).unwrap(), Path::new("/etc/passwd"));
        let fifo_copy = tmp.path().join("fifo2");
        links
            .link_with(&fifo, &fifo_copy, false, |_| Ok(()), linker(&fifo))
            .unwrap();
        let meta = fs::symlink_metadata(&fifo_copy).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    }
}
