//! Fetching an input root's Directory messages, level by level, through
//! the local CAS (so they are cached like any blob), checking each one.
//! What the local CAS lacks is fetched under the action's context, from its
//! instance's namespace.

use std::collections::{HashMap, HashSet};

use corral_cas::message::{self, MessageLimits};
use corral_cas::{Digest, DigestFunction, RequestContext};
use corral_proto::reapi;

use crate::error::{Error, Result};
use crate::localcas::LocalCas;
use crate::validate::{check_directory, SymlinkPolicy};

/// Deepest directory nesting accepted in an input root.
pub const MAX_DEPTH: usize = 256;

/// An input root: every Directory message by digest, all checked.
#[derive(Debug)]
pub struct InputTree {
    /// The digest function of every digest in the tree.
    pub function: DigestFunction,
    /// The input root's digest.
    pub root: Digest,
    /// Every directory of the tree, once each, by digest.
    pub dirs: HashMap<Digest, reapi::Directory>,
    /// Every (file digest, executable) pair, once each: a blob used both
    /// plain and executable needs both sources.
    pub files: Vec<(Digest, bool)>,
    /// Number of file nodes (counting repeats).
    pub file_count: u64,
}

impl InputTree {
    /// The Directory message `digest`; every digest reachable from the root
    /// is present once the tree is fetched.
    pub fn dir(&self, digest: &Digest) -> Result<&reapi::Directory> {
        self.dirs
            .get(digest)
            .ok_or_else(|| Error::Internal(format!("directory {digest} not in the fetched tree")))
    }
}

/// The request field a Directory at `path` of the input root is named by.
fn field_of(path: &str) -> String {
    if path.is_empty() {
        "input_root_digest".to_string()
    } else {
        format!("input_root:{path}")
    }
}

/// Fetches and checks the tree under `root`, in `ctx`'s instance name and
/// digest function.
pub async fn fetch_tree(
    cas: &LocalCas,
    ctx: &RequestContext,
    root: Digest,
    policy: SymlinkPolicy,
) -> Result<InputTree> {
    let function = ctx.digest_function();
    let mut dirs: HashMap<Digest, reapi::Directory> = HashMap::new();
    let mut files: HashSet<(Digest, bool)> = HashSet::new();
    let mut file_count = 0u64;
    // (digest, path of one place it appears) for error messages.
    let mut level: Vec<(Digest, String)> = vec![(root, String::new())];
    let mut depth = 0;
    while !level.is_empty() {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(Error::invalid(
                "input_root_digest",
                format!("input root is nested deeper than {MAX_DEPTH} directories"),
            ));
        }
        // A Directory over its cap is refused from its digest, before it
        // is fetched or read into memory.
        let limits = MessageLimits::default();
        for (digest, path) in &level {
            limits.check::<reapi::Directory>(digest, &field_of(path))?;
        }
        let digests: Vec<Digest> = level.iter().map(|(d, _)| *d).collect();
        cas.ensure(ctx, &digests).await?;
        let mut next = Vec::new();
        for (digest, path) in level {
            if dirs.contains_key(&digest) {
                continue;
            }
            let data = cas.get(ctx, &digest).await?;
            let dir: reapi::Directory = message::decode(&digest, &field_of(&path), data)?;
            let checked = check_directory(&dir, &path, function, policy)?;
            file_count += checked.files.len() as u64;
            files.extend(checked.files);
            for (sub, node) in checked.directories.into_iter().zip(&dir.directories) {
                if !dirs.contains_key(&sub) {
                    let sub_path = if path.is_empty() {
                        node.name.clone()
                    } else {
                        format!("{path}/{}", node.name)
                    };
                    next.push((sub, sub_path));
                }
            }
            dirs.insert(digest, dir);
        }
        level = next;
    }
    let mut list: Vec<(Digest, bool)> = files.into_iter().collect();
    list.sort();
    Ok(InputTree {
        function,
        root,
        dirs,
        files: list,
        file_count,
    })
}
