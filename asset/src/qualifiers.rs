//! Qualifiers of a Fetch or Push request, parsed and validated in one
//! place.
//!
//! The Remote Asset API's standard qualifiers (its `qualifiers.md`) are the
//! ones this server knows:
//!
//! | name | value | what the server does with it |
//! |---|---|---|
//! | `resource_type` | a media type, e.g. `application/octet-stream`, `application/x-git` | part of the key; `application/x-git` is never downloaded |
//! | `checksum.sri` | Subresource Integrity, e.g. `sha256-BASE64` ([`sri`]) | part of the key; a download must match it; a pushed blob must match it |
//! | `directory` | a relative path inside an archive or repository | part of the key; never downloaded (no unpacking) |
//! | `vcs.branch`, `vcs.commit` | a branch name, a commit id | part of the key; never downloaded (no VCS fetches) |
//!
//! Any other name is refused with INVALID_ARGUMENT naming it (the API
//! requires that of servers that cannot honour a qualifier), unless the
//! operator lists it in `[asset] ignored_qualifiers`: such a qualifier is
//! accepted and dropped, so it takes no part in matching. Names must be
//! unique within a request, as the API says.
//!
//! The validated set is kept sorted by name, so two requests with the same
//! qualifiers in another order name the same index entry.

pub mod sri;

use std::collections::{BTreeMap, BTreeSet};

use bazel_remote_apis::build::bazel::remote::asset::v1::Qualifier;

use crate::error::{AssetError, Result};
pub use sri::{Integrity, SriAlgorithm};

/// `resource_type`: what kind of resource the URI names (a media type).
pub const RESOURCE_TYPE: &str = "resource_type";
/// `checksum.sri`: the content's Subresource Integrity checksum.
pub const CHECKSUM_SRI: &str = "checksum.sri";
/// `directory`: a subdirectory of an archive or repository.
pub const DIRECTORY: &str = "directory";
/// `vcs.branch`: a branch of a repository.
pub const VCS_BRANCH: &str = "vcs.branch";
/// `vcs.commit`: a commit of a repository.
pub const VCS_COMMIT: &str = "vcs.commit";

/// The qualifier names this server knows.
pub const KNOWN: [&str; 5] = [
    RESOURCE_TYPE,
    CHECKSUM_SRI,
    DIRECTORY,
    VCS_BRANCH,
    VCS_COMMIT,
];

/// The resource type of a Git repository, which is never downloaded.
const GIT_RESOURCE_TYPE: &str = "application/x-git";

/// Longest qualifier value accepted; values are part of the index key.
const MAX_VALUE_BYTES: usize = 4096;

/// A request's validated qualifiers, sorted by name, ignorable ones
/// dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Qualifiers {
    values: BTreeMap<String, String>,
    integrity: Option<Integrity>,
}

impl Qualifiers {
    /// Validates `list`. Refuses duplicate names, unknown names that are
    /// not in `ignorable` (all of them named in one error), and values
    /// that do not parse; each error names the qualifier's index in the
    /// request.
    pub fn parse(list: &[Qualifier], ignorable: &BTreeSet<String>) -> Result<Qualifiers> {
        let mut values = BTreeMap::new();
        let mut unknown = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, q) in list.iter().enumerate() {
            let field = format!("qualifiers[{i}]");
            if q.name.is_empty() {
                return Err(AssetError::invalid(format!("{field}.name"), "is empty"));
            }
            if !seen.insert(q.name.as_str()) {
                return Err(AssetError::invalid(
                    format!("{field}.name"),
                    format!(
                        "{:?} is given twice (qualifier names must be unique)",
                        q.name
                    ),
                ));
            }
            if !KNOWN.contains(&q.name.as_str()) {
                if !ignorable.contains(&q.name) {
                    unknown.push(q.name.clone());
                }
                continue;
            }
            check_value(&q.name, &q.value).map_err(|reason| {
                AssetError::invalid(format!("{field}.value"), format!("{}: {reason}", q.name))
            })?;
            values.insert(q.name.clone(), q.value.clone());
        }
        if !unknown.is_empty() {
            return Err(AssetError::UnsupportedQualifiers(unknown));
        }
        let integrity = match values.get(CHECKSUM_SRI) {
            Some(v) => Some(Integrity::parse(v).map_err(|reason| {
                AssetError::invalid(
                    format!("qualifiers[{}].value", index_of(list, CHECKSUM_SRI)),
                    format!("{CHECKSUM_SRI}: {reason}"),
                )
            })?),
            None => None,
        };
        Ok(Qualifiers { values, integrity })
    }

    /// The `checksum.sri` qualifier, parsed.
    pub fn integrity(&self) -> Option<&Integrity> {
        self.integrity.as_ref()
    }

    /// The value of qualifier `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether no qualifier is given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The qualifiers as (name, value) pairs sorted by name: the form the
    /// index keys on.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Back to the wire form, sorted by name (for responses).
    pub fn to_proto(&self) -> Vec<Qualifier> {
        self.pairs()
            .map(|(name, value)| Qualifier {
                name: name.to_string(),
                value: value.to_string(),
            })
            .collect()
    }

    /// Why the server cannot fetch content with these qualifiers from the
    /// network itself, if it cannot: it unpacks no archives and clones no
    /// repositories, so anything that sub-selects content or names a VCS
    /// revision is served only from what was pushed.
    pub fn not_downloadable(&self) -> Option<String> {
        for name in [DIRECTORY, VCS_BRANCH, VCS_COMMIT] {
            if self.values.contains_key(name) {
                return Some(format!(
                    "the server does not fetch content qualified by {name:?} (it unpacks no archives and clones no repositories); push it instead"
                ));
            }
        }
        if self.get(RESOURCE_TYPE) == Some(GIT_RESOURCE_TYPE) {
            return Some(format!(
                "the server does not clone repositories ({RESOURCE_TYPE} {GIT_RESOURCE_TYPE}); push the content instead"
            ));
        }
        None
    }
}

fn index_of(list: &[Qualifier], name: &str) -> usize {
    list.iter().position(|q| q.name == name).unwrap_or(0)
}

/// Checks the value of a known qualifier.
fn check_value(name: &str, value: &str) -> std::result::Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "{} bytes, at most {MAX_VALUE_BYTES} are accepted",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    match name {
        RESOURCE_TYPE => check_media_type(value),
        DIRECTORY => check_relative_path(value),
        VCS_BRANCH | VCS_COMMIT => {
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                Err(format!("{value:?} is not a branch name or commit id"))
            } else {
                Ok(())
            }
        }
        // checksum.sri is parsed as a whole afterwards.
        _ => Ok(()),
    }
}

/// `type/subtype`, optionally followed by `;parameters`.
fn check_media_type(value: &str) -> std::result::Result<(), String> {
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    match essence.split_once('/') {
        Some((t, s)) if token(t) && token(s) => Ok(()),
        _ => Err(format!(
            "{value:?} is not a media type (type/subtype, e.g. application/octet-stream)"
        )),
    }
}

/// A relative path of plain names: no leading `/`, no `.` or `..`, no
/// empty component, no NUL.
fn check_relative_path(value: &str) -> std::result::Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.starts_with('/') {
        return Err(format!(
            "{value:?} is absolute; a relative path is required"
        ));
    }
    for part in value.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return Err(format!(
                "{value:?} has the component {part:?}; only plain names separated by / are accepted"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, value: &str) -> Qualifier {
        Qualifier {
            name: name.into(),
            value: value.into(),
        }
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn order_does_not_matter_and_values_are_checked() {
        let a = Qualifiers::parse(
            &[
                q("vcs.commit", "abc123"),
                q("resource_type", "application/x-git"),
            ],
            &none(),
        )
        .unwrap();
        let b = Qualifiers::parse(
            &[
                q("resource_type", "application/x-git"),
                q("vcs.commit", "abc123"),
            ],
            &none(),
        )
        .unwrap();
        assert_eq!(a, b);
        assert!(a.not_downloadable().is_some());
        assert_eq!(
            a.pairs().collect::<Vec<_>>(),
            vec![
                ("resource_type", "application/x-git"),
                ("vcs.commit", "abc123")
            ]
        );
        for (name, value) in [
            ("resource_type", "not a type"),
            ("directory", "../etc"),
            ("directory", "/abs"),
            ("directory", "a//b"),
            ("vcs.branch", ""),
            ("checksum.sri", "sha256-!!!"),
            ("checksum.sri", "md5-AAAA"),
        ] {
            let err = Qualifiers::parse(&[q(name, value)], &none()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}={value}");
            assert!(err.to_string().contains("qualifiers[0].value"), "{err}");
        }
    }

    #[test]
    fn unknown_names_are_refused_together_unless_ignorable() {
        let list = [
            q("bazel.canonical_id", "x"),
            q("colour", "red"),
            q("directory", "a/b"),
        ];
        match Qualifiers::parse(&list, &none()).unwrap_err() {
            AssetError::UnsupportedQualifiers(names) => {
                assert_eq!(names, vec!["bazel.canonical_id", "colour"])
            }
            other => panic!("{other}"),
        }
        let ignorable: BTreeSet<String> =
            ["bazel.canonical_id".to_string(), "colour".to_string()].into();
        let parsed = Qualifiers::parse(&list, &ignorable).unwrap();
        assert_eq!(
            parsed.pairs().collect::<Vec<_>>(),
            vec![("directory", "a/b")]
        );
        let dup = Qualifiers::parse(&[q("directory", "a"), q("directory", "b")], &none());
        assert!(dup.unwrap_err().to_string().contains("given twice"));
        let dup = Qualifiers::parse(&[q("colour", "a"), q("colour", "b")], &ignorable);
        assert!(dup.unwrap_err().to_string().contains("given twice"));
    }
}
