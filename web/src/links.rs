//! The pages' URLs, built in one place and parsed back in one place.
//!
//! ```text
//! /action/{function}/{hash}/{size}?instance=I[&response=HASH-SIZE]
//! /blob/{function}/{hash}/{size}?instance=I&view=V[&name=N]   V: file directory tree command action result response
//! /raw/{function}/{hash}/{size}?instance=I[&name=N]           the bytes, as a download
//! /operation/{name}                                            operations/… as the scheduler names it
//! /executions?instance=I&outcome=O    /invocations    /invocation?id=ID
//! ```
//!
//! Instance names go in the query (they may hold `/` and may be empty);
//! every value is percent-encoded here, and the HTML writer escapes the
//! whole URL again as an attribute.

use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;

use crate::error::PageError;

/// Percent-encodes everything but unreserved characters (and `/` when
/// `slash` is true).
fn encode(value: &str, slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query parameter's value, percent-encoded.
pub fn query(value: &str) -> String {
    encode(value, false)
}

fn path(function: DigestFunction, hash: &str, size: i64) -> String {
    format!("{}/{}/{size}", function.name(), encode(hash, false))
}

/// The page of the Action `digest` in `instance`.
pub fn action(instance: &str, function: DigestFunction, digest: &reapi::Digest) -> String {
    format!(
        "/action/{}?instance={}",
        path(function, &digest.hash, digest.size_bytes),
        query(instance)
    )
}

/// The page of a blob shown as `view` (see the module comment).
pub fn blob(
    instance: &str,
    function: DigestFunction,
    digest: &reapi::Digest,
    view: &str,
    name: Option<&str>,
) -> String {
    let mut url = format!(
        "/blob/{}?instance={}&view={}",
        path(function, &digest.hash, digest.size_bytes),
        query(instance),
        query(view)
    );
    if let Some(n) = name {
        url.push_str(&format!("&name={}", query(n)));
    }
    url
}

/// A blob's bytes as a download named `name`.
pub fn raw(instance: &str, digest: &Digest, name: Option<&str>) -> String {
    let d = digest.to_proto();
    let mut url = format!(
        "/raw/{}?instance={}",
        path(digest.function(), &d.hash, d.size_bytes),
        query(instance)
    );
    if let Some(n) = name {
        url.push_str(&format!("&name={}", query(n)));
    }
    url
}

/// An operation's page.
pub fn operation(name: &str) -> String {
    format!("/operation/{}", encode(name, true))
}

/// The recent executions, optionally of one instance and outcome.
pub fn executions(instance: Option<&str>, outcome: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(i) = instance {
        params.push(format!("instance={}", query(i)));
    }
    if let Some(o) = outcome {
        params.push(format!("outcome={}", query(o)));
    }
    if params.is_empty() {
        "/executions".into()
    } else {
        format!("/executions?{}", params.join("&"))
    }
}

/// One invocation's page.
pub fn invocation(id: &str) -> String {
    format!("/invocation?id={}", query(id))
}

/// A digest from the URL's `{function}/{hash}/{size}`; a bad part is a
/// 400 page naming it.
pub fn parse_digest(function: &str, hash: &str, size: &str) -> Result<Digest, PageError> {
    let f = DigestFunction::from_name(function).ok_or_else(|| {
        PageError::bad_request(format!(
            "unknown digest function {function:?} in the URL (sha256 or blake3)"
        ))
    })?;
    let size: i64 = size.parse().map_err(|_| {
        PageError::bad_request(format!("the size {size:?} in the URL is not a number"))
    })?;
    Digest::from_proto(
        f,
        &reapi::Digest {
            hash: hash.to_string(),
            size_bytes: size,
        },
    )
    .map_err(|e| PageError::bad_request(format!("the digest in the URL: {e}")))
}

/// A digest written as `HASH-SIZE` (the `response` parameter).
pub fn parse_dashed(function: DigestFunction, text: &str) -> Result<Digest, PageError> {
    let (hash, size) = text.rsplit_once('-').ok_or_else(|| {
        PageError::bad_request(format!("{text:?} is not a digest written HASH-SIZE"))
    })?;
    parse_digest(function.name(), hash, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_what_they_carry() {
        let d = reapi::Digest {
            hash: "ab".repeat(32),
            size_bytes: 12,
        };
        assert_eq!(
            action("team a/<x>", DigestFunction::Sha256, &d),
            format!(
                "/action/sha256/{}/12?instance=team%20a%2F%3Cx%3E",
                "ab".repeat(32)
            )
        );
        let b = blob("", DigestFunction::Blake3, &d, "file", Some("a&b.txt"));
        assert!(b.ends_with("?instance=&view=file&name=a%26b.txt"), "{b}");
        assert_eq!(operation("operations/x y"), "/operation/operations/x%20y");
    }

    #[test]
    fn digests_parse_back_and_bad_parts_are_named() {
        let d = parse_digest("sha256", &"0f".repeat(32), "7").unwrap();
        assert_eq!(d.size(), 7);
        let e = parse_digest("md5", "00", "1").unwrap_err();
        assert!(e.detail.contains("md5"), "{}", e.detail);
        let e = parse_digest("sha256", "zz", "1").unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let e = parse_digest("sha256", &"0f".repeat(32), "-1").unwrap_err();
        assert!(e.detail.contains("negative"), "{}", e.detail);
        let e = parse_digest("sha256", &"0f".repeat(32), "x").unwrap_err();
        assert!(e.detail.contains("\"x\""), "{}", e.detail);
        assert!(parse_dashed(DigestFunction::Sha256, "nodash").is_err());
        let dashed = format!("{}-9", "0f".repeat(32));
        assert_eq!(
            parse_dashed(DigestFunction::Sha256, &dashed)
                .unwrap()
                .size(),
            9
        );
    }
}
