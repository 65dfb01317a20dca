//! Image references as Bazel users write them in `container-image`.
//!
//! `docker://REGISTRY/REPO[:TAG][@sha256:DIGEST]`, with or without the
//! `docker://` prefix. A reference with no registry part means Docker Hub, as
//! Docker reads it (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;

use crate::error::{Error, Result};

/// The registry assumed when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `127.0.0.1:5000` or `docker.io`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if one was given (`latest` is assumed when neither tag nor digest is).
    pub tag: Option<String>,
    /// `sha256:<64 hex>`, if one was given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `[docker://]REGISTRY/REPO[:TAG][@sha256:DIGEST]`.
    pub fn parse(input: &str) -> Result<ImageRef> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let rest = input.strip_prefix("docker://").unwrap_or(input);
        if rest.is_empty() {
            return Err(bad("empty reference"));
        }
        if let Some(scheme_end) = rest.find("://") {
            return Err(bad(&format!(
                "unsupported transport {:?}: only docker:// is known",
                &rest[..scheme_end]
            )));
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (name_tag, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(parse_digest(d).map_err(|r| bad(&r))?)),
            None => (rest, None),
        };
        // A tag is after the last ':' that follows the last '/', so that a
        // registry port (`host:5000/repo`) is not taken for a tag.
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name_tag[last_slash + i + 1..];
                validate_tag(tag).map_err(|r| bad(&r))?;
                (&name_tag[..last_slash + i], Some(tag.to_string()))
            }
            None => (name_tag, None),
        };
        let (registry, repository) = split_registry(name);
        if registry.is_empty() {
            return Err(bad("empty registry"));
        }
        validate_repository(&repository).map_err(|r| bad(&r))?;
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `REGISTRY/REPO`, the part policies match on.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest` (the tag is kept for display only).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The host part of the registry, without the port and IPv6 brackets.
    pub fn registry_host(&self) -> &str {
        host_of(&self.registry)
    }

    /// The reference for the registry client: by digest when there is one,
    /// so that a tag is never resolved twice within one pull.
    pub(crate) fn to_client_reference(&self) -> oci_client::Reference {
        match (&self.digest, &self.tag) {
            (Some(d), _) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.clone(),
            ),
            (None, Some(t)) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                "latest".to_string(),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

/// Checks `sha256:<64 lower-case hex>` and returns it.
pub fn parse_digest(d: &str) -> std::result::Result<String, String> {
    let hex = d
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("digest {d:?} is not sha256:<hex>"))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {d:?} must be sha256: followed by 64 lower-case hex digits"
        ));
    }
    Ok(d.to_string())
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Docker's rule: the first component is a registry if it has a '.' or a ':'
/// or is `localhost`; otherwise the whole name is a Docker Hub repository.
fn split_registry(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => {
            let repo = if name.contains('/') {
                name.to_string()
            } else {
                format!("library/{name}")
            };
            (DEFAULT_REGISTRY.to_string(), repo)
        }
    }
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() {
        return Err("empty repository".to_string());
    }
    for comp in repo.split('/') {
        let ok = !comp.is_empty()
            && comp.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && comp.as_bytes()[0].is_ascii_alphanumeric();
        if !ok {
            return Err(format!(
                "repository component {comp:?} must be lower-case [a-z0-9._-], starting with a letter or digit"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn full_form_with_port_tag_and_digest() {
        let r = ImageRef::parse(&format!("docker://127.0.0.1:5000/team/base:v1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/base");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.registry_host(), "127.0.0.1");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/team/base:v1@{D}"));
    }

    #[test]
    fn port_is_not_a_tag_and_latest_is_assumed() {
        let r = ImageRef::parse("localhost:5000/base").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "base");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert!(r.digest.is_none());
    }

    #[test]
    fn docker_hub_short_names() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox");
        let r = ImageRef::parse("user/tool:1.0").unwrap();
        assert_eq!(r.name(), "docker.io/user/tool");
    }

    #[test]
    fn digest_only_has_no_tag() {
        let r = ImageRef::parse(&format!("[::1]:5000/x@{D}")).unwrap();
        assert_eq!(r.registry_host(), "::1");
        assert!(r.tag.is_none());
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (input, needle) in [
            ("", "empty"),
            ("docker://", "empty"),
            ("oci://x/y", "transport"),
            ("reg.io/Upper", "lower-case"),
            ("reg.io/x:", "tag"),
            ("reg.io/x@sha256:abc", "64"),
            ("reg.io/x@md5:abc", "sha256"),
            ("reg.io//x", "repository component"),
            ("reg.io/x y", "whitespace"),
        ] {
            let err = ImageRef::parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }
}
