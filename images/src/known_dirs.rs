//! The directories of a layer being unpacked that are known to be real
//! directories, so that each entry's parents are not checked again.
//!
//! Every parent of an entry must be a directory, not a symlink, and checking
//! that with `lstat` costs one call per component, each walking the whole
//! path again: an entry at depth d costs d² steps in the kernel. A tar of a
//! few megabytes holding many entries 2,000 directories deep would keep a
//! core busy for days. Remembering which directories this unpack created
//! or checked makes each entry's parents cost a walk of this tree instead.
//!
//! The tree is only right if nothing else changes the layer's directory
//! meanwhile (it is private to the unpack) and if every removal by the
//! unpack [`KnownDirs::forget`]s the path: a directory replaced by a symlink
//! must never be trusted as a parent again.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Component, Path};

/// A tree of directory names, relative to the layer root.
#[derive(Debug, Default)]
pub(crate) struct KnownDirs {
    children: HashMap<OsString, KnownDirs>,
}

fn names(rel: &Path) -> impl Iterator<Item = &std::ffi::OsStr> {
    rel.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name),
        _ => None,
    })
}

impl KnownDirs {
    /// How many leading components of `rel` are known directories.
    pub(crate) fn known_prefix(&self, rel: &Path) -> usize {
        let mut node = self;
        let mut known = 0;
        for name in names(rel) {
            match node.children.get(name) {
                Some(child) => {
                    node = child;
                    known += 1;
                }
                None => break,
            }
        }
        known
    }

    /// Records that `rel` and all its ancestors are directories.
    pub(crate) fn insert(&mut self, rel: &Path) {
        let mut node = self;
        for name in names(rel) {
            node = node.children.entry(name.to_os_string()).or_default();
        }
    }

    /// Forgets `rel` and everything below it (it was removed).
    pub(crate) fn forget(&mut self, rel: &Path) {
        let all: Vec<_> = names(rel).collect();
        let Some((last, parents)) = all.split_last() else {
            self.children.clear();
            return;
        };
        let mut node = self;
        for name in parents {
            match node.children.get_mut(*name) {
                Some(child) => node = child,
                None => return,
            }
        }
        node.children.remove(*last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_known_until_forgotten() {
        let mut known = KnownDirs::default();
        known.insert(Path::new("a/b/c"));
        assert_eq!(known.known_prefix(Path::new("a/b/c/d")), 3);
        assert_eq!(known.known_prefix(Path::new("a/x")), 1);
        assert_eq!(known.known_prefix(Path::new("")), 0);
        known.forget(Path::new("a/b"));
        assert_eq!(known.known_prefix(Path::new("a/b/c")), 1);
        known.forget(Path::new("q/r"));
        assert_eq!(known.known_prefix(Path::new("a")), 1);
        known.forget(Path::new(""));
        assert_eq!(known.known_prefix(Path::new("a")), 0);
    }
}
