//! Checks on Directory messages from the network, before anything is made
//! on disk from them.
//!
//! A name must be a single, non-empty path component: no `/`, no NUL, not
//! `.` or `..`, and unique within its directory across files, directories
//! and symlinks. A symlink target must be non-empty and free of NUL; an
//! absolute target is refused unless the policy allows it (the CAS
//! advertises `symlink_absolute_path_strategy = ALLOWED` by default, so
//! that is the default here too). Targets are never followed by the
//! worker, so a relative target with `..` is harmless on the host and left
//! to the sandbox. Node properties must parse: `unix_mode` at most 0o7777.

use std::collections::HashSet;

use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;

use crate::error::{Error, Result};

/// What symlink targets the worker accepts in input trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymlinkPolicy {
    /// Accept targets starting with `/`.
    pub allow_absolute: bool,
}

impl Default for SymlinkPolicy {
    fn default() -> Self {
        SymlinkPolicy {
            allow_absolute: true,
        }
    }
}

/// Checks one path component from the network; `field` names it in errors.
pub fn check_name(name: &str, field: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is `.` or `..`"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.contains('\0') {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(Error::invalid(field, format!("name {name:?} {reason}")))
}

/// Checks a Directory message found at `path` (relative to the input root)
/// and returns the digests of its files (with their executable bit) and of
/// its subdirectories.
pub fn check_directory(
    dir: &reapi::Directory,
    path: &str,
    function: DigestFunction,
    policy: SymlinkPolicy,
) -> Result<CheckedDirectory> {
    let at = |name: &str| {
        if path.is_empty() {
            format!("input_root:{name}")
        } else {
            format!("input_root:{path}/{name}")
        }
    };
    let mut seen = HashSet::new();
    let mut unique = |name: &str| -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Err(Error::invalid(
                at(name),
                "name appears twice in its directory",
            ));
        }
        Ok(())
    };
    let mut checked = CheckedDirectory::default();
    for f in &dir.files {
        check_name(&f.name, &at(&f.name))?;
        unique(&f.name)?;
        let d = Digest::from_proto_field(function, f.digest.as_ref(), "digest")
            .map_err(|e| Error::invalid(at(&f.name), e.to_string()))?;
        check_properties(f.node_properties.as_ref(), &at(&f.name))?;
        checked.files.push((d, f.is_executable));
    }
    for s in &dir.directories {
        check_name(&s.name, &at(&s.name))?;
        unique(&s.name)?;
        let d = Digest::from_proto_field(function, s.digest.as_ref(), "digest")
            .map_err(|e| Error::invalid(at(&s.name), e.to_string()))?;
        checked.directories.push(d);
    }
    for l in &dir.symlinks {
        check_name(&l.name, &at(&l.name))?;
        unique(&l.name)?;
        if l.target.is_empty() {
            return Err(Error::invalid(at(&l.name), "symlink target is empty"));
        }
        if l.target.contains('\0') {
            return Err(Error::invalid(at(&l.name), "symlink target contains NUL"));
        }
        if l.target.starts_with('/') && !policy.allow_absolute {
            return Err(Error::invalid(
                at(&l.name),
                format!("absolute symlink target {:?} is not allowed", l.target),
            ));
        }
        check_properties(l.node_properties.as_ref(), &at(&l.name))?;
    }
    check_properties(dir.node_properties.as_ref(), &format!("input_root:{path}"))?;
    Ok(checked)
}

/// Digests a Directory refers to.
#[derive(Debug, Default)]
pub struct CheckedDirectory {
    /// Each file's digest and whether it is executable.
    pub files: Vec<(Digest, bool)>,
    /// The digests of the child directories.
    pub directories: Vec<Digest>,
}

fn check_properties(props: Option<&reapi::NodeProperties>, field: &str) -> Result<()> {
    let Some(props) = props else { return Ok(()) };
    if let Some(mode) = props.unix_mode.as_ref().map(|m| m.value) {
        if mode > 0o7777 {
            return Err(Error::invalid(
                field,
                format!("unix_mode {mode:#o} is above 0o7777"),
            ));
        }
    }
    if let Some(t) = &props.mtime {
        if !(0..1_000_000_000).contains(&t.nanos) {
            return Err(Error::invalid(
                field,
                format!("mtime nanos {} out of range", t.nanos),
            ));
        }
    }
    Ok(())
}

/// The `SubtreeReadOnly` value a Directory sets, if any: "true" starts a
/// read-only region, "false" makes a directory inside one writable again.
pub fn subtree_read_only(props: Option<&reapi::NodeProperties>) -> Option<bool> {
    props?
        .properties
        .iter()
        .find(|np| np.name == "SubtreeReadOnly")
        .map(|np| np.value != "false")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused_with_their_field() {
        for (name, why) in [
            ("", "empty"),
            ("..", "`..`"),
            (".", "`.`"),
            ("a/b", "`/`"),
            ("a\0b", "NUL"),
        ] {
            let e = check_name(name, "input_root:x").unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("input_root:x"), "{e}");
        }
        check_name("ok.txt", "f").unwrap();
    }
}
