//! JWT bearer tokens, verified against the issuers' JWKS file.
//!
//! The signature is checked by `jsonwebtoken`; everything else is checked
//! here, against the injected clock: the header's algorithm must be on the
//! allowlist (never `none`, never HMAC) and fit the key its `kid` names;
//! `exp` is required; `nbf` and `iat` must not be in the future; `iss` and
//! `aud` must be accepted ones; the lifetime is bounded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde_json::{Map, Value};

use super::jwks::{parse_key_set, KeySet};
use crate::authenticator::{AuthError, Authenticator};
use crate::clock::{unix_secs, Clock};
use crate::config::{
    JwtConfig, DEFAULT_JWT_ALGORITHMS, DEFAULT_JWT_LEEWAY_SECS, DEFAULT_JWT_MAX_LIFETIME_SECS,
    DEFAULT_JWT_PRINCIPAL_CLAIM, DEFAULT_RELOAD_CHECK_SECS,
};
use crate::credentials::{parse_authorization, Authorization, Credentials};
use crate::error::{Error, Result};
use crate::principal::{Principal, PrincipalKind};
use crate::watched_file::WatchedFile;

/// Longest token accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
const METHOD: &str = "JWT";

/// Authenticates by a JWT bearer token.
pub struct JwtAuthenticator {
    keys: WatchedFile<KeySet>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    max_lifetime: i64,
    leeway: i64,
    principal_claim: String,
    kind: PrincipalKind,
    clock: Arc<dyn Clock>,
}

fn setting(field: &str, name: &str, reason: impl Into<String>) -> Error {
    Error::Setting {
        field: format!("{field}.{name}"),
        reason: reason.into(),
    }
}

fn algorithms(config: &JwtConfig, field: &str) -> Result<Vec<Algorithm>> {
    let names: Vec<String> = match &config.algorithms {
        Some(names) => names.clone(),
        None => DEFAULT_JWT_ALGORITHMS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if names.is_empty() {
        return Err(setting(field, "algorithms", "empty: no token could pass"));
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") {
                return Err(setting(
                    field,
                    "algorithms",
                    "`none` (unsigned tokens) is refused",
                ));
            }
            let alg: Algorithm = name
                .parse()
                .map_err(|_| setting(field, "algorithms", format!("unknown algorithm {name:?}")))?;
            if alg.family() == AlgorithmFamily::Hmac {
                return Err(setting(
                    field,
                    "algorithms",
                    format!(
                        "{name} is a shared-secret algorithm; only public-key ones are accepted"
                    ),
                ));
            }
            Ok(alg)
        })
        .collect()
}

impl JwtAuthenticator {
    /// Checks the settings and reads the key set; errors name `field`.
    pub fn new(
        config: &JwtConfig,
        kind: PrincipalKind,
        clock: Arc<dyn Clock>,
        field: &str,
    ) -> Result<Self> {
        let path = config
            .jwks_file
            .as_deref()
            .ok_or_else(|| setting(field, "jwks_file", "required: the issuers' JWKS file"))?;
        if config.issuers.is_empty() {
            return Err(setting(
                field,
                "issuers",
                "required: the accepted `iss` values",
            ));
        }
        if config.audiences.is_empty() {
            return Err(setting(
                field,
                "audiences",
                "required: the accepted `aud` values",
            ));
        }
        let max_lifetime = config
            .max_lifetime_secs
            .unwrap_or(DEFAULT_JWT_MAX_LIFETIME_SECS);
        if max_lifetime == 0 {
            return Err(setting(
                field,
                "max_lifetime_secs",
                "0: no token could pass",
            ));
        }
        let every = Duration::from_secs(
            config
                .reload_check_secs
                .unwrap_or(DEFAULT_RELOAD_CHECK_SECS),
        );
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(JwtAuthenticator {
            algorithms: algorithms(config, field)?,
            keys: WatchedFile::open(path, Box::new(parse_key_set), every, clock.clone())?,
            issuers: config.issuers.clone(),
            audiences: config.audiences.clone(),
            max_lifetime: clamp(max_lifetime),
            leeway: clamp(config.leeway_secs.unwrap_or(DEFAULT_JWT_LEEWAY_SECS)),
            principal_claim: config
                .principal_claim
                .clone()
                .unwrap_or_else(|| DEFAULT_JWT_PRINCIPAL_CLAIM.to_string()),
            kind,
            clock,
        })
    }

    /// The header's algorithm and key id, checked against the allowlist.
    fn header(&self, token: &str) -> Result<(Algorithm, String), String> {
        let encoded = token.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| "malformed header".to_string())?;
        let header: Map<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| "malformed header".to_string())?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or("the header has no `alg`")?;
        if alg.eq_ignore_ascii_case("none") {
            return Err("algorithm `none` (an unsigned token) is refused".to_string());
        }
        let alg: Algorithm = alg
            .parse()
            .map_err(|_| "unsupported algorithm".to_string())?;
        if !self.algorithms.contains(&alg) {
            return Err(format!("algorithm {alg:?} is not allowed"));
        }
        if header.contains_key("crit") {
            return Err("the header has critical extensions, which are not supported".to_string());
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or("the header has no key id (`kid`)")?;
        Ok((alg, kid.to_string()))
    }

    /// Verifies the signature and returns the claims.
    fn verify(&self, token: &str) -> Result<(String, Map<String, Value>), String> {
        if token.len() > MAX_TOKEN_BYTES || token.split('.').count() != 3 {
            return Err("not a JWT (three base64url parts)".to_string());
        }
        let (alg, kid) = self.header(token)?;
        let keys = self.keys.get();
        let key = keys.keys.get(&kid).ok_or("unknown key id")?;
        if !key.accepts(alg) {
            return Err(format!("the key its `kid` names is not a key for {alg:?}"));
        }
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_string(),
                _ => "malformed token".to_string(),
            })?;
        Ok((kid, data.claims))
    }

    /// Checks the claims; returns the principal name.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let now = unix_secs(self.clock.now());
        let time = |name: &str| -> Result<Option<i64>, String> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|t| t.is_finite())
                    .map(|t| Some(t.floor() as i64))
                    .ok_or(format!("`{name}` is not a number")),
            }
        };
        let exp = time("exp")?.ok_or("the token has no `exp`")?;
        if now > exp.saturating_add(self.leeway) {
            return Err("the token expired".to_string());
        }
        let nbf = time("nbf")?;
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
            return Err("the token is not valid yet (`nbf`)".to_string());
        }
        let iat = time("iat")?;
        if iat.is_some_and(|iat| iat > now.saturating_add(self.leeway)) {
            return Err("the token was issued in the future (`iat`)".to_string());
        }
        let start = iat.or(nbf).unwrap_or(now);
        if exp.saturating_sub(start) > self.max_lifetime {
            return Err(format!(
                "the token's lifetime exceeds the maximum of {} s",
                self.max_lifetime
            ));
        }
        let iss = claims.get("iss").and_then(Value::as_str);
        if !iss.is_some_and(|iss| self.issuers.iter().any(|i| i == iss)) {
            return Err("issuer (`iss`) not accepted".to_string());
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => self.audiences.contains(a),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !audience_ok {
            return Err("audience (`aud`) not accepted".to_string());
        }
        match claims.get(&self.principal_claim).and_then(Value::as_str) {
            Some(name) if !name.is_empty() && !name.chars().any(char::is_control) => {
                Ok(name.to_string())
            }
            _ => Err(format!("no usable `{}` claim", self.principal_claim)),
        }
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let missing = || AuthError::missing("a JWT bearer token");
        let header = credentials.authorization.as_deref().ok_or_else(missing)?;
        let Ok(Authorization::Bearer(token)) = parse_authorization(header) else {
            return Err(missing());
        };
        let (kid, claims) = self
            .verify(token)
            .map_err(|e| AuthError::refused(METHOD, e))?;
        let name = self
            .check_claims(&claims)
            .map_err(|e| AuthError::refused(METHOD, e))?;
        let id = match claims.get("jti").and_then(Value::as_str) {
            Some(jti) => format!("jwt:{kid}:{jti}"),
            None => format!("jwt:{kid}"),
        };
        Ok(Principal::new(self.kind, name, Some(id)))
    }
}

#[cfg(test)]
mod tests;
