//! Principal-name patterns with `*` wildcards, as grants and worker entries
//! write them (`ci-*`, `*@example.com`, `spiffe://farm/worker/*`).

use std::fmt;

use crate::error::Error;

/// A compiled pattern. `*` matches any run of characters, `/` included, and
/// nothing else is special: the rest must match exactly (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal pieces between the `*`s; one piece means no wildcard.
    pieces: Vec<String>,
}

impl Pattern {
    /// Compiles `text`. An empty pattern is refused: it would match only the
    /// empty name, which no authenticator produces, and is surely a mistake.
    pub fn new(text: &str) -> Result<Pattern, Error> {
        if text.is_empty() {
            return Err(Error::EmptyPattern);
        }
        Ok(Pattern {
            text: text.to_string(),
            pieces: text.split('*').map(str::to_string).collect(),
        })
    }

    /// `*`: every name.
    pub(crate) fn everything() -> Pattern {
        Pattern {
            text: "*".to_string(),
            pieces: vec![String::new(), String::new()],
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(split) => split,
            None => return false,
        };
        let Some((last, middle)) = rest.split_last() else {
            return name == first;
        };
        let Some(mut remaining) = name.strip_prefix(first.as_str()) else {
            return false;
        };
        // Greedy leftmost matching of each middle piece is correct for
        // `*`-only patterns: taking the earliest occurrence leaves the most
        // room for the pieces after it.
        for piece in middle {
            match remaining.find(piece.as_str()) {
                Some(at) => remaining = &remaining[at + piece.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, name: &str) -> bool {
        Pattern::new(p).unwrap().matches(name)
    }

    #[test]
    fn wildcards() {
        assert!(m("alice", "alice"));
        assert!(!m("alice", "alice2"));
        assert!(m("*", "anything/at:all"));
        assert!(m("*", ""));
        assert!(m("ci-*", "ci-main"));
        assert!(m("ci-*", "ci-"));
        assert!(!m("ci-*", "cd-main"));
        assert!(m("*@example.com", "bob@example.com"));
        assert!(!m("*@example.com", "bob@example.com.evil"));
        assert!(m("spiffe://farm/*/w*", "spiffe://farm/pool-a/w7"));
        assert!(!m("spiffe://farm/*/w*", "spiffe://farm/pool-a"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyybzc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxcyyb"));
        // The last piece must not overlap the one before it.
        assert!(!m("ab*ba", "aba"));
        assert!(m("ab*ba", "abba"));
        assert!(Pattern::new("").is_err());
        assert_eq!(Pattern::everything(), Pattern::new("*").unwrap());
    }
}
