//! The JSON Web Key Set of the JWT issuers, and which algorithm each key
//! may verify.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

use crate::error::{Error, Result};

/// A verification key and the algorithms it is for.
pub(crate) struct JwtKey {
    pub(crate) decoding: DecodingKey,
    family: AlgorithmFamily,
    /// The key's own `alg`, when the set names one.
    alg: Option<Algorithm>,
    /// The one algorithm an EC or OKP key's curve allows.
    curve_alg: Option<Algorithm>,
}

impl JwtKey {
    /// Whether a token whose header says `alg` may be verified with this
    /// key: same family (no RSA key used as an HMAC secret, no EC key for
    /// EdDSA), and the key's `alg` and curve agree.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family
            && self.alg.is_none_or(|a| a == alg)
            && self.curve_alg.is_none_or(|a| a == alg)
    }
}

/// Keys by `kid`.
pub(crate) struct KeySet {
    pub(crate) keys: HashMap<String, JwtKey>,
}

/// Why a key is left out (logged; the set is still used).
fn key(value: &Value) -> std::result::Result<(String, JwtKey), String> {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    let kid = field("kid").ok_or("it has no `kid`")?;
    if field("use").is_some_and(|u| u != "sig") {
        return Err(format!("key {kid:?} is not a signing key"));
    }
    let alg = match field("alg") {
        Some(name) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| format!("key {kid:?} has an unsupported alg {name:?}"))?,
        ),
        None => None,
    };
    let (family, curve_alg) = match (field("kty"), field("crv")) {
        (Some("RSA"), _) => (AlgorithmFamily::Rsa, None),
        (Some("EC"), Some("P-256")) => (AlgorithmFamily::Ec, Some(Algorithm::ES256)),
        (Some("EC"), Some("P-384")) => (AlgorithmFamily::Ec, Some(Algorithm::ES384)),
        (Some("OKP"), Some("Ed25519")) => (AlgorithmFamily::Ed, Some(Algorithm::EdDSA)),
        (Some("oct"), _) => {
            return Err(format!(
                "key {kid:?} is symmetric; only public keys are accepted"
            ))
        }
        _ => return Err(format!("key {kid:?} has an unsupported kty or crv")),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err(format!("key {kid:?}: its alg does not fit its kty"));
    }
    let jwk: Jwk =
        serde_json::from_value(value.clone()).map_err(|e| format!("key {kid:?}: {e}"))?;
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
    Ok((
        kid.to_string(),
        JwtKey {
            decoding,
            family,
            alg,
            curve_alg,
        },
    ))
}

/// Parses a JWKS file. Keys that cannot serve (symmetric, encryption,
/// unsupported) are left out with a warning; a file with no usable key, or
/// two keys with one `kid`, is an error.
pub(crate) fn parse_key_set(path: &Path, bytes: &[u8]) -> Result<KeySet> {
    let bad = |reason: String| Error::KeySet {
        path: path.to_path_buf(),
        reason,
    };
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `keys` array".to_string()))?;
    let mut keys = HashMap::new();
    for (i, value) in list.iter().enumerate() {
        match key(value) {
            Ok((kid, key)) => {
                if keys.insert(kid.clone(), key).is_some() {
                    return Err(bad(format!("two keys have the kid {kid:?}")));
                }
            }
            Err(why) => tracing::warn!("{}: leaving out keys[{i}]: {why}", path.display()),
        }
    }
    if keys.is_empty() {
        return Err(bad("no usable signing key".to_string()));
    }
    Ok(KeySet { keys })
}
