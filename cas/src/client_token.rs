//! The bearer token a Corral client sends on every call, read from a file.
//!
//! A token lives in a file rather than on the command line (where `ps`
//! shows it to every user) or in the configuration (which is often
//! readable by more people than the secret should be). Tokens expire (a
//! JWT has an `exp`), so a long-lived client such as a worker re-reads the
//! file when it changes: whoever renews the token replaces the file, and
//! the next calls carry the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tonic::codegen::http::HeaderValue;

use crate::error::{Error, Result};

/// How often, at most, the file is checked for a new token.
const RECHECK: Duration = Duration::from_secs(5);

/// A token file and the `authorization` header made from it. Cheap to
/// clone; clones share the file's state.
#[derive(Clone)]
pub struct BearerToken {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    header: HeaderValue,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl std::fmt::Debug for BearerToken {
    // Never the token itself: Debug output ends up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// Reads the token in `path`. The file holds the token alone (leading
    /// and trailing white space, such as the final newline, is dropped),
    /// sent as `authorization: Bearer TOKEN`; or a whole header value that
    /// starts with `Bearer ` or `Basic `, sent as it is.
    pub fn load(path: &Path) -> Result<Self> {
        let (header, modified) = read(path)?;
        Ok(BearerToken {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                state: Mutex::new(State {
                    header,
                    modified,
                    checked: Instant::now(),
                }),
            }),
        })
    }

    /// The file the token is read from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The `authorization` header value, re-read from the file when it
    /// changed (checked at most every few seconds). A file that cannot be
    /// read any more, or holds no usable token, keeps the previous token
    /// and logs why: a renewal that is half done must not stop the calls.
    pub fn header(&self) -> HeaderValue {
        let mut state = match self.inner.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let modified = modified(&self.inner.path);
            if modified != state.modified {
                match read(&self.inner.path) {
                    Ok((header, modified)) => {
                        tracing::info!(file = %self.inner.path.display(), "token file changed; using the new token");
                        state.header = header;
                        state.modified = modified;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the previous token");
                    }
                }
            }
        }
        state.header.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The header value from the file at `path`, and its modification time.
fn read(path: &Path) -> Result<(HeaderValue, Option<SystemTime>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading the token file {}", path.display()), e))?;
    let token = text.trim();
    let invalid =
        |reason: &str| Error::invalid("token_file", format!("{}: {reason}", path.display()));
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
    Ok((header, modified(path)))
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
        let token = BearerToken::load(&file).unwrap();
        // Pretend the last check was long ago, and the file was written
        // at another time than the one recorded.
        let age = |t: &BearerToken| {
            let mut s = t.inner.state.lock().unwrap();
            s.checked = Instant::now() - RECHECK * 2;
            s.modified = Some(SystemTime::UNIX_EPOCH);
        };
        std::fs::write(&file, "second").unwrap();
        age(&token);
        assert_eq!(token.header(), "Bearer second");
        std::fs::write(&file, "").unwrap();
        age(&token);
        assert_eq!(token.header(), "Bearer second");
    }
}
