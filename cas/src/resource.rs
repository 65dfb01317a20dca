//! ByteStream resource names, in every form the REAPI spec defines:
//!
//! ```text
//! read:  {instance}/blobs/{function/}{hash}/{size}
//!        {instance}/compressed-blobs/{compressor}/{function/}{hash}/{size}
//! write: {instance}/uploads/{uuid}/blobs/{function/}{hash}/{size}{/metadata…}
//!        {instance}/uploads/{uuid}/compressed-blobs/{compressor}/{function/}{hash}/{size}{/metadata…}
//! ```
//!
//! The instance name may be empty or contain slashes; REAPI forbids its
//! segments to be one of the keywords (`blobs`, `uploads`, …), so the first
//! keyword ends it. The function segment is left out for SHA-256 (a
//! "legacy" function in the spec's words) and present for BLAKE3. For
//! compressed blobs the hash and size are those of the *uncompressed* blob.
//! Every error is `INVALID_ARGUMENT` naming `resource_name`.

use crate::digest::{parse_hash, Digest, DigestFunction};
use crate::error::{Error, Result};

/// Segments that REAPI reserves; none may appear in an instance name.
const RESERVED: [&str; 7] = [
    "blobs",
    "uploads",
    "actions",
    "actionResults",
    "operations",
    "capabilities",
    "compressed-blobs",
];

/// How the bytes on the wire are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain bytes.
    Identity,
    /// Zstandard frames (`compressed-blobs/zstd/…`).
    Zstd,
}

impl Compression {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "identity" => Ok(Compression::Identity),
            "zstd" => Ok(Compression::Zstd),
            other => Err(bad(format!(
                "compressor {:?} is not supported (use zstd)",
                short(other)
            ))),
        }
    }
}

/// A parsed ByteStream read resource name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResource {
    pub instance_name: String,
    pub compression: Compression,
    pub digest: Digest,
}

/// A parsed ByteStream write resource name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResource {
    pub instance_name: String,
    /// The client's upload id. With the instance name *and* the blob it
    /// identifies one upload: REAPI lets a client reuse an id for different
    /// blobs.
    pub uuid: String,
    pub compression: Compression,
    pub digest: Digest,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::invalid("resource_name", reason)
}

fn short(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Splits off the instance name: everything before the first segment for
/// which `is_end` holds.
fn split_instance(
    segments: &[&str],
    is_end: impl Fn(&str) -> bool,
    expected: &str,
) -> Result<(String, usize)> {
    let end = segments
        .iter()
        .position(|s| is_end(s))
        .ok_or_else(|| bad(format!("has no `{expected}` segment")))?;
    let instance = &segments[..end];
    if let Some(reserved) = instance.iter().find(|s| RESERVED.contains(s)) {
        return Err(bad(format!(
            "instance name contains the reserved segment {reserved:?}"
        )));
    }
    if instance.iter().any(|s| s.is_empty()) {
        return Err(bad("instance name has an empty segment"));
    }
    Ok((instance.join("/"), end))
}

/// Parses `blobs/…` or `compressed-blobs/…` starting at `segments[0]`;
/// returns the compression, the digest and the unparsed rest.
fn parse_blob<'a, 'b>(segments: &'b [&'a str]) -> Result<(Compression, Digest, &'b [&'a str])> {
    let (compression, rest) = match segments.first() {
        Some(&"blobs") => (Compression::Identity, &segments[1..]),
        Some(&"compressed-blobs") => {
            let name = segments
                .get(1)
                .ok_or_else(|| bad("ends after `compressed-blobs`"))?;
            (Compression::parse(name)?, &segments[2..])
        }
        _ => return Err(bad("expected `blobs` or `compressed-blobs`")),
    };
    let (function, rest) = match rest.first() {
        Some(seg) if seg.len() != 64 => match DigestFunction::from_name(seg) {
            Some(f) => (f, &rest[1..]),
            None if seg.bytes().all(|b| b.is_ascii_alphanumeric()) && !seg.is_empty() => {
                return Err(bad(format!(
                    "digest function {:?} is not supported (use sha256 or blake3)",
                    short(seg)
                )))
            }
            None => (DigestFunction::Sha256, rest),
        },
        _ => (DigestFunction::Sha256, rest),
    };
    let hash = rest.first().ok_or_else(|| bad("has no hash"))?;
    let hash = parse_hash(hash).map_err(|e| bad(format!("bad hash: {e}")))?;
    let size = rest.get(1).ok_or_else(|| bad("has no size"))?;
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "size {:?} is not a decimal number",
            short(size)
        )));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| bad(format!("size {:?} is out of range", short(size))))?;
    Ok((compression, Digest::new(function, hash, size), &rest[2..]))
}

/// Parses a ByteStream `Read` resource name.
pub fn parse_read(name: &str) -> Result<ReadResource> {
    let segments: Vec<&str> = name.split('/').collect();
    let (instance_name, start) = split_instance(
        &segments,
        |s| s == "blobs" || s == "compressed-blobs",
        "blobs",
    )?;
    let (compression, digest, rest) = parse_blob(&segments[start..])?;
    if !rest.is_empty() {
        return Err(bad("has extra segments after the size"));
    }
    Ok(ReadResource {
        instance_name,
        compression,
        digest,
    })
}

/// Parses a ByteStream `Write` resource name. Segments after the size are
/// optional metadata that the spec says servers ignore.
pub fn parse_write(name: &str) -> Result<WriteResource> {
    let segments: Vec<&str> = name.split('/').collect();
    let (instance_name, start) = split_instance(&segments, |s| s == "uploads", "uploads")?;
    let uuid = segments
        .get(start + 1)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| bad("has no upload id after `uploads`"))?;
    let (compression, digest, _metadata) = parse_blob(&segments[start + 2..])?;
    Ok(WriteResource {
        instance_name,
        uuid: uuid.to_string(),
        compression,
        digest,
    })
}

/// The read resource name of a blob, in the form REAPI asks clients to use.
pub fn read_name(instance_name: &str, compression: Compression, digest: &Digest) -> String {
    let mut out = String::new();
    if !instance_name.is_empty() {
        out.push_str(instance_name);
        out.push('/');
    }
    out.push_str(&blob_part(compression, digest));
    out
}

/// The write resource name of a blob under upload id `uuid`.
pub fn write_name(
    instance_name: &str,
    uuid: &str,
    compression: Compression,
    digest: &Digest,
) -> String {
    let mut out = String::new();
    if !instance_name.is_empty() {
        out.push_str(instance_name);
        out.push('/');
    }
    out.push_str("uploads/");
    out.push_str(uuid);
    out.push('/');
    out.push_str(&blob_part(compression, digest));
    out
}

fn blob_part(compression: Compression, digest: &Digest) -> String {
    let mut out = match compression {
        Compression::Identity => "blobs/".to_string(),
        Compression::Zstd => "compressed-blobs/zstd/".to_string(),
    };
    if digest.function() != DigestFunction::Sha256 {
        out.push_str(digest.function().name());
        out.push('/');
    }
    out.push_str(&digest.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(f: DigestFunction) -> Digest {
        Digest::of_bytes(f, b"resource")
    }

    #[test]
    fn read_forms() {
        let s = d(DigestFunction::Sha256);
        let b = d(DigestFunction::Blake3);
        let r = parse_read(&format!("blobs/{s}")).unwrap();
        assert_eq!(
            (r.instance_name.as_str(), r.compression, r.digest),
            ("", Compression::Identity, s)
        );
        let r = parse_read(&format!("a/b/c/blobs/blake3/{}", b)).unwrap();
        assert_eq!((r.instance_name.as_str(), r.digest), ("a/b/c", b));
        let r = parse_read(&format!("main/compressed-blobs/zstd/{s}")).unwrap();
        assert_eq!(
            (r.instance_name.as_str(), r.compression),
            ("main", Compression::Zstd)
        );
        let r = parse_read(&format!("compressed-blobs/zstd/blake3/{b}")).unwrap();
        assert_eq!(r.digest, b);
        for c in [Compression::Identity, Compression::Zstd] {
            for digest in [s, b] {
                for inst in ["", "x", "x/y/z"] {
                    let back = parse_read(&read_name(inst, c, &digest)).unwrap();
                    assert_eq!(
                        back,
                        ReadResource {
                            instance_name: inst.into(),
                            compression: c,
                            digest
                        }
                    );
                }
            }
        }
    }

    #[test]
    fn write_forms() {
        let s = d(DigestFunction::Sha256);
        let w = parse_write(&format!("inst/a/uploads/u-1/blobs/{s}/meta/data")).unwrap();
        assert_eq!(
            (w.instance_name.as_str(), w.uuid.as_str(), w.digest),
            ("inst/a", "u-1", s)
        );
        let w = parse_write(&format!("uploads/u/compressed-blobs/zstd/{s}")).unwrap();
        assert_eq!(w.compression, Compression::Zstd);
        let b = d(DigestFunction::Blake3);
        let back = parse_write(&write_name("i/j", "id", Compression::Zstd, &b)).unwrap();
        assert_eq!(
            (back.instance_name.as_str(), back.uuid.as_str(), back.digest),
            ("i/j", "id", b)
        );
    }

    #[test]
    fn malformed_names_name_the_field() {
        let s = d(DigestFunction::Sha256);
        let h = s.hash_hex();
        let cases = [
            String::new(),
            "blobs".into(),
            format!("blobs/{h}"),
            format!("blobs/{h}/-1"),
            format!("blobs/{h}/+1"),
            format!("blobs/{h}/99999999999999999999"),
            format!("blobs/{h}/1/extra"),
            format!("blobs/sha1/{h}/1"),
            format!("blobs/{}/1", &h[..63]),
            format!("blobs/{}/1", h.to_uppercase()),
            format!("compressed-blobs/brotli/{h}/1"),
            "compressed-blobs".to_string(),
            format!("a//b/blobs/{h}/1"),
            format!("/blobs/{h}/1"),
            format!("uploads/u/blobs/{h}/1"),
        ];
        for c in &cases {
            let e = parse_read(c).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{c}");
            assert!(e.to_string().starts_with("resource_name"), "{c}: {e}");
        }
        for c in [
            format!("blobs/{h}/1"),
            format!("uploads//blobs/{h}/1"),
            "uploads/u".to_string(),
            format!("uploads/u/other/{h}/1"),
            format!("blobs/uploads/u/blobs/{h}/1"),
        ] {
            let e = parse_write(&c).unwrap_err();
            assert!(e.to_string().starts_with("resource_name"), "{c}: {e}");
        }
    }
}
