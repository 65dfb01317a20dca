//! Static tokens from a file of their SHA-256 hashes.
//!
//! The file holds one entry per line, `ID PRINCIPAL sha256:HEX`, blank
//! lines and `#` comments ignored. A client presents the token as
//! `authorization: Bearer TOKEN`, or as `Basic base64(ID:TOKEN)` (what
//! Bazel sends from a `.netrc` whose `login` is the entry's id).
//!
//! Why SHA-256 and not a password hash: these tokens are generated (32
//! random bytes), so no dictionary reaches them and a slow hash would only
//! add its cost to every call. A stolen file gives no token. Tokens shorter
//! than [`MIN_TOKEN_LEN`] are refused before hashing, so a human-chosen
//! password cannot be used by mistake. Every entry is compared, in constant
//! time, on every call.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::authenticator::{AuthError, Authenticator};
use crate::clock::Clock;
use crate::config::{StaticTokensConfig, DEFAULT_RELOAD_CHECK_SECS};
use crate::credentials::{parse_authorization, Authorization, Credentials};
use crate::error::{Error, Result};
use crate::principal::{Principal, PrincipalKind};
use crate::watched_file::WatchedFile;

/// Shortest token accepted (a generated one is 43 characters).
pub const MIN_TOKEN_LEN: usize = 20;

const METHOD: &str = "static token";

#[derive(Debug)]
struct Entry {
    id: String,
    principal: String,
    hash: [u8; 32],
}

#[derive(Debug)]
struct TokenFile {
    entries: Vec<Entry>,
}

fn parse_file(path: &Path, bytes: &[u8]) -> Result<TokenFile> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::TokenFile {
        path: path.to_path_buf(),
        line: 0,
        reason: "the file is not UTF-8".to_string(),
    })?;
    let mut entries = Vec::new();
    let mut ids = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| Error::TokenFile {
            path: path.to_path_buf(),
            line: n + 1,
            reason,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, principal, hash] = fields[..] else {
            return Err(bad(format!(
                "expected `ID PRINCIPAL sha256:HEX`, found {} fields",
                fields.len()
            )));
        };
        if id.contains(':') {
            return Err(bad(format!(
                "id {id:?} contains `:`, which Basic credentials cannot carry"
            )));
        }
        let hex_digest = hash
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("the hash must start with `sha256:`".to_string()))?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut digest)
            .map_err(|_| bad("the hash is not 64 hexadecimal digits".to_string()))?;
        if !ids.insert(id.to_string()) {
            return Err(bad(format!("id {id:?} is listed twice")));
        }
        entries.push(Entry {
            id: id.to_string(),
            principal: principal.to_string(),
            hash: digest,
        });
    }
    Ok(TokenFile { entries })
}

/// Authenticates by a static token (`Bearer`, or `Basic` with the entry's
/// id as login).
pub struct StaticTokenAuthenticator {
    file: WatchedFile<TokenFile>,
    kind: PrincipalKind,
}

impl StaticTokenAuthenticator {
    /// Reads the token file; errors name `field` or the file and line.
    pub fn new(
        config: &StaticTokensConfig,
        kind: PrincipalKind,
        clock: Arc<dyn Clock>,
        field: &str,
    ) -> Result<Self> {
        let path = config.file.as_deref().ok_or_else(|| Error::Setting {
            field: format!("{field}.file"),
            reason: "required: the file of hashed tokens".to_string(),
        })?;
        let every = Duration::from_secs(
            config
                .reload_check_secs
                .unwrap_or(DEFAULT_RELOAD_CHECK_SECS),
        );
        Ok(StaticTokenAuthenticator {
            file: WatchedFile::open(path, Box::new(parse_file), every, clock)?,
            kind,
        })
    }

    /// The index of the entry whose hash is `digest`: every entry is
    /// compared, and the comparisons take the same time whether or where
    /// one matches.
    fn find(entries: &[Entry], digest: &[u8; 32]) -> Option<usize> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in entries.iter().enumerate() {
            let eq = entry.hash.ct_eq(digest);
            index.conditional_assign(&(i as u64), eq);
            found |= eq;
        }
        bool::from(found).then_some(index as usize)
    }
}

impl Authenticator for StaticTokenAuthenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let header = credentials
            .authorization
            .as_deref()
            .ok_or_else(|| AuthError::missing("a static token (Bearer or Basic)"))?;
        let (login, token) = match parse_authorization(header) {
            Ok(Authorization::Bearer(token)) => (None, token.to_string()),
            Ok(Authorization::Basic { login, password }) => (Some(login), password),
            Err(reason) => return Err(AuthError::refused(METHOD, reason)),
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(AuthError::refused(
                METHOD,
                format!("the token is shorter than {MIN_TOKEN_LEN} characters"),
            ));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let file = self.file.get();
        let entry = Self::find(&file.entries, &digest)
            .and_then(|i| file.entries.get(i))
            .filter(|e| login.as_deref().is_none_or(|l| l == e.id))
            .ok_or_else(|| AuthError::refused(METHOD, "unknown login or token"))?;
        Ok(Principal::new(
            self.kind,
            entry.principal.clone(),
            Some(format!("token:{}", entry.id)),
        ))
    }
}

#[cfg(test)]
mod tests;
