//! Turning [`Credentials`] into a [`Principal`]: the [`Authenticator`]
//! trait, its combinators, and the builder from `[auth.authentication]`.

use std::sync::Arc;

use crate::authn::{
    JwtAuthenticator, MtlsAuthenticator, PeerCredentialsAuthenticator, StaticTokenAuthenticator,
};
use crate::clock::Clock;
use crate::config::{AuthenticationConfig, Combine};
use crate::credentials::Credentials;
use crate::error::{Error, Result};
use crate::principal::{Principal, PrincipalKind};

/// Why a caller is not authenticated. The services answer UNAUTHENTICATED
/// with its display, which never contains a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The caller offered no credential of a kind this listener accepts.
    #[error("no credential: expected {expected}")]
    Missing {
        /// What would have been accepted, e.g. "a JWT bearer token".
        expected: String,
    },
    /// A credential was offered and refused.
    #[error("credential refused: {reason}")]
    Refused {
        /// Why, e.g. "JWT: the token expired".
        reason: String,
    },
}

impl AuthError {
    /// A refusal by `method` (e.g. "JWT") for `reason`.
    pub fn refused(method: &str, reason: impl std::fmt::Display) -> AuthError {
        AuthError::Refused {
            reason: format!("{method}: {reason}"),
        }
    }

    /// No credential of the kind `expected` describes.
    pub fn missing(expected: impl Into<String>) -> AuthError {
        AuthError::Missing {
            expected: expected.into(),
        }
    }
}

/// One way of authenticating. Implementations answer `Missing` when the
/// credential they read is absent, so that [`AnyOf`] can try the next one,
/// and `Refused` when it is present but wrong.
pub trait Authenticator: Send + Sync {
    /// The principal the credentials prove.
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError>;
}

/// Accepts the caller if any method does (the first that does names it). If
/// none does and one refused a credential, the refusals are reported; if
/// none found a credential, what was expected is.
pub struct AnyOf(pub Vec<Arc<dyn Authenticator>>);

impl Authenticator for AnyOf {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let mut missing = Vec::new();
        let mut refused = Vec::new();
        for method in &self.0 {
            match method.authenticate(credentials) {
                Ok(principal) => return Ok(principal),
                Err(AuthError::Missing { expected }) => missing.push(expected),
                Err(AuthError::Refused { reason }) => refused.push(reason),
            }
        }
        if refused.is_empty() {
            Err(AuthError::missing(missing.join(" or ")))
        } else {
            Err(AuthError::Refused {
                reason: refused.join("; "),
            })
        }
    }
}

/// Accepts the caller only if every method does; the first method names
/// the principal, and the credential id lists every method's.
pub struct AllOf(pub Vec<Arc<dyn Authenticator>>);

impl Authenticator for AllOf {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        let mut first: Option<Principal> = None;
        let mut ids = Vec::new();
        for method in &self.0 {
            let principal = method.authenticate(credentials)?;
            if let Some(id) = principal.credential_id() {
                ids.push(id.to_string());
            }
            first.get_or_insert(principal);
        }
        let first = first.ok_or_else(|| AuthError::missing("nothing: no method is configured"))?;
        let id = (!ids.is_empty()).then(|| ids.join("+"));
        Ok(Principal::new(first.kind(), first.name(), id))
    }
}

/// The zero-config authenticator: every loopback caller (UNIX socket or
/// loopback address) is [`Principal::local`], anyone else is refused.
#[derive(Debug, Default)]
pub struct LocalAuthenticator;

impl Authenticator for LocalAuthenticator {
    fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        if credentials.is_loopback() {
            Ok(Principal::local())
        } else {
            Err(AuthError::refused(
                "local",
                "not a loopback connection, and this server has no authentication configured",
            ))
        }
    }
}

/// Builds the authenticator a listener uses from its table; every
/// principal it names is of `kind` (Person on the client port, Worker on
/// the workers' listener). `table` names the table in errors. Methods are
/// tried in the order mtls, peer_credentials, jwt, static_tokens.
pub fn build_authenticator(
    config: &AuthenticationConfig,
    kind: PrincipalKind,
    clock: Arc<dyn Clock>,
    table: &str,
) -> Result<Arc<dyn Authenticator>> {
    let mut methods: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let Some(mtls) = &config.mtls {
        methods.push(Arc::new(MtlsAuthenticator::new(mtls, kind)));
    }
    if let Some(peer) = &config.peer_credentials {
        methods.push(Arc::new(PeerCredentialsAuthenticator::new(
            peer,
            kind,
            &format!("{table}.peer_credentials"),
        )?));
    }
    if let Some(jwt) = &config.jwt {
        methods.push(Arc::new(JwtAuthenticator::new(
            jwt,
            kind,
            clock.clone(),
            &format!("{table}.jwt"),
        )?));
    }
    if let Some(tokens) = &config.static_tokens {
        methods.push(Arc::new(StaticTokenAuthenticator::new(
            tokens,
            kind,
            clock,
            &format!("{table}.static_tokens"),
        )?));
    }
    if methods.is_empty() {
        return Err(Error::NoAuthenticationMethod {
            table: table.to_string(),
        });
    }
    if methods.len() == 1 {
        return Ok(methods.remove(0));
    }
    Ok(match config.combine {
        Combine::AnyOf => Arc::new(AnyOf(methods)),
        Combine::AllOf => Arc::new(AllOf(methods)),
    })
}

#[cfg(test)]
mod tests;
