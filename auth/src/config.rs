//! The `[auth]` table of the server's TOML file. Every field is optional;
//! with none set the farm is zero-config: loopback callers are the local
//! user, workers are whoever the kernel lets onto the workers' socket.

mod audit_config;
mod authentication_config;
mod policy_config;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use audit_config::{AuditConfig, DEFAULT_AUDIT_PATH};
pub use authentication_config::{
    AuthenticationConfig, CertField, Combine, JwtConfig, MtlsConfig, PeerCredentialsConfig,
    StaticTokensConfig, DEFAULT_JWT_ALGORITHMS, DEFAULT_JWT_LEEWAY_SECS,
    DEFAULT_JWT_MAX_LIFETIME_SECS, DEFAULT_JWT_PRINCIPAL_CLAIM, DEFAULT_RELOAD_CHECK_SECS,
};
pub use policy_config::{
    GrantConfig, PolicyConfig, QuotaConfig, RateConfig, TenantConfig, WorkerConfig,
};

use crate::error::{Error, Result};
use crate::policy::Policy;

/// The `[auth]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The policy inline (`[auth.policy]`). Default: none.
    pub policy: Option<PolicyConfig>,
    /// The policy in a file of its own (same keys at its top level), which
    /// can be reloaded without a restart. A relative path is under the data
    /// directory. Default: none. Setting both this and `policy` is an error.
    pub policy_file: Option<PathBuf>,
    /// How build clients on the client port authenticate. Required when a
    /// policy is set; ignored without one (loopback callers are then the
    /// local user).
    pub authentication: AuthenticationConfig,
    /// How workers on the workers' listener authenticate. Default:
    /// `peer_credentials` with no names (a worker is `uid:N`).
    pub worker_authentication: AuthenticationConfig,
    /// The audit log.
    pub audit: AuditConfig,
}

impl AuthConfig {
    /// Whether a policy is configured (inline or as a file). Without one
    /// the farm is zero-config and must stay on loopback.
    pub fn has_policy(&self) -> bool {
        self.policy.is_some() || self.policy_file.is_some()
    }

    /// The configured policy, compiled and checked; `None` when there is
    /// none (use [`Policy::local`]).
    pub fn load_policy(&self) -> Result<Option<Policy>> {
        match (&self.policy, &self.policy_file) {
            (Some(_), Some(_)) => Err(Error::PolicyTwice),
            (Some(inline), None) => Policy::from_config(inline).map(Some),
            (None, Some(path)) => Policy::load(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Files of this configuration an action must never read (the
    /// worker hides them from host roots): the static token files and
    /// the audit log. Relative paths as configured (resolve them first).
    pub fn private_files(&self) -> Vec<PathBuf> {
        let tokens = [&self.authentication, &self.worker_authentication]
            .into_iter()
            .filter_map(|a| a.static_tokens.as_ref()?.file.clone());
        tokens.chain(self.audit.path.clone()).collect()
    }

    /// What the client port uses. With a policy but no method this is an
    /// error: the server must not start open.
    pub fn client_authentication(&self) -> Result<&AuthenticationConfig> {
        if self.has_policy() && !self.authentication.has_methods() {
            return Err(Error::NoAuthenticationMethod {
                table: "auth.authentication".to_string(),
            });
        }
        Ok(&self.authentication)
    }

    /// What the workers' listener uses: `[auth.worker_authentication]`, or
    /// peer credentials when it enables no method.
    pub fn worker_authentication(&self) -> AuthenticationConfig {
        if self.worker_authentication.has_methods() {
            return self.worker_authentication.clone();
        }
        AuthenticationConfig {
            peer_credentials: Some(PeerCredentialsConfig::default()),
            ..AuthenticationConfig::default()
        }
    }

    /// Makes every relative file path absolute under `base` (the data
    /// directory): the policy file, key and token files, the audit log.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.policy_file.as_mut() {
            fix(p);
        }
        for auth in [&mut self.authentication, &mut self.worker_authentication] {
            if let Some(p) = auth.jwt.as_mut().and_then(|j| j.jwks_file.as_mut()) {
                fix(p);
            }
            if let Some(p) = auth.static_tokens.as_mut().and_then(|s| s.file.as_mut()) {
                fix(p);
            }
        }
        let mut audit = self.audit.path();
        fix(&mut audit);
        self.audit.path = Some(audit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_config_and_defaults() {
        let c: AuthConfig = toml::from_str("").unwrap();
        assert!(!c.has_policy());
        assert!(c.load_policy().unwrap().is_none());
        assert!(c.client_authentication().is_ok());
        assert!(c.worker_authentication().peer_credentials.is_some());
        assert!(c.audit.enabled());
        assert_eq!(c.audit.path(), PathBuf::from("audit.log"));
    }

    #[test]
    fn a_policy_needs_an_authentication_method() {
        let c: AuthConfig = toml::from_str("[policy.tenants.a]\ninstances = [\"a\"]\n").unwrap();
        assert!(c.has_policy());
        let err = c.client_authentication().unwrap_err().to_string();
        assert!(err.contains("auth.authentication"), "{err}");
        assert!(c.load_policy().unwrap().is_some());
    }

    #[test]
    fn policy_twice_and_paths() {
        let mut c: AuthConfig = toml::from_str(
            r#"
            policy_file = "policy.toml"
            [policy]
            [authentication.static_tokens]
            file = "/etc/corral/tokens"
            [worker_authentication.jwt]
            jwks_file = "jwks.json"
            "#,
        )
        .unwrap();
        assert!(matches!(c.load_policy(), Err(Error::PolicyTwice)));
        c.resolve_paths(Path::new("/data"));
        assert_eq!(
            c.policy_file.as_deref(),
            Some(Path::new("/data/policy.toml"))
        );
        let tokens = c
            .authentication
            .static_tokens
            .as_ref()
            .unwrap()
            .file
            .as_deref();
        assert_eq!(tokens, Some(Path::new("/etc/corral/tokens")));
        let jwks = c
            .worker_authentication
            .jwt
            .as_ref()
            .unwrap()
            .jwks_file
            .as_deref();
        assert_eq!(jwks, Some(Path::new("/data/jwks.json")));
        assert_eq!(c.audit.path(), PathBuf::from("/data/audit.log"));
        assert!(toml::from_str::<AuthConfig>("polcy = {}").is_err());
    }
}
