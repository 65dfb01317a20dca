//! Instance-name prefixes, matched per `/`-separated component.

use std::fmt;

/// An instance-name prefix a tenant owns. It matches an instance name equal
/// to it or continuing it with `/`: `team-a` matches `team-a` and
/// `team-a/x`, never `team-ab`. The empty prefix is the empty instance name
/// (Bazel's default) and matches only it: a prefix that matched every name
/// would make every other tenant's prefix overlap it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstancePrefix(String);

impl InstancePrefix {
    /// Checks a prefix: no empty component (so no leading, trailing or
    /// doubled `/`), no `.` or `..` component, no NUL. The reason is given
    /// when it is refused.
    pub fn new(text: &str) -> Result<InstancePrefix, &'static str> {
        if text.is_empty() {
            return Ok(InstancePrefix(String::new()));
        }
        if text.contains('\0') {
            return Err("it contains a NUL byte");
        }
        for component in text.split('/') {
            match component {
                "" => return Err("it has an empty component (a leading, trailing or doubled `/`)"),
                "." | ".." => return Err("it has a `.` or `..` component"),
                _ => {}
            }
        }
        Ok(InstancePrefix(text.to_string()))
    }

    /// The prefix as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `instance` is this prefix or under it.
    pub fn matches(&self, instance: &str) -> bool {
        if self.0.is_empty() {
            return instance.is_empty();
        }
        match instance.strip_prefix(self.0.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// Whether some instance name matches both prefixes: one of them is the
    /// other or under it.
    pub fn overlaps(&self, other: &InstancePrefix) -> bool {
        self.matches(&other.0) || other.matches(&self.0)
    }
}

/// The prefixes an instance name could be owned under, longest first:
/// `a/b/c`, `a/b`, `a`. The empty name yields only itself.
pub(crate) fn candidate_prefixes(instance: &str) -> impl Iterator<Item = &str> {
    let cuts = instance
        .rmatch_indices('/')
        .filter(|(at, _)| *at > 0)
        .map(move |(at, _)| &instance[..at]);
    std::iter::once(instance).chain(cuts)
}

impl fmt::Display for InstancePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> InstancePrefix {
        InstancePrefix::new(s).unwrap()
    }

    #[test]
    fn matching_is_per_component() {
        assert!(p("team-a").matches("team-a"));
        assert!(p("team-a").matches("team-a/x"));
        assert!(p("team-a").matches("team-a/x/y"));
        assert!(!p("team-a").matches("team-ab"));
        assert!(!p("team-a").matches("team"));
        assert!(!p("team-a").matches("x/team-a"));
        assert!(p("a/b").matches("a/b/c"));
        assert!(!p("a/b").matches("a/bc"));
        assert!(!p("a/b").matches("a"));
        assert!(p("").matches(""));
        assert!(!p("").matches("team-a"));
    }

    #[test]
    fn overlap() {
        assert!(p("team-a").overlaps(&p("team-a")));
        assert!(p("team-a").overlaps(&p("team-a/ci")));
        assert!(p("team-a/ci").overlaps(&p("team-a")));
        assert!(!p("team-a").overlaps(&p("team-ab")));
        assert!(!p("team-a/x").overlaps(&p("team-a/y")));
        assert!(!p("").overlaps(&p("team-a")));
        assert!(p("").overlaps(&p("")));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["/a", "a/", "a//b", "a/../b", ".", "a\0b"] {
            assert!(InstancePrefix::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn candidates_longest_first() {
        let c: Vec<&str> = candidate_prefixes("a/b/c").collect();
        assert_eq!(c, ["a/b/c", "a/b", "a"]);
        let c: Vec<&str> = candidate_prefixes("").collect();
        assert_eq!(c, [""]);
        let c: Vec<&str> = candidate_prefixes("x").collect();
        assert_eq!(c, ["x"]);
        // A leading `/` never makes the empty name a candidate.
        let c: Vec<&str> = candidate_prefixes("/x").collect();
        assert_eq!(c, ["/x"]);
    }
}
