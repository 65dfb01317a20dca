//! The URIs of a request: each must be an absolute URI (RFC 3986: a
//! scheme, then the rest), as the Remote Asset API names content by URI.
//! BuildStream's `urn:fdc:buildstream.build:2020:artifact:…` names are as
//! valid as `https://` URLs; only the latter can be downloaded.
//!
//! The string the client sent is what the index keys on, unchanged, so
//! the same bytes always name the same entry; the parsed form is used only
//! to download.

use crate::error::{AssetError, Result};

/// Longest URI accepted (it is part of an index key).
pub const MAX_URI_BYTES: usize = 8192;

/// Most URIs one request may carry.
pub const MAX_URIS: usize = 1000;

/// A URI of a request, checked.
#[derive(Clone, Debug)]
pub struct AssetUri {
    /// As the client sent it.
    pub text: String,
    /// Parsed.
    pub url: url::Url,
}

/// Checks the `uris` field: at least one, each an absolute URI without
/// whitespace or control characters.
pub fn parse_all(uris: &[String]) -> Result<Vec<AssetUri>> {
    if uris.is_empty() {
        return Err(AssetError::invalid("uris", "at least one URI is required"));
    }
    if uris.len() > MAX_URIS {
        return Err(AssetError::invalid(
            "uris",
            format!("{} URIs, at most {MAX_URIS} per request", uris.len()),
        ));
    }
    uris.iter()
        .enumerate()
        .map(|(i, text)| {
            parse(text).map_err(|reason| AssetError::invalid(format!("uris[{i}]"), reason))
        })
        .collect()
}

/// One URI; the error says what is wrong with it.
pub fn parse(text: &str) -> std::result::Result<AssetUri, String> {
    if text.is_empty() {
        return Err("is empty; a URI is required".into());
    }
    if text.len() > MAX_URI_BYTES {
        return Err(format!("{} bytes, at most {MAX_URI_BYTES}", text.len()));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} is not a URI: it contains {c:?}"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URI: {e}"))?;
    Ok(AssetUri {
        text: text.to_string(),
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_not_uris() {
        for ok in [
            "https://example.com/a.tar.gz",
            "http://127.0.0.1:8080/x?y=1",
            "urn:fdc:buildstream.build:2020:artifact:proj/hello/0123abcd",
            "git+ssh://git@example.com/repo.git",
        ] {
            assert_eq!(parse(ok).unwrap().text, ok);
        }
        for bad in [
            "",
            "not a uri",
            "relative/path",
            "http://",
            "://x",
            "a b:c",
            "http://x/\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
        let err = parse_all(&[]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = parse_all(&["https://ok/".into(), "nope".into()]).unwrap_err();
        assert!(err.to_string().starts_with("uris[1]: "), "{err}");
    }
}
