//! The `checksum.sri` qualifier: W3C Subresource Integrity metadata, as
//! Bazel sends it for `http_archive` / `http_file` (`sha256-BASE64`).
//!
//! A value is one or more whitespace-separated `ALGORITHM-BASE64`
//! expressions (an `?options` suffix is allowed and ignored, as SRI says).
//! SHA-256, SHA-384 and SHA-512 are supported; anything else, a value that
//! is not base64 or a digest of the wrong length is refused. As in SRI,
//! only the strongest algorithm given counts, and content matches when it
//! equals any of that algorithm's values.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use sha2::Digest as _;

/// Standard base64, padding optional when decoding, always written.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The hash algorithms of `checksum.sri`, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SriAlgorithm {
    /// `sha256`
    Sha256,
    /// `sha384`
    Sha384,
    /// `sha512`
    Sha512,
}

impl SriAlgorithm {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(SriAlgorithm::Sha256),
            "sha384" => Some(SriAlgorithm::Sha384),
            "sha512" => Some(SriAlgorithm::Sha512),
            _ => None,
        }
    }

    /// The SRI name (`sha256` …).
    pub fn name(self) -> &'static str {
        match self {
            SriAlgorithm::Sha256 => "sha256",
            SriAlgorithm::Sha384 => "sha384",
            SriAlgorithm::Sha512 => "sha512",
        }
    }

    fn len(self) -> usize {
        match self {
            SriAlgorithm::Sha256 => 32,
            SriAlgorithm::Sha384 => 48,
            SriAlgorithm::Sha512 => 64,
        }
    }
}

/// A parsed `checksum.sri` value: the strongest algorithm given and its
/// acceptable digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integrity {
    algorithm: SriAlgorithm,
    digests: Vec<Vec<u8>>,
}

impl Integrity {
    /// Parses a `checksum.sri` value; the error says what is wrong.
    pub fn parse(value: &str) -> Result<Integrity, String> {
        let mut parsed: Vec<(SriAlgorithm, Vec<u8>)> = Vec::new();
        for expression in value.split_ascii_whitespace() {
            let hash = expression.split('?').next().unwrap_or("");
            let (name, encoded) = hash
                .split_once('-')
                .ok_or_else(|| format!("{expression:?} is not ALGORITHM-BASE64 (e.g. sha256-…)"))?;
            let algorithm = SriAlgorithm::from_name(name).ok_or_else(|| {
                format!("algorithm {name:?} is not supported (use sha256, sha384 or sha512)")
            })?;
            let digest = BASE64
                .decode(encoded)
                .map_err(|e| format!("{expression:?}: the digest is not base64: {e}"))?;
            if digest.len() != algorithm.len() {
                return Err(format!(
                    "{expression:?}: a {} digest is {} bytes, this one is {}",
                    algorithm.name(),
                    algorithm.len(),
                    digest.len()
                ));
            }
            parsed.push((algorithm, digest));
        }
        let algorithm = parsed
            .iter()
            .map(|(a, _)| *a)
            .max()
            .ok_or_else(|| "is empty; expected e.g. sha256-BASE64".to_string())?;
        let digests = parsed
            .into_iter()
            .filter(|(a, _)| *a == algorithm)
            .map(|(_, d)| d)
            .collect();
        Ok(Integrity { algorithm, digests })
    }

    /// The algorithm that decides.
    pub fn algorithm(&self) -> SriAlgorithm {
        self.algorithm
    }

    /// A hasher for [`Integrity::algorithm`].
    pub fn hasher(&self) -> SriHasher {
        match self.algorithm {
            SriAlgorithm::Sha256 => SriHasher::Sha256(Box::default()),
            SriAlgorithm::Sha384 => SriHasher::Sha384(Box::default()),
            SriAlgorithm::Sha512 => SriHasher::Sha512(Box::default()),
        }
    }

    /// Whether `digest` (computed with [`Integrity::hasher`]) is one of
    /// the accepted values.
    pub fn matches(&self, digest: &[u8]) -> bool {
        self.digests.iter().any(|d| d == digest)
    }

    /// What was expected, in SRI form, for error messages.
    pub fn expected(&self) -> String {
        self.digests
            .iter()
            .map(|d| render(self.algorithm, d))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `ALGORITHM-BASE64` of `digest`.
pub fn render(algorithm: SriAlgorithm, digest: &[u8]) -> String {
    format!("{}-{}", algorithm.name(), BASE64.encode(digest))
}

/// An incremental hash for one SRI algorithm.
pub enum SriHasher {
    /// SHA-256.
    Sha256(Box<sha2::Sha256>),
    /// SHA-384.
    Sha384(Box<sha2::Sha384>),
    /// SHA-512.
    Sha512(Box<sha2::Sha512>),
}

impl SriHasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            SriHasher::Sha256(h) => h.update(data),
            SriHasher::Sha384(h) => h.update(data),
            SriHasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Vec<u8> {
        match self {
            SriHasher::Sha256(h) => h.finalize().to_vec(),
            SriHasher::Sha384(h) => h.finalize().to_vec(),
            SriHasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sri_of(algorithm: SriAlgorithm, data: &[u8]) -> String {
        let probe = Integrity {
            algorithm,
            digests: Vec::new(),
        };
        let mut h = probe.hasher();
        h.update(data);
        render(algorithm, &h.finish())
    }

    #[test]
    fn each_algorithm_verifies_and_the_strongest_decides() {
        let data = b"hello asset";
        for algorithm in [
            SriAlgorithm::Sha256,
            SriAlgorithm::Sha384,
            SriAlgorithm::Sha512,
        ] {
            let value = sri_of(algorithm, data);
            let integrity = Integrity::parse(&value).unwrap();
            let mut h = integrity.hasher();
            h.update(data);
            assert!(integrity.matches(&h.finish()), "{value}");
            let mut h = integrity.hasher();
            h.update(b"other bytes");
            assert!(!integrity.matches(&h.finish()), "{value}");
            // Unpadded base64 and ?options are accepted.
            let unpadded = format!("{}?opt", value.trim_end_matches('='));
            assert_eq!(Integrity::parse(&unpadded).unwrap(), integrity);
        }
        // sha256 of the data and a wrong sha512: only sha512 counts.
        let wrong512 = sri_of(SriAlgorithm::Sha512, b"not it");
        let both = format!("{} {wrong512}", sri_of(SriAlgorithm::Sha256, data));
        let integrity = Integrity::parse(&both).unwrap();
        assert_eq!(integrity.algorithm(), SriAlgorithm::Sha512);
        let mut h = integrity.hasher();
        h.update(data);
        assert!(!integrity.matches(&h.finish()));
    }

    #[test]
    fn malformed_values_say_why() {
        for (value, says) in [
            ("", "is empty"),
            ("sha256", "ALGORITHM-BASE64"),
            ("md5-1B2M2Y8AsgTpgAmY7PhCfg==", "not supported"),
            ("sha256-***", "not base64"),
            ("sha256-AAAA", "32 bytes"),
        ] {
            let err = Integrity::parse(value).unwrap_err();
            assert!(err.contains(says), "{value:?}: {err}");
        }
    }
}
