//! Digests and the digest functions Corral supports.
//!
//! A [`Digest`] is kept in binary form (32 bytes plus a size) and carries its
//! [`DigestFunction`], so a SHA-256 blob and a BLAKE3 blob with the same hash
//! bytes never meet in a map or a file name. Converting from the wire
//! ([`Digest::from_proto`]) is the one place where hex and sizes coming from
//! the network are checked; everything past it can trust a `Digest`.

use std::fmt;

use corral_proto::reapi;
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Length of every hash Corral supports, in bytes (SHA-256 and BLAKE3 both
/// produce 32).
pub const HASH_LEN: usize = 32;

/// The digest functions a Corral store can key blobs by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestFunction {
    /// SHA-256, the REAPI default and the only one REAPI 2.0 clients know.
    Sha256,
    /// BLAKE3 (REAPI 2.3 and later); much faster to compute on large blobs.
    Blake3,
}

impl DigestFunction {
    /// Every supported function, in the order Capabilities advertises them.
    pub const ALL: [DigestFunction; 2] = [DigestFunction::Sha256, DigestFunction::Blake3];

    /// Maps the REAPI `digest_function` enum value of a request.
    ///
    /// `UNKNOWN` (0) is what clients older than REAPI 2.3 send; the spec asks
    /// the server to infer the function from the hash length, and both
    /// supported functions have 64-hex-digit hashes, so such requests are
    /// SHA-256 — the only function those clients know. Any other value is
    /// an `INVALID_ARGUMENT` naming `digest_function`.
    pub fn from_proto(value: i32) -> Result<Self> {
        use reapi::digest_function::Value;
        match Value::try_from(value) {
            Ok(Value::Unknown) | Ok(Value::Sha256) => Ok(DigestFunction::Sha256),
            Ok(Value::Blake3) => Ok(DigestFunction::Blake3),
            Ok(other) => Err(Error::invalid(
                "digest_function",
                format!(
                    "{} is not supported (use SHA256 or BLAKE3)",
                    other.as_str_name()
                ),
            )),
            Err(_) => Err(Error::invalid(
                "digest_function",
                format!("unknown value {value} (use SHA256 or BLAKE3)"),
            )),
        }
    }

    /// The REAPI enum value of this function.
    pub fn to_proto(self) -> i32 {
        use reapi::digest_function::Value;
        match self {
            DigestFunction::Sha256 => Value::Sha256 as i32,
            DigestFunction::Blake3 => Value::Blake3 as i32,
        }
    }

    /// Lower-case name, as used in ByteStream resource names and on disk.
    pub fn name(self) -> &'static str {
        match self {
            DigestFunction::Sha256 => "sha256",
            DigestFunction::Blake3 => "blake3",
        }
    }

    /// Parses the lower-case name used in resource names (`sha256`, `blake3`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(DigestFunction::Sha256),
            "blake3" => Some(DigestFunction::Blake3),
            _ => None,
        }
    }

    /// A fresh incremental hasher for this function.
    pub fn hasher(self) -> Hasher {
        match self {
            DigestFunction::Sha256 => Hasher::Sha256(Box::default(), 0),
            DigestFunction::Blake3 => Hasher::Blake3(Box::default(), 0),
        }
    }
}

impl fmt::Display for DigestFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A map keyed by digest. Digests are looked up by the ten thousand in one
/// FindMissingBlobs call, where the standard SipHash was a fifth of the
/// server's time; foldhash is several times faster and still seeded per
/// process, so a client cannot pick digests that all land in one bucket.
pub type DigestMap<V> = std::collections::HashMap<Digest, V, foldhash::fast::RandomState>;

/// A set of digests hashed like [`DigestMap`].
pub type DigestSet = std::collections::HashSet<Digest, foldhash::fast::RandomState>;

/// The digest of one blob: function, hash and size in bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    function: DigestFunction,
    hash: [u8; HASH_LEN],
    size: u64,
}

impl Digest {
    /// Builds a digest from parts already known to be valid.
    pub fn new(function: DigestFunction, hash: [u8; HASH_LEN], size: u64) -> Self {
        Digest {
            function,
            hash,
            size,
        }
    }

    /// Checks a digest from the wire: the hash must be 64 lower-case hex
    /// digits and the size must not be negative. Errors are
    /// `INVALID_ARGUMENT` naming `hash` or `size_bytes`.
    pub fn from_proto(function: DigestFunction, digest: &reapi::Digest) -> Result<Self> {
        let hash = parse_hash(&digest.hash)?;
        let size = u64::try_from(digest.size_bytes).map_err(|_| {
            Error::invalid("size_bytes", format!("{} is negative", digest.size_bytes))
        })?;
        Ok(Digest::new(function, hash, size))
    }

    /// Like [`Digest::from_proto`] for an optional message field: a missing
    /// digest is an `INVALID_ARGUMENT` naming `field`.
    pub fn from_proto_field(
        function: DigestFunction,
        digest: Option<&reapi::Digest>,
        field: &str,
    ) -> Result<Self> {
        let digest = digest.ok_or_else(|| Error::invalid(field, "is missing"))?;
        Digest::from_proto(function, digest).map_err(|e| e.in_field(field))
    }

    /// The wire form.
    pub fn to_proto(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hash_hex(),
            size_bytes: i64::try_from(self.size).unwrap_or(i64::MAX),
        }
    }

    /// Digest of `data` under `function`.
    pub fn of_bytes(function: DigestFunction, data: &[u8]) -> Self {
        let mut hasher = function.hasher();
        hasher.update(data);
        hasher.finish()
    }

    /// Digest of a protobuf message's encoding (how REAPI digests Actions,
    /// Commands, Directories and Trees).
    pub fn of_message<M: prost::Message>(function: DigestFunction, message: &M) -> Self {
        Digest::of_bytes(function, &message.encode_to_vec())
    }

    pub fn function(&self) -> DigestFunction {
        self.function
    }

    pub fn hash(&self) -> &[u8; HASH_LEN] {
        &self.hash
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// True for the digest of the empty blob, which every store holds
    /// implicitly (REAPI lets clients skip uploading it).
    pub fn is_empty_blob(&self) -> bool {
        self.size == 0 && *self == Digest::of_bytes(self.function, &[])
    }
}

/// Parses a 64-hex-digit hash. Upper-case digits are refused: REAPI hashes
/// are lower case, and accepting both would give one blob two names.
/// The value of a lower-case hex digit.
/// Value of each lower-case hex digit; `INVALID` for every other byte.
const NIBBLES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};
const INVALID: u8 = 0xff;

pub fn parse_hash(text: &str) -> Result<[u8; HASH_LEN]> {
    if text.len() != HASH_LEN * 2 {
        return Err(Error::invalid(
            "hash",
            format!(
                "{:?} has {} characters, expected {}",
                truncate(text),
                text.len(),
                HASH_LEN * 2
            ),
        ));
    }
    // One table lookup per character, lower-case only: FindMissingBlobs
    // parses 10,000 of these a call, so this is a hot path.
    let mut hash = [0u8; HASH_LEN];
    let mut bad = 0u8;
    for (out, pair) in hash.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let (high, low) = (NIBBLES[pair[0] as usize], NIBBLES[pair[1] as usize]);
        bad |= high | low;
        *out = (high << 4) | low;
    }
    // Valid nibbles are below 16; INVALID sets the high bits.
    if bad >= 16 {
        return Err(Error::invalid(
            "hash",
            format!("{:?} is not lower-case hex", truncate(text)),
        ));
    }
    Ok(hash)
}

/// Keeps error messages short when a client sends a huge string.
fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hash_hex(), self.size)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.function, self.hash_hex(), self.size)
    }
}

/// Incremental hashing of a blob that arrives in pieces; counts the bytes
/// too, so the result is a complete [`Digest`].
pub enum Hasher {
    Sha256(Box<sha2::Sha256>, u64),
    Blake3(Box<blake3::Hasher>, u64),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h, n) => {
                h.update(data);
                *n += data.len() as u64;
            }
            Hasher::Blake3(h, n) => {
                h.update(data);
                *n += data.len() as u64;
            }
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        match self {
            Hasher::Sha256(_, n) | Hasher::Blake3(_, n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h, n) => Digest::new(DigestFunction::Sha256, h.finalize().into(), n),
            Hasher::Blake3(h, n) => {
                Digest::new(DigestFunction::Blake3, *h.finalize().as_bytes(), n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_BLAKE3: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    #[test]
    fn known_hashes() {
        let d = Digest::of_bytes(DigestFunction::Sha256, b"");
        assert_eq!(d.hash_hex(), EMPTY_SHA256);
        assert!(d.is_empty_blob());
        let d = Digest::of_bytes(DigestFunction::Blake3, b"");
        assert_eq!(d.hash_hex(), EMPTY_BLAKE3);
        let d = Digest::of_bytes(DigestFunction::Sha256, b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad/3"
        );
        assert!(!d.is_empty_blob());
    }

    #[test]
    fn incremental_equals_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        for f in DigestFunction::ALL {
            let mut h = f.hasher();
            for chunk in data.chunks(999) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), Digest::of_bytes(f, &data));
        }
    }

    #[test]
    fn proto_round_trip_and_errors() {
        let d = Digest::of_bytes(DigestFunction::Blake3, b"hello");
        let back = Digest::from_proto(DigestFunction::Blake3, &d.to_proto()).unwrap();
        assert_eq!(back, d);

        let bad = |hash: &str, size: i64| {
            Digest::from_proto(
                DigestFunction::Sha256,
                &reapi::Digest {
                    hash: hash.to_string(),
                    size_bytes: size,
                },
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("abc", 1).contains("hash"));
        assert!(bad(&EMPTY_SHA256.to_uppercase(), 0).contains("lower-case hex"));
        assert!(bad(&"g".repeat(64), 0).contains("hash"));
        assert!(bad(EMPTY_SHA256, -1).contains("size_bytes"));
        let missing =
            Digest::from_proto_field(DigestFunction::Sha256, None, "action_digest").unwrap_err();
        assert!(missing.to_string().contains("action_digest"));
    }

    #[test]
    fn digest_function_values() {
        assert_eq!(
            DigestFunction::from_proto(0).unwrap(),
            DigestFunction::Sha256
        );
        assert_eq!(
            DigestFunction::from_proto(1).unwrap(),
            DigestFunction::Sha256
        );
        assert_eq!(
            DigestFunction::from_proto(9).unwrap(),
            DigestFunction::Blake3
        );
        for v in [2, 3, 8, 10, 99, -1] {
            let e = DigestFunction::from_proto(v).unwrap_err();
            assert!(e.to_string().contains("digest_function"), "{e}");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
        for f in DigestFunction::ALL {
            assert_eq!(DigestFunction::from_proto(f.to_proto()).unwrap(), f);
            assert_eq!(DigestFunction::from_name(f.name()), Some(f));
        }
    }

    #[test]
    fn every_byte_value_is_parsed_or_refused_as_hex() {
        for b in 0..=255u8 {
            let mut text = "0".repeat(63).into_bytes();
            text.push(b);
            let Ok(text) = String::from_utf8(text) else {
                continue; // not a str at all; the protobuf decoder refuses it
            };
            let valid = b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
            match parse_hash(&text) {
                Ok(hash) => {
                    assert!(valid, "byte {b:#04x} was accepted");
                    assert_eq!(hex::encode(hash), text);
                }
                Err(e) => {
                    assert!(!valid, "byte {b:#04x} was refused: {e}");
                    assert!(e.to_string().contains("lower-case hex"), "{e}");
                }
            }
        }
        let d = Digest::of_bytes(DigestFunction::Sha256, b"round trip");
        assert_eq!(parse_hash(&d.hash_hex()).unwrap(), *d.hash());
    }
}
