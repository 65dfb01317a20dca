//! How callers prove who they are: `[auth.authentication]` for the client
//! port and `[auth.worker_authentication]` for the workers' listener. Each
//! method is on when its sub-table is present.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Default algorithm allowlist of JWT bearer tokens.
pub const DEFAULT_JWT_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];
/// Default longest lifetime (`exp` minus `iat`) of a JWT: 24 hours.
pub const DEFAULT_JWT_MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// Default clock skew allowed on `exp`, `nbf` and `iat`: 60 seconds.
pub const DEFAULT_JWT_LEEWAY_SECS: u64 = 60;
/// Default claim that names the principal.
pub const DEFAULT_JWT_PRINCIPAL_CLAIM: &str = "sub";
/// Default interval between checks of a key or token file for changes.
pub const DEFAULT_RELOAD_CHECK_SECS: u64 = 2;

/// How the configured methods combine.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The first method that accepts the caller decides (default).
    #[default]
    AnyOf,
    /// Every method must accept the caller; the principal is the one the
    /// first method (in the order mtls, peer_credentials, jwt,
    /// static_tokens) names.
    AllOf,
}

/// `[auth.authentication]` or `[auth.worker_authentication]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticationConfig {
    /// `"any_of"` (default) or `"all_of"`.
    pub combine: Combine,
    /// Client certificates (`[…mtls]`); the TLS listener verifies them.
    pub mtls: Option<MtlsConfig>,
    /// UNIX-socket peer credentials (`[…peer_credentials]`).
    pub peer_credentials: Option<PeerCredentialsConfig>,
    /// JWT bearer tokens (`[…jwt]`).
    pub jwt: Option<JwtConfig>,
    /// Static tokens from a file of hashes (`[…static_tokens]`), as
    /// `Bearer` or `Basic` (.netrc).
    pub static_tokens: Option<StaticTokensConfig>,
}

impl AuthenticationConfig {
    /// Whether any method is on.
    pub fn has_methods(&self) -> bool {
        self.mtls.is_some()
            || self.peer_credentials.is_some()
            || self.jwt.is_some()
            || self.static_tokens.is_some()
    }
}

/// Which certificate field names the principal.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CertField {
    /// The first URI subject alternative name (SPIFFE ids).
    SanUri,
    /// The first e-mail (rfc822Name) subject alternative name.
    SanEmail,
    /// The first DNS subject alternative name.
    SanDns,
    /// The subject's first common name.
    SubjectCn,
}

/// `[…mtls]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MtlsConfig {
    /// Fields tried in order; the first the certificate has names the
    /// principal. Default `["san_uri", "san_email", "san_dns",
    /// "subject_cn"]`.
    pub principal_from: Option<Vec<CertField>>,
}

/// `[…peer_credentials]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeerCredentialsConfig {
    /// Names for uids (`users = { "1001" = "builder-1" }`). A uid not listed
    /// is named `uid:N`. Default: none.
    pub users: BTreeMap<String, String>,
}

/// `[…jwt]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The JSON Web Key Set file with the issuers' public keys, re-read when
    /// it changes (key rotation). Required.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `iss` values. Required, not empty.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (a token passes if one of its audiences is
    /// listed). Required, not empty.
    pub audiences: Vec<String>,
    /// Algorithm allowlist. Default `["RS256", "PS256", "ES256", "EdDSA"]`;
    /// `none` and the HMAC algorithms (HS*) are refused.
    pub algorithms: Option<Vec<String>>,
    /// Longest accepted lifetime in seconds, `exp` minus `iat` (or minus now
    /// when there is no `iat`). Default 86400.
    pub max_lifetime_secs: Option<u64>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. Default 60.
    pub leeway_secs: Option<u64>,
    /// The claim naming the principal, a string. Default `sub`.
    pub principal_claim: Option<String>,
    /// Seconds between checks of `jwks_file` for changes. Default 2.
    pub reload_check_secs: Option<u64>,
}

/// `[…static_tokens]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StaticTokensConfig {
    /// The token file (format in docs/security.md), re-read when it
    /// changes. Required.
    pub file: Option<PathBuf>,
    /// Seconds between checks of `file` for changes. Default 2.
    pub reload_check_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_on_when_present() {
        let c: AuthenticationConfig = toml::from_str(
            r#"
            combine = "all_of"
            [mtls]
            [jwt]
            jwks_file = "/etc/corral/jwks.json"
            issuers = ["https://id.example.com"]
            audiences = ["corral"]
            "#,
        )
        .unwrap();
        assert_eq!(c.combine, Combine::AllOf);
        assert!(c.mtls.is_some() && c.jwt.is_some());
        assert!(c.static_tokens.is_none() && c.peer_credentials.is_none());
        assert!(c.has_methods());
        assert!(!AuthenticationConfig::default().has_methods());
        assert!(toml::from_str::<AuthenticationConfig>("combine = \"some_of\"").is_err());
        assert!(toml::from_str::<AuthenticationConfig>("[jwt]\njwks = \"x\"").is_err());
    }
}
