//! The bearer token a Corral client sends on every call, read from a file.
//!
//! A token lives in a file rather than on the command line (where `ps`
//! shows it to every user) or in the configuration (which is often
//! readable by more people than the secret should be). Tokens expire (a
//! JWT has an `exp`), so a long-lived client such as a worker re-reads the
//! file when it changes: whoever renews the token replaces the file, and
//! the next calls carry the new one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_auth::{SystemClock, WatchedFile};
use tonic::codegen::http::HeaderValue;

use crate::error::{Error, Result};

/// How often, at most, the file is checked for a new token.
const RECHECK: Duration = Duration::from_secs(5);

/// A token file and the `authorization` header made from it. Cheap to
/// clone; clones share the file's state.
#[derive(Clone)]
pub struct BearerToken {
    file: Arc<WatchedFile<HeaderValue>>,
}

impl std::fmt::Debug for BearerToken {
    // Never the token itself: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("path", &self.file.path())
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// Reads the token in `path`. The file holds the token alone (leading
    /// and trailing white space, such as the final newline, is dropped),
    /// sent as `authorization: Bearer TOKEN`; or a whole header value that
    /// starts with `Bearer ` or `Basic `, sent as it is.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_checking_every(path, RECHECK)
    }

    fn load_checking_every(path: &Path, every: Duration) -> Result<Self> {
        let file = WatchedFile::open(
            path,
            Box::new(header_of),
            every,
            Arc::new(SystemClock::default()),
        )
        .map_err(|e| match e {
            corral_auth::Error::Io { path, source } => {
                Error::io(format!("reading the token file {}", path.display()), source)
            }
            corral_auth::Error::Setting { field, reason } => Error::invalid(field, reason),
            other => Error::invalid("token_file", other.to_string()),
        })?;
        Ok(BearerToken {
            file: Arc::new(file),
        })
    }

    /// The file the token is read from.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The `authorization` header value, re-read from the file when its
    /// contents changed (checked at most every few seconds). A file that
    /// cannot be read any more, or holds no usable token, keeps the
    /// previous token and logs why: a renewal that is half done must not
    /// stop the calls.
    pub fn header(&self) -> HeaderValue {
        (*self.file.get()).clone()
    }
}

/// The header value a token file's bytes make.
fn header_of(path: &Path, bytes: &[u8]) -> corral_auth::Result<HeaderValue> {
    let invalid = |reason: &str| corral_auth::Error::Setting {
        field: "token_file".into(),
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("the file is not UTF-8"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid("the file is empty"));
    }
    let value = if token.starts_with("Bearer ") || token.starts_with("Basic ") {
        token.to_string()
    } else {
        if token.chars().any(char::is_whitespace) {
            return Err(invalid(
                "the token holds white space (the file should hold the token alone)",
            ));
        }
        format!("Bearer {token}")
    };
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| invalid("the token holds characters a header cannot carry"))?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_sent_as_bearer_and_a_whole_header_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let token = BearerToken::load(&file).unwrap();
        assert_eq!(token.header(), "Bearer s3cret");
        assert!(token.header().is_sensitive());
        assert!(!format!("{token:?}").contains("s3cret"));
        std::fs::write(&file, "Basic dTpw\n").unwrap();
        assert_eq!(BearerToken::load(&file).unwrap().header(), "Basic dTpw");
    }

    #[test]
    fn a_missing_empty_or_malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = BearerToken::load(&missing).unwrap_err().to_string();
        assert!(e.contains("token file") && e.contains("nope"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = BearerToken::load(&empty).unwrap_err().to_string();
        assert!(e.contains("empty") && e.contains("token_file"), "{e}");
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "two words\n").unwrap();
        let e = BearerToken::load(&spaced).unwrap_err().to_string();
        assert!(e.contains("white space"), "{e}");
    }

    #[test]
    fn a_renewed_token_is_picked_up_and_a_broken_file_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first").unwrap();
        let token = BearerToken::load_checking_every(&file, Duration::ZERO).unwrap();
        assert_eq!(token.header(), "Bearer first");
        // Same size, same second: the contents tell.
        std::fs::write(&file, "secnd").unwrap();
        assert_eq!(token.header(), "Bearer secnd");
        std::fs::write(&file, "").unwrap();
        assert_eq!(token.header(), "Bearer secnd");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(token.header(), "Bearer secnd");
    }
}
