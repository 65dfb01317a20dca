//! The action's view of its input root after it ran: the staged tree (whose
//! every digest is already known from the input's Directory messages)
//! under the overlay's upper directory (what the action created, changed
//! or deleted). Output capture reads outputs through this view, so only
//! files in the upper directory are ever hashed.
//!
//! overlayfs marks a deleted lower entry with a whiteout (a character
//! device 0:0) and a directory that hides its lower contents with the
//! `user.overlay.opaque` (the runner mounts with `userxattr`) or
//! `trusted.overlay.opaque` extended attribute set to `y`. Symlinks are
//! never followed: a symlink is an output of its own, and a path that
//! passes through one is treated as absent.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use corral_cas::{Digest, DigestFunction};
use corral_proto::protobuf::{Timestamp, UInt32Value};
use corral_proto::reapi;
use prost::Message;

use crate::error::{Error, Result};
use crate::tree::InputTree;

/// Which node properties outputs carry (REAPI `output_node_properties`).
#[derive(Clone, Copy, Debug, Default)]
pub struct WantedProperties {
    pub unix_mode: bool,
    pub mtime: bool,
}

impl WantedProperties {
    pub fn from_command(command: &reapi::Command) -> Self {
        let has = |n: &str| command.output_node_properties.iter().any(|p| p == n);
        WantedProperties {
            unix_mode: has("unix_mode"),
            mtime: has("mtime"),
        }
    }
}

/// A file as it ends up in the outputs.
#[derive(Clone, Debug)]
pub struct FileOut {
    pub digest: Digest,
    pub executable: bool,
    pub props: Option<reapi::NodeProperties>,
}

/// A node of the merged view.
pub enum Node<'a> {
    File(FileOut),
    Symlink {
        target: String,
        props: Option<reapi::NodeProperties>,
    },
    Dir {
        upper: Option<PathBuf>,
        lower: Option<(Digest, &'a reapi::Directory)>,
    },
}

/// The merged view plus everything captured through it so far.
pub struct Merged<'a> {
    tree: &'a InputTree,
    upper: Option<PathBuf>,
    wanted: WantedProperties,
    /// Directory messages made, by digest (to upload, or to put in Trees).
    pub dirs: HashMap<Digest, reapi::Directory>,
    /// Files the action wrote, by digest, for upload.
    pub files: HashMap<Digest, PathBuf>,
    /// Bytes hashed (only upper-directory files are).
    pub hashed_bytes: u64,
    memo: HashMap<Digest, Digest>,
}

impl<'a> Merged<'a> {
    /// `upper` is the overlay upper directory (None: nothing changed).
    pub fn new(tree: &'a InputTree, upper: Option<PathBuf>, wanted: WantedProperties) -> Self {
        Merged {
            tree,
            upper: upper.filter(|u| u.is_dir()),
            wanted,
            dirs: HashMap::new(),
            files: HashMap::new(),
            hashed_bytes: 0,
            memo: HashMap::new(),
        }
    }

    fn function(&self) -> DigestFunction {
        self.tree.function
    }

    fn lower_dir(&self, node: &reapi::DirectoryNode) -> Result<(Digest, &'a reapi::Directory)> {
        let d = Digest::from_proto_field(self.function(), node.digest.as_ref(), "digest")?;
        Ok((d, self.tree.dir(&d)?))
    }

    /// The node at `components` below the input root, if any.
    pub fn lookup(&mut self, components: &[String]) -> Result<Option<Node<'a>>> {
        let root = self.tree.dir(&self.tree.root)?;
        let mut upper = self.upper.clone();
        let mut lower = Some((self.tree.root, root));
        for (i, name) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            let mut next_upper = None;
            if let Some(u) = &upper {
                let p = u.join(name);
                match fs::symlink_metadata(&p) {
                    Ok(m) if is_whiteout(&m) => return Ok(None),
                    Ok(m) if m.is_dir() => {
                        if is_opaque(&p) {
                            lower = None;
                        }
                        next_upper = Some(p);
                    }
                    Ok(m) => {
                        if !last {
                            return Ok(None);
                        }
                        return Ok(Some(self.upper_leaf(&p, &m)?));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("stat {}", p.display()), e)),
                }
            }
            let mut next_lower = None;
            if let Some((_, l)) = lower {
                if let Some(sub) = l.directories.iter().find(|d| &d.name == name) {
                    next_lower = Some(self.lower_dir(sub)?);
                } else if next_upper.is_none() {
                    if let Some(f) = l.files.iter().find(|f| &f.name == name) {
                        if !last {
                            return Ok(None);
                        }
                        return Ok(Some(Node::File(self.lower_file(f)?)));
                    }
                    if let Some(s) = l.symlinks.iter().find(|s| &s.name == name) {
                        if !last {
                            return Ok(None);
                        }
                        return Ok(Some(Node::Symlink {
                            target: s.target.clone(),
                            props: self.filter(s.node_properties.as_ref()),
                        }));
                    }
                }
            }
            if next_upper.is_none() && next_lower.is_none() {
                return Ok(None);
            }
            upper = next_upper;
            lower = next_lower;
        }
        Ok(Some(Node::Dir { upper, lower }))
    }

    fn filter(&self, props: Option<&reapi::NodeProperties>) -> Option<reapi::NodeProperties> {
        let p = props?;
        let out = reapi::NodeProperties {
            properties: Vec::new(),
            mtime: if self.wanted.mtime { p.mtime } else { None },
            unix_mode: if self.wanted.unix_mode {
                p.unix_mode
            } else {
                None
            },
        };
        (out != reapi::NodeProperties::default()).then_some(out)
    }

    fn stat_props(&self, m: &fs::Metadata) -> Option<reapi::NodeProperties> {
        let out = reapi::NodeProperties {
            properties: Vec::new(),
            mtime: self.wanted.mtime.then(|| Timestamp {
                seconds: m.mtime(),
                nanos: m.mtime_nsec() as i32,
            }),
            unix_mode: self.wanted.unix_mode.then(|| UInt32Value {
                value: m.mode() & 0o7777,
            }),
        };
        (out != reapi::NodeProperties::default()).then_some(out)
    }

    fn lower_file(&self, f: &reapi::FileNode) -> Result<FileOut> {
        let digest = Digest::from_proto_field(self.function(), f.digest.as_ref(), "digest")?;
        let mut props = self.filter(f.node_properties.as_ref());
        if self.wanted.unix_mode && props.as_ref().is_none_or(|p| p.unix_mode.is_none()) {
            let mode = if f.is_executable { 0o755 } else { 0o644 };
            props.get_or_insert_with(Default::default).unix_mode =
                Some(UInt32Value { value: mode });
        }
        Ok(FileOut {
            digest,
            executable: f.is_executable,
            props,
        })
    }

    /// A file or symlink found in the upper directory.
    fn upper_leaf(&mut self, p: &Path, m: &fs::Metadata) -> Result<Node<'a>> {
        if m.file_type().is_symlink() {
            let target =
                fs::read_link(p).map_err(|e| Error::io(format!("readlink {}", p.display()), e))?;
            return Ok(Node::Symlink {
                target: target.to_string_lossy().into_owned(),
                props: self.stat_props(m),
            });
        }
        if !m.is_file() {
            return Err(Error::FailedPrecondition(format!(
                "output {} is neither a file, a directory nor a symlink",
                p.display()
            )));
        }
        let digest = hash_file(self.function(), p)?;
        self.hashed_bytes += digest.size();
        self.files.insert(digest, p.to_path_buf());
        Ok(Node::File(FileOut {
            digest,
            executable: m.mode() & 0o111 != 0,
            props: self.stat_props(m),
        }))
    }

    /// Builds (and records) the output Directory for a merged directory,
    /// returning its digest. Lower-only subtrees are rebuilt from their
    /// messages without touching the disk.
    pub fn directory(
        &mut self,
        upper: Option<&Path>,
        lower: Option<(Digest, &'a reapi::Directory)>,
    ) -> Result<Digest> {
        if upper.is_none() {
            if let Some((ld, _)) = lower {
                if let Some(d) = self.memo.get(&ld) {
                    return Ok(*d);
                }
            }
        }
        enum Entry<'b> {
            File(FileOut),
            Symlink(String, Option<reapi::NodeProperties>),
            Dir(Option<PathBuf>, Option<(Digest, &'b reapi::Directory)>),
        }
        let mut entries: BTreeMap<String, Entry<'a>> = BTreeMap::new();
        if let Some((_, l)) = lower {
            for f in &l.files {
                entries.insert(f.name.clone(), Entry::File(self.lower_file(f)?));
            }
            for s in &l.symlinks {
                entries.insert(
                    s.name.clone(),
                    Entry::Symlink(s.target.clone(), self.filter(s.node_properties.as_ref())),
                );
            }
            for d in &l.directories {
                entries.insert(d.name.clone(), Entry::Dir(None, Some(self.lower_dir(d)?)));
            }
        }
        let mut own_props = lower.and_then(|(_, l)| self.filter(l.node_properties.as_ref()));
        if let Some(u) = upper {
            let meta = fs::symlink_metadata(u)
                .map_err(|e| Error::io(format!("stat {}", u.display()), e))?;
            own_props = self.stat_props(&meta);
            let read =
                fs::read_dir(u).map_err(|e| Error::io(format!("listing {}", u.display()), e))?;
            for item in read {
                let item = item.map_err(|e| Error::io(format!("listing {}", u.display()), e))?;
                let name = item
                    .file_name()
                    .to_str()
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::FailedPrecondition(format!(
                            "output name {:?} is not UTF-8",
                            item.file_name()
                        ))
                    })?;
                let p = item.path();
                let m = fs::symlink_metadata(&p)
                    .map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
                if is_whiteout(&m) {
                    entries.remove(&name);
                } else if m.is_dir() {
                    let below = match entries.remove(&name) {
                        Some(Entry::Dir(_, l)) if !is_opaque(&p) => l,
                        _ => None,
                    };
                    entries.insert(name, Entry::Dir(Some(p), below));
                } else {
                    let leaf = match self.upper_leaf(&p, &m)? {
                        Node::File(f) => Entry::File(f),
                        Node::Symlink { target, props } => Entry::Symlink(target, props),
                        Node::Dir { .. } => {
                            return Err(Error::Internal("upper leaf is a directory".into()))
                        }
                    };
                    entries.insert(name, leaf);
                }
            }
        }
        let mut dir = reapi::Directory {
            node_properties: own_props,
            ..Default::default()
        };
        for (name, entry) in entries {
            match entry {
                Entry::File(f) => dir.files.push(reapi::FileNode {
                    name,
                    digest: Some(f.digest.to_proto()),
                    is_executable: f.executable,
                    node_properties: f.props,
                }),
                Entry::Symlink(target, props) => dir.symlinks.push(reapi::SymlinkNode {
                    name,
                    target,
                    node_properties: props,
                }),
                Entry::Dir(u, l) => {
                    let d = self.directory(u.as_deref(), l)?;
                    dir.directories.push(reapi::DirectoryNode {
                        name,
                        digest: Some(d.to_proto()),
                    });
                }
            }
        }
        let digest = Digest::of_bytes(self.function(), &dir.encode_to_vec());
        self.dirs.insert(digest, dir);
        if let (None, Some((ld, _))) = (upper, lower) {
            self.memo.insert(ld, digest);
        }
        Ok(digest)
    }

    /// The REAPI Tree of the directory `root` (built by [`Self::directory`]):
    /// the root and every distinct descendant, parents before children.
    pub fn tree(&self, root: &Digest) -> Result<reapi::Tree> {
        let get = |d: &Digest| {
            self.dirs
                .get(d)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("directory {d} was not built")))
        };
        let root_dir = get(root)?;
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::VecDeque<Digest> = std::collections::VecDeque::new();
        let mut children = Vec::new();
        let push = |dir: &reapi::Directory,
                    queue: &mut std::collections::VecDeque<Digest>|
         -> Result<()> {
            for sub in &dir.directories {
                queue.push_back(Digest::from_proto_field(
                    self.function(),
                    sub.digest.as_ref(),
                    "digest",
                )?);
            }
            Ok(())
        };
        push(&root_dir, &mut queue)?;
        while let Some(d) = queue.pop_front() {
            if !seen.insert(d) {
                continue;
            }
            let dir = get(&d)?;
            push(&dir, &mut queue)?;
            children.push(dir);
        }
        Ok(reapi::Tree {
            root: Some(root_dir),
            children,
        })
    }
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// True if overlayfs marked the upper directory `p` opaque.
fn is_opaque(p: &Path) -> bool {
    let Ok(path) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|attr| {
            let Ok(name) = CString::new(*attr) else {
                return false;
            };
            let mut value = [0u8; 4];
            // SAFETY: both strings are NUL-terminated and live across the
            // call; the buffer pointer and its length describe `value`.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            n == 1 && value[0] == b'y'
        })
}

/// Hashes a file from the upper directory.
pub fn hash_file(function: DigestFunction, p: &Path) -> Result<Digest> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
    let mut hasher = function.hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}
