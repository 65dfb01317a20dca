//! Exact comparison of two checked-out artifact trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One entry of a checked-out tree, as [`compare_trees`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A regular file: permission bits (`mode & 0o7777`) and contents.
    File { mode: u32, contents: Vec<u8> },
    /// A directory and its permission bits.
    Dir { mode: u32 },
    /// A symlink and its target, never followed.
    Symlink { target: PathBuf },
    /// Anything else (fifo, socket, device) with its full `st_mode`.
    Other { mode: u32 },
}

impl TreeEntry {
    fn kind(&self) -> &'static str {
        match self {
            TreeEntry::File { .. } => "file",
            TreeEntry::Dir { .. } => "directory",
            TreeEntry::Symlink { .. } => "symlink",
            TreeEntry::Other { .. } => "special file",
        }
    }
}

/// Every entry under `root` by relative path (the root itself excluded).
pub fn read_tree(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, TreeEntry>> {
    let mut entries = BTreeMap::new();
    read_tree_into(root, Path::new(""), &mut entries)?;
    Ok(entries)
}

fn read_tree_into(
    root: &Path,
    relative: &Path,
    entries: &mut BTreeMap<PathBuf, TreeEntry>,
) -> anyhow::Result<()> {
    let dir = root.join(relative);
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let rel = relative.join(entry.file_name());
        let path = entry.path();
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let mode = meta.permissions().mode();
        let file_type = meta.file_type();
        let item = if file_type.is_symlink() {
            TreeEntry::Symlink {
                target: fs::read_link(&path)?,
            }
        } else if file_type.is_dir() {
            read_tree_into(root, &rel, entries)?;
            TreeEntry::Dir {
                mode: mode & 0o7777,
            }
        } else if file_type.is_file() {
            TreeEntry::File {
                mode: mode & 0o7777,
                contents: fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            }
        } else {
            TreeEntry::Other { mode }
        };
        entries.insert(rel, item);
    }
    Ok(())
}

/// Compares two trees exactly: the same relative paths, file types,
/// contents, permission bits and symlink targets. Returns one readable line
/// per difference; empty means identical.
pub fn compare_trees(left: &Path, right: &Path) -> anyhow::Result<Vec<String>> {
    let a = read_tree(left)?;
    let b = read_tree(right)?;
    let mut diffs = Vec::new();
    for (path, entry) in &a {
        let shown = path.display();
        let Some(other) = b.get(path) else {
            diffs.push(format!(
                "{shown}: {} only in {}",
                entry.kind(),
                left.display()
            ));
            continue;
        };
        match (entry, other) {
            (
                TreeEntry::File {
                    mode: m1,
                    contents: c1,
                },
                TreeEntry::File {
                    mode: m2,
                    contents: c2,
                },
            ) => {
                if m1 != m2 {
                    diffs.push(format!("{shown}: mode {m1:04o} vs {m2:04o}"));
                }
                if c1 != c2 {
                    diffs.push(format!(
                        "{shown}: contents differ ({} vs {} bytes): {:?} vs {:?}",
                        c1.len(),
                        c2.len(),
                        preview(c1),
                        preview(c2)
                    ));
                }
            }
            (TreeEntry::Dir { mode: m1 }, TreeEntry::Dir { mode: m2 }) if m1 != m2 => {
                diffs.push(format!("{shown}: directory mode {m1:04o} vs {m2:04o}"));
            }
            (TreeEntry::Symlink { target: t1 }, TreeEntry::Symlink { target: t2 }) if t1 != t2 => {
                diffs.push(format!(
                    "{shown}: symlink to {} vs {}",
                    t1.display(),
                    t2.display()
                ));
            }
            (TreeEntry::Other { mode: m1 }, TreeEntry::Other { mode: m2 }) if m1 != m2 => {
                diffs.push(format!("{shown}: special file mode {m1:o} vs {m2:o}"));
            }
            (x, y) if x.kind() != y.kind() => {
                diffs.push(format!("{shown}: {} vs {}", x.kind(), y.kind()));
            }
            _ => {}
        }
    }
    for (path, entry) in &b {
        if !a.contains_key(path) {
            diffs.push(format!(
                "{}: {} only in {}",
                path.display(),
                entry.kind(),
                right.display()
            ));
        }
    }
    Ok(diffs)
}

fn preview(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    if bytes.len() > 60 {
        format!("{text}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn compare_trees_names_each_difference() -> anyhow::Result<()> {
        let a = tempfile::tempdir()?;
        let b = tempfile::tempdir()?;
        for root in [a.path(), b.path()] {
            fs::create_dir(root.join("d"))?;
            fs::write(root.join("d/same"), "x")?;
        }
        fs::write(a.path().join("f"), "one")?;
        fs::write(b.path().join("f"), "two")?;
        fs::set_permissions(b.path().join("d/same"), fs::Permissions::from_mode(0o600))?;
        fs::set_permissions(a.path().join("d/same"), fs::Permissions::from_mode(0o644))?;
        symlink("f", a.path().join("l"))?;
        symlink("g", b.path().join("l"))?;
        fs::write(a.path().join("only-a"), "")?;
        fs::create_dir(b.path().join("only-a"))?;
        fs::create_dir(b.path().join("only-b"))?;
        let diffs = compare_trees(a.path(), b.path())?;
        assert_eq!(diffs.len(), 5, "{diffs:#?}");
        assert!(diffs
            .iter()
            .any(|d| d.starts_with("d/same: mode 0644 vs 0600")));
        assert!(diffs.iter().any(|d| d.starts_with("f: contents differ")));
        assert!(diffs.iter().any(|d| d == "l: symlink to f vs g"));
        assert!(diffs.iter().any(|d| d == "only-a: file vs directory"));
        assert!(diffs
            .iter()
            .any(|d| d.starts_with("only-b: directory only in")));
        assert!(compare_trees(a.path(), a.path())?.is_empty());
        Ok(())
    }
}
