//! [`BusyboxRoot`]: a minimal system root around Debian's static busybox,
//! as REAPI Directory and file blobs, plus any files a test adds.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use corral_cas::Digest;
use corral_proto::reapi;

use super::{message_blob, FUNCTION};

/// The applets [`BusyboxRoot::new`] links: enough for `/bin/true` and
/// `/bin/sh -c …` (whose builtins include `echo`, `test`, `printf`).
pub const MINIMAL_APPLETS: &[&str] = &["sh", "true"];

/// A minimal system root as REAPI blobs: `root` is the top Directory's
/// digest and `blobs` holds every blob the tree names (file contents and
/// encoded Directories), ready for [`super::RemoteExec::upload`].
#[derive(Clone)]
pub struct BusyboxRoot {
    pub root: Digest,
    pub blobs: BTreeMap<Digest, Vec<u8>>,
    tree: Tree,
    contents: BTreeMap<Digest, Vec<u8>>,
}

impl std::fmt::Debug for BusyboxRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyboxRoot")
            .field("root", &self.root)
            .field("blobs", &self.blobs.len())
            .finish_non_exhaustive()
    }
}

impl BusyboxRoot {
    /// Busybox with [`MINIMAL_APPLETS`] linked in `bin/`.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_applets(MINIMAL_APPLETS)
    }

    /// Reads `/bin/busybox` (which must be static: the root has no
    /// libraries) and links each of `applets` to it in `bin/`.
    pub fn with_applets(applets: &[&str]) -> anyhow::Result<Self> {
        let busybox = std::fs::read("/bin/busybox").map_err(|e| {
            anyhow::anyhow!(
                "reading /bin/busybox ({e}): install Debian's busybox-static \
                 (bash integration/install-deps.sh installs it)"
            )
        })?;
        let mut tree = Tree::default();
        for dir in ["bin", "dev", "proc", "tmp"] {
            tree.dirs.insert(dir.into(), Tree::default());
        }
        let mut contents = BTreeMap::new();
        let digest = Digest::of_bytes(FUNCTION, &busybox);
        contents.insert(digest, busybox);
        let bin = tree.dirs.entry("bin".into()).or_default();
        bin.files.insert("busybox".into(), (digest, true));
        for applet in applets.iter().filter(|a| **a != "busybox") {
            check_name(applet)?;
            bin.symlinks.insert(applet.to_string(), "busybox".into());
        }
        let mut root = BusyboxRoot {
            root: digest,
            blobs: BTreeMap::new(),
            tree,
            contents,
        };
        root.rebuild();
        Ok(root)
    }

    /// Adds a regular file at `path` (relative, `/`-separated; missing
    /// directories are created) and recomputes `root` and `blobs`. It
    /// replaces a file or symlink of that name, never a directory.
    pub fn with_file(
        mut self,
        path: &str,
        contents: impl Into<Vec<u8>>,
        executable: bool,
    ) -> anyhow::Result<Self> {
        let names: Vec<&str> = path.split('/').collect();
        for name in &names {
            check_name(name).with_context(|| format!("file path {path:?}"))?;
        }
        let Some((file, parents)) = names.split_last() else {
            bail!("file path {path:?} is empty");
        };
        let mut dir = &mut self.tree;
        for name in parents {
            if dir.files.contains_key(*name) || dir.symlinks.contains_key(*name) {
                bail!("file path {path:?}: {name:?} is not a directory");
            }
            dir = dir.dirs.entry(name.to_string()).or_default();
        }
        if dir.dirs.contains_key(*file) {
            bail!("file path {path:?} is a directory");
        }
        let data = contents.into();
        let digest = Digest::of_bytes(FUNCTION, &data);
        dir.symlinks.remove(*file);
        dir.files.insert(file.to_string(), (digest, executable));
        self.contents.insert(digest, data);
        self.rebuild();
        Ok(self)
    }

    /// Recomputes `root` and `blobs` from the tree; contents no file names
    /// any more are dropped.
    fn rebuild(&mut self) {
        let mut blobs = BTreeMap::new();
        self.root = self.tree.encode(&self.contents, &mut blobs);
        self.contents.retain(|d, _| blobs.contains_key(d));
        self.blobs = blobs;
    }
}

/// One directory of a [`BusyboxRoot`]; maps keep names sorted as REAPI
/// requires.
#[derive(Debug, Clone, Default)]
struct Tree {
    dirs: BTreeMap<String, Tree>,
    files: BTreeMap<String, (Digest, bool)>,
    symlinks: BTreeMap<String, String>,
}

impl Tree {
    /// Adds this directory's blobs (and its files' contents) to `blobs`
    /// and returns its digest.
    fn encode(
        &self,
        contents: &BTreeMap<Digest, Vec<u8>>,
        blobs: &mut BTreeMap<Digest, Vec<u8>>,
    ) -> Digest {
        let directory = reapi::Directory {
            files: self
                .files
                .iter()
                .map(|(name, (digest, executable))| {
                    if let Some(data) = contents.get(digest) {
                        blobs.insert(*digest, data.clone());
                    }
                    reapi::FileNode {
                        name: name.clone(),
                        digest: Some(digest.to_proto()),
                        is_executable: *executable,
                        node_properties: None,
                    }
                })
                .collect(),
            directories: self
                .dirs
                .iter()
                .map(|(name, dir)| reapi::DirectoryNode {
                    name: name.clone(),
                    digest: Some(dir.encode(contents, blobs).to_proto()),
                })
                .collect(),
            symlinks: self
                .symlinks
                .iter()
                .map(|(name, target)| reapi::SymlinkNode {
                    name: name.clone(),
                    target: target.clone(),
                    node_properties: None,
                })
                .collect(),
            node_properties: None,
        };
        let (digest, bytes) = message_blob(&directory);
        blobs.insert(digest, bytes);
        digest
    }
}

/// A name REAPI accepts for a node: not empty, `.` or `..`, no `/` or NUL.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        bail!("{name:?} is not a valid file name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_proto::prost::Message;

    fn directory(root: &BusyboxRoot, digest: &Digest) -> reapi::Directory {
        reapi::Directory::decode(root.blobs[digest].as_slice()).unwrap()
    }

    fn child(root: &BusyboxRoot, dir: &reapi::Directory, name: &str) -> reapi::Directory {
        let node = dir.directories.iter().find(|d| d.name == name).unwrap();
        let digest = Digest::from_proto(FUNCTION, node.digest.as_ref().unwrap()).unwrap();
        directory(root, &digest)
    }

    #[test]
    fn busybox_root_is_sorted_and_complete() {
        let root = BusyboxRoot::new().unwrap();
        let top = directory(&root, &root.root);
        let names: Vec<_> = top.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["bin", "dev", "proc", "tmp"]);
        let bin = child(&root, &top, "bin");
        assert_eq!(bin.files.len(), 1);
        assert!(bin.files[0].is_executable);
        let links: Vec<_> = bin.symlinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(links, ["sh", "true"]);
        // busybox, the empty directory, bin and the top.
        assert_eq!(root.blobs.len(), 4);
    }

    #[test]
    fn with_file_adds_directories_and_replaces_links() {
        let root = BusyboxRoot::new()
            .unwrap()
            .with_file("etc/x/script", "echo hi\n", true)
            .unwrap()
            .with_file("bin/true", "not a link", false)
            .unwrap();
        let top = directory(&root, &root.root);
        let names: Vec<_> = top.directories.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["bin", "dev", "etc", "proc", "tmp"]);
        let x = child(&root, &child(&root, &top, "etc"), "x");
        assert_eq!(x.files[0].name, "script");
        assert!(x.files[0].is_executable);
        let bin = child(&root, &top, "bin");
        assert_eq!(bin.symlinks.len(), 1);
        let names: Vec<_> = bin.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["busybox", "true"]);
        let script = Digest::of_bytes(FUNCTION, b"echo hi\n");
        assert_eq!(root.blobs[&script], b"echo hi\n");

        // Overwriting drops the old contents from the blobs.
        let root = root.with_file("etc/x/script", "echo bye\n", true).unwrap();
        assert!(!root.blobs.contains_key(&script));
        for bad in ["", "/abs", "a//b", "a/../b", "bin", "bin/sh/x", "a/\0"] {
            assert!(root.clone().with_file(bad, "", false).is_err(), "{bad:?}");
        }
    }
}
